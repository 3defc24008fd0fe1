"""Build OCI bundles for black-box runtime tests: a busybox rootfs and a config.json.

Nothing here depends on pyoci, so any test suite can drive any runtime with it.
"""
import atexit
import copy
import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"

# What `runc spec` grants: enough to run busybox, nothing that reaches the host.
DEFAULT_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]

# The mounts of `runc spec`, except the cgroup mount: the tests never look at
# cgroups from inside, and cgroupfs inside a container is not a spec MUST.
DEFAULT_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": NOSUID_NOEXEC_NODEV + ["mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": NOSUID_NOEXEC_NODEV},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": NOSUID_NOEXEC_NODEV + ["ro"]},
]

DEFAULT_NAMESPACES = ["pid", "network", "ipc", "uts", "mount"]

DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]

DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def base_config(args, **overrides):
    """A config like `runc spec` makes, running ``args`` without a terminal.

    ``overrides`` replace top-level keys (``hostname=...``, ``annotations=...``);
    change nested values on the returned dict.  The root is writable so tests
    can create files anywhere; tests of ``root.readonly`` set it themselves.
    """
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [PATH_ENV],
            "cwd": "/",
            "capabilities": {
                kind: list(DEFAULT_CAPABILITIES)
                for kind in ("bounding", "effective", "permitted", "ambient")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "conformance",
        "mounts": copy.deepcopy(DEFAULT_MOUNTS),
        "linux": {
            "namespaces": [{"type": kind} for kind in DEFAULT_NAMESPACES],
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }
    config.update(overrides)
    return config


def make_rootfs(path):
    """Fill ``path`` (created if missing) with a busybox root filesystem."""
    shutil.copytree(_template_rootfs(), path, symlinks=True, dirs_exist_ok=True,
                    copy_function=_share_or_copy)
    return Path(path)


def _share_or_copy(source, destination):
    """Hard-link read-only files (busybox: 2 MB, and a test run makes ~100 bundles);
    copy the rest, which a container may change."""
    if not os.stat(source).st_mode & 0o222:
        try:
            os.link(source, destination)
            return
        except OSError:  # on another filesystem
            pass
    shutil.copy2(source, destination)


@functools.lru_cache(maxsize=None)
def _template_rootfs():
    """Build the rootfs once per process; every bundle gets a private copy of it."""
    template = Path(tempfile.mkdtemp(prefix="oci-rootfs-"))
    atexit.register(shutil.rmtree, template, ignore_errors=True)
    template.chmod(0o755)  # mkdtemp makes it 0700, which locks out non-root users
    for directory in ("bin", "etc", "proc", "sys", "dev", "root"):
        (template / directory).mkdir()
    (template / "tmp").mkdir()
    os.chmod(template / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, template / "bin" / "busybox")
    (template / "bin" / "busybox").chmod(0o555)
    for applet in _busybox_applets():
        link = template / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (template / "etc" / "passwd").write_text(PASSWD)
    (template / "etc" / "group").write_text(GROUP)
    return template


def _busybox_applets():
    listing = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True)
    return listing.stdout.split()


def update_section(section, **values):
    """A ``mutate`` for make_bundle that sets ``values`` in the config's ``section`` object."""
    def mutate(config):
        config.setdefault(section, {}).update(values)
    return mutate


def join_namespace(ns_type, path):
    """A ``mutate`` for make_bundle joining the ``ns_type`` namespace at ``path``."""
    def mutate(config):
        namespaces = config["linux"]["namespaces"]
        namespaces[:] = [ns for ns in namespaces if ns["type"] != ns_type]
        namespaces.append({"type": ns_type, "path": path})
    return mutate


def user_namespace(config, host_base=100000):
    """A ``mutate`` for make_bundle: a new user namespace, 65536 ids from HOST_BASE."""
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": host_base, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": host_base, "size": 65536}]


def bind_mount(source, destination, *options):
    """A mounts entry binding host ``source`` (recursively) at ``destination``."""
    return {"destination": destination, "type": "none", "source": str(source),
            "options": ["rbind", *options]}


def tmpfs_mount(destination, *options):
    """A mounts entry putting a new tmpfs at ``destination``."""
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
            "options": list(options)}


def write_config(bundle, config):
    """Write ``config`` as ``bundle``/config.json."""
    (Path(bundle) / "config.json").write_text(json.dumps(config, indent=2))


def read_config(bundle):
    return json.loads((Path(bundle) / "config.json").read_text())


def make_bundle(tmpdir, args, mutate=None):
    """Make a bundle in ``tmpdir`` running ``args``: config.json plus rootfs/.

    ``mutate(config)`` may edit the default config in place before it is written.
    Returns the bundle path.
    """
    bundle = Path(tmpdir)
    bundle.mkdir(parents=True, exist_ok=True)
    config = base_config(args)
    if mutate is not None:
        mutate(config)
    make_rootfs(bundle / "rootfs")
    write_config(bundle, config)
    return bundle
