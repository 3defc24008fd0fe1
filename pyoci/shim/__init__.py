"""containerd's shim v2 for pyoci (containerd-shim-pyoci-v2, the runtime
io.containerd.pyoci.v2): ttrpc, the task service and its events, over
pyoci.runtime in the shim's own process."""
