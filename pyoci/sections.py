"""Which section of the runtime-spec a config.json path falls under, so that
every refusal of a config names the rule it breaks (`pyoci check` and
create word them alike: pyoci/errors.py's ConfigError adds it)."""

# JSON path (indices left out) -> the section, as its heading's anchor.
SECTIONS = {
    "": "config.md#configuration",
    "ociVersion": "config.md#specification-version",
    "root": "config.md#root",
    "mounts": "config.md#mounts",
    "process": "config.md#process",
    "process.rlimits": "config.md#posix-process",
    "process.user": "config.md#posix-platform-user",
    "hostname": "config.md#hostname",
    "domainname": "config.md#domainname",
    "annotations": "config.md#annotations",
    "hooks": "config.md#posix-platform-hooks",
    "hooks.prestart": "config.md#prestart",
    "hooks.createRuntime": "config.md#createruntime-hooks",
    "hooks.createContainer": "config.md#createcontainer-hooks",
    "hooks.startContainer": "config.md#startcontainer-hooks",
    "hooks.poststart": "config.md#poststart",
    "hooks.poststop": "config.md#poststop",
    "linux": "config-linux.md#linux-container-configuration",
    "linux.namespaces": "config-linux.md#namespaces",
    "linux.uidMappings": "config-linux.md#user-namespace-mappings",
    "linux.gidMappings": "config-linux.md#user-namespace-mappings",
    "linux.timeOffsets": "config-linux.md#offset-for-time-namespace",
    "linux.devices": "config-linux.md#devices",
    "linux.netDevices": "config-linux.md#network-devices",
    "linux.cgroupsPath": "config-linux.md#cgroups-path",
    "linux.resources": "config-linux.md#control-groups",
    "linux.resources.devices": "config-linux.md#allowed-device-list",
    "linux.resources.memory": "config-linux.md#memory",
    "linux.resources.cpu": "config-linux.md#cpu",
    "linux.resources.blockIO": "config-linux.md#block-io",
    "linux.resources.hugepageLimits": "config-linux.md#huge-page-limits",
    "linux.resources.network": "config-linux.md#network",
    "linux.resources.pids": "config-linux.md#pids",
    "linux.resources.rdma": "config-linux.md#rdma",
    "linux.resources.unified": "config-linux.md#unified",
    "linux.intelRdt": "config-linux.md#intelrdt",
    "linux.memoryPolicy": "config-linux.md#memory-policy",
    "linux.sysctl": "config-linux.md#sysctl",
    "linux.seccomp": "config-linux.md#seccomp",
    "linux.rootfsPropagation": "config-linux.md#rootfs-mount-propagation",
    "linux.maskedPaths": "config-linux.md#masked-paths",
    "linux.readonlyPaths": "config-linux.md#readonly-paths",
    "linux.mountLabel": "config-linux.md#mount-label",
    "linux.personality": "config-linux.md#personality",
}
for _platform in ("solaris", "windows", "vm", "zos", "freebsd"):
    SECTIONS[_platform] = "config.md#platform-specific-configuration"
for _field in ("capabilities", "apparmorProfile", "selinuxLabel", "noNewPrivileges",
               "oomScoreAdj", "scheduler", "ioPriority", "execCPUAffinity"):
    SECTIONS["process." + _field] = "config.md#linux-process"


def section_of(path):
    """The section of PATH ("linux.namespaces[2].type", "(root)"), by its
    longest known prefix; None for what is not a config path."""
    keys = path.replace("[", ".[").split(".")
    keys = [key for key in keys if key and not key.startswith("[")]
    if path == "(root)":
        keys = []
    if keys and keys[0] not in SECTIONS:
        return None
    while keys and ".".join(keys) not in SECTIONS:
        keys.pop()
    return SECTIONS[".".join(keys)]
