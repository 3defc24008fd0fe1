"""pyoci: an OCI runtime-spec compliant low-level container runtime."""
__version__ = "0.1.0"
OCI_VERSION = "1.3.0"
# True in the pyoci command's own process, which may execute itself again
# (linux/runtime_exe.py); a library caller's process is not ours to replace.
# A flag here, not a call into runtime_exe: the short commands never load it.
is_the_command = False
