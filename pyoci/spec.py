"""config.json: load, validate against our schema, and a typed view of it.

The view holds exactly what pyoci acts on, with spec defaults filled in, so
the linux/* modules never read raw dicts. ``default_config`` is what
``pyoci spec`` writes.
"""
import os

from pyoci import jsontext, log
from pyoci.errors import ConfigError, errno_text
from pyoci.linux import lsm, mounts, network
from pyoci.linux.devices import TYPE_BITS

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


class Hook:
    __slots__ = ("path", "args", "env", "timeout")

    def __init__(self, raw):
        self.path = raw["path"]
        self.args = raw.get("args") or [self.path]
        self.env = raw.get("env")
        self.timeout = raw.get("timeout")


class Hooks:
    __slots__ = ("prestart", "create_runtime", "create_container",
                 "start_container", "poststart", "poststop")

    def __init__(self, raw):
        raw = raw or {}
        self.prestart = [Hook(h) for h in raw.get("prestart", ())]
        self.create_runtime = [Hook(h) for h in raw.get("createRuntime", ())]
        self.create_container = [Hook(h) for h in raw.get("createContainer", ())]
        self.start_container = [Hook(h) for h in raw.get("startContainer", ())]
        self.poststart = [Hook(h) for h in raw.get("poststart", ())]
        self.poststop = [Hook(h) for h in raw.get("poststop", ())]


class User:
    __slots__ = ("uid", "gid", "umask", "additional_gids")

    def __init__(self, raw):
        raw = raw or {}
        self.uid = raw.get("uid", 0)
        self.gid = raw.get("gid", 0)
        self.umask = raw.get("umask")
        self.additional_gids = raw.get("additionalGids") or []


class Capabilities:
    """Capability names per set; None for a set the config leaves out."""
    __slots__ = ("bounding", "effective", "inheritable", "permitted", "ambient")

    def __init__(self, raw):
        for name in self.__slots__:
            setattr(self, name, raw.get(name))


class Rlimit:
    __slots__ = ("type", "soft", "hard")

    def __init__(self, raw):
        self.type = raw["type"]
        self.soft = raw["soft"]
        self.hard = raw["hard"]


class Process:
    __slots__ = ("terminal", "args", "env", "cwd", "user", "capabilities",
                 "rlimits", "no_new_privileges", "oom_score_adj", "console_size",
                 "scheduler", "io_priority", "exec_cpu_affinity", "apparmor_profile",
                 "selinux_label")

    def __init__(self, raw):
        self.terminal = raw.get("terminal", False)
        self.args = raw.get("args") or []
        self.env = raw.get("env") or []
        self.cwd = raw["cwd"]
        self.user = User(raw.get("user"))
        caps = raw.get("capabilities")
        self.capabilities = Capabilities(caps) if caps is not None else None
        self.rlimits = [Rlimit(r) for r in raw.get("rlimits", ())]
        self.no_new_privileges = raw.get("noNewPrivileges", False)
        self.oom_score_adj = raw.get("oomScoreAdj")
        self.console_size = raw.get("consoleSize")
        self.scheduler = raw.get("scheduler")
        self.io_priority = raw.get("ioPriority")
        self.exec_cpu_affinity = raw.get("execCPUAffinity")
        self.apparmor_profile = raw.get("apparmorProfile") or None
        self.selinux_label = raw.get("selinuxLabel") or None


class Mount:
    __slots__ = ("destination", "type", "source", "options", "uid_mappings", "gid_mappings")

    def __init__(self, raw):
        self.destination = raw["destination"]
        self.type = raw.get("type")
        self.source = raw.get("source")
        self.options = raw.get("options") or []
        self.uid_mappings = [IdMapping(m) for m in raw.get("uidMappings", ())]
        self.gid_mappings = [IdMapping(m) for m in raw.get("gidMappings", ())]


class IdMapping:
    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, raw):
        self.container_id = raw["containerID"]
        self.host_id = raw["hostID"]
        self.size = raw["size"]


class Namespace:
    __slots__ = ("type", "path")

    def __init__(self, raw):
        self.type = raw["type"]
        self.path = raw.get("path")


class Device:
    __slots__ = ("type", "path", "major", "minor", "file_mode", "uid", "gid")

    def __init__(self, raw):
        self.type = raw["type"]
        self.path = raw["path"]
        self.major = raw.get("major", 0)
        self.minor = raw.get("minor", 0)
        self.file_mode = raw.get("fileMode")
        self.uid = raw.get("uid")
        self.gid = raw.get("gid")


class Linux:
    __slots__ = ("namespaces", "uid_mappings", "gid_mappings", "devices",
                 "cgroups_path", "resources", "rootfs_propagation",
                 "masked_paths", "readonly_paths", "sysctl", "time_offsets",
                 "personality", "seccomp", "memory_policy", "net_devices", "mount_label")

    def __init__(self, raw):
        raw = raw or {}
        self.namespaces = [Namespace(n) for n in raw.get("namespaces", ())]
        self.uid_mappings = [IdMapping(m) for m in raw.get("uidMappings", ())]
        self.gid_mappings = [IdMapping(m) for m in raw.get("gidMappings", ())]
        self.devices = [Device(d) for d in raw.get("devices", ())]
        self.cgroups_path = raw.get("cgroupsPath")
        self.resources = raw.get("resources") or {}
        self.rootfs_propagation = raw.get("rootfsPropagation")
        self.masked_paths = raw.get("maskedPaths") or []
        self.readonly_paths = raw.get("readonlyPaths") or []
        self.sysctl = raw.get("sysctl") or {}
        self.time_offsets = raw.get("timeOffsets") or {}
        self.personality = raw.get("personality")
        self.seccomp = raw.get("seccomp")
        self.memory_policy = raw.get("memoryPolicy")
        self.net_devices = raw.get("netDevices") or {}
        self.mount_label = raw.get("mountLabel") or None

    def namespace(self, ns_type):
        """The Namespace entry of that type, or None."""
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None


class Config:
    """The typed view of one bundle's config.json."""
    __slots__ = ("oci_version", "root_path", "root_readonly", "mounts", "process",
                 "hostname", "domainname", "hooks", "annotations", "linux")

    def __init__(self, raw, bundle):
        self.oci_version = raw["ociVersion"]
        root = raw.get("root") or {}
        path = root.get("path", "")
        self.root_path = os.path.normpath(os.path.join(bundle, path)) if path else ""
        self.root_readonly = root.get("readonly", False)
        self.mounts = [Mount(m) for m in raw.get("mounts", ())]
        self.process = Process(raw["process"]) if "process" in raw else None
        self.hostname = raw.get("hostname")
        self.domainname = raw.get("domainname")
        self.hooks = Hooks(raw.get("hooks"))
        self.annotations = raw.get("annotations") or {}
        self.linux = Linux(raw.get("linux"))


# Settings pyoci cannot apply (yet, or on Linux): refused, never silently dropped.
UNSUPPORTED = (
    ("process.commandLine", "a Windows setting: use process.args"),
    ("process.user.username", "a Windows setting: use process.user.uid"),
    ("linux.intelRdt", "Intel RDT is not supported"),
    ("windows", "settings for another platform"),
    ("solaris", "settings for another platform"),
    ("vm", "settings for a virtual-machine runtime"),
    ("zos", "settings for another platform"),
    ("freebsd", "settings for another platform"),
)


def check_supported(raw):
    for path, reason in UNSUPPORTED:
        value = raw
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value not in (None, "", {}, []):
            raise ConfigError(f"config.json: {path}: {reason}")


def read(bundle):
    """BUNDLE/config.json's document, not yet validated."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            return jsontext.loads(f.read())
    except FileNotFoundError:
        raise ConfigError(f"config.json: no such file in bundle {bundle}") from None
    except OSError as exc:
        raise ConfigError(f"config.json: open {path}: {errno_text(exc.errno)}") from None
    except ValueError as exc:
        raise ConfigError(f"config.json: (root): not JSON: {exc}") from None


def load(bundle):
    """Read, validate and check BUNDLE/config.json; return (Config, raw dict)."""
    raw = read(bundle)
    from pyoci.validate import validate_config
    for deviation in accept_deviations(raw):
        log.debug(deviation)
    validate_config(raw)
    check_supported(raw)
    config = Config(raw, bundle)
    check(config)
    return config, raw


def accept_deviations(raw):
    """Where engines send what the schema forbids and runc accepts, make RAW
    valid as runc reads it; returns what was accepted, a line each.

    A fileMode (at most 0o777 in the schema) that carries the device's own
    file type, as podman's --privileged sends it: runc takes only the
    permission bits, and so does pyoci."""
    accepted = []
    devices = (raw.get("linux") or {}).get("devices")
    for index, device in enumerate(devices if isinstance(devices, list) else ()):
        if not isinstance(device, dict):
            continue  # the schema's to refuse
        # podman 4.3's --privileged: 24960 is S_IFBLK | 0o600.
        mode, file_type = device.get("fileMode"), TYPE_BITS.get(device.get("type"))
        if isinstance(mode, int) and file_type and mode & 0o170000 == file_type \
                and not mode & ~0o170777:
            device["fileMode"] = mode & 0o777
            accepted.append(f"config.json: linux.devices[{index}].fileMode: {mode} carries the "
                            f"device's file type: using its permission bits {mode & 0o777:#o}")
    return accepted


def check(config):
    """What the schema cannot say but pyoci needs, as small named checks."""
    for rule in RULES:
        rule(config)


def problems(config):
    """Every rule's refusal of CONFIG (pyoci check), not only the first."""
    found = []
    for rule in RULES:
        try:
            rule(config)
        except ConfigError as exc:
            found.append(exc)
    return found


def _check_lsm(config):
    process = config.process
    lsm.check(process and process.apparmor_profile, process and process.selinux_label,
              config.linux.mount_label)


def _check_version(config):
    major = config.oci_version.split(".", 1)[0]
    if major != "1":
        raise ConfigError(f"config.json: ociVersion: unsupported version {config.oci_version!r}")


def _check_root(config):
    if not config.root_path:
        raise ConfigError("config.json: root.path: a root filesystem is required")
    if not os.path.isdir(config.root_path):
        raise ConfigError(f"config.json: root.path: rootfs {config.root_path} is not a directory")


def _check_namespaces(config):
    seen = set()
    for ns in config.linux.namespaces:
        if ns.type in seen:
            raise ConfigError(f"config.json: linux.namespaces: duplicate namespace {ns.type!r}")
        seen.add(ns.type)
    if "mount" not in seen and (config.linux.masked_paths or config.linux.readonly_paths):
        # Masking would change the host's own mount table.
        raise ConfigError("config.json: linux.maskedPaths: masked and read-only paths "
                          "need a mount namespace")
    if config.hostname and "uts" not in seen:
        raise ConfigError("config.json: hostname: requires a new uts namespace")
    if config.domainname and "uts" not in seen:
        raise ConfigError("config.json: domainname: requires a new uts namespace")


def _check_user_namespace_mappings(config):
    userns = config.linux.namespace("user")
    has_maps = bool(config.linux.uid_mappings or config.linux.gid_mappings)
    if userns and userns.path is None and not (config.linux.uid_mappings and config.linux.gid_mappings):
        raise ConfigError("config.json: linux.uidMappings: a new user namespace needs uid and gid mappings")
    if has_maps and (userns is None or userns.path is not None):
        raise ConfigError("config.json: linux.uidMappings: mappings need a new user namespace")


def _check_time_offsets(config):
    timens = config.linux.namespace("time")
    if config.linux.time_offsets and (timens is None or timens.path is not None):
        raise ConfigError("config.json: linux.timeOffsets: offsets need a new time namespace")


IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                         "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                         "kernel.shm_rmid_forced"})


def _check_sysctls(config):
    """Only sysctls of a namespace the container owns: any other would be the host's."""
    linux = config.linux
    for key in linux.sysctl:
        where = f"config.json: linux.sysctl: {key!r}"
        if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if linux.namespace("ipc") is None:
                raise ConfigError(f"{where} is not allowed in the host's ipc namespace")
        elif key.startswith("net."):
            if linux.namespace("network") is None:
                raise ConfigError(f"{where} is not allowed in the host's network namespace")
        elif key == "kernel.domainname" and linux.namespace("uts") is not None:
            continue
        elif key == "kernel.hostname" and linux.namespace("uts") is not None:
            raise ConfigError(f"{where} is not allowed: use the hostname property")
        else:
            raise ConfigError(f"{where} is not in a separate kernel namespace")


def _check_cwd_absolute(config):
    if config.process and not config.process.cwd.startswith("/"):
        raise ConfigError(f"config.json: process.cwd: {config.process.cwd!r} is not an absolute path")


RULES = (_check_version, _check_root, _check_namespaces, _check_user_namespace_mappings,
         _check_time_offsets, _check_cwd_absolute, _check_sysctls, mounts.check,
         network.check_devices, _check_lsm)


def default_config(rootless=False):
    """The config.json ``pyoci spec`` writes: runc's default, in our words."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    config = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {name: list(caps) for name in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pyoci",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        linux = config["linux"]
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        del linux["resources"]
        config["mounts"] = [m for m in config["mounts"] if m["type"] not in ("cgroup",)]
        config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "none",
                                 "source": "/sys/fs/cgroup",
                                 "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        for mount in config["mounts"]:
            if mount["type"] == "sysfs":
                mount.update(type="none", source="/sys",
                             options=["rbind", "nosuid", "noexec", "nodev", "ro"])
            elif mount["type"] == "devpts":
                # gid 5 is not mapped into a namespace of one id: as runc, none.
                mount["options"] = [o for o in mount["options"] if not o.startswith("gid=")]
    return config
