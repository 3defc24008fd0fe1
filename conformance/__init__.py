"""Black-box conformance tests of an OCI runtime's CLI against the runtime-spec MUSTs."""
