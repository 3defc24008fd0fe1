"""Device nodes in /dev: the default set every container gets, the config's
``linux.devices``, and the standard /dev symlinks."""
import os
import stat

from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux.mounts import MS_BIND, make_mount_point, secure_join

# (path, type, major, minor): what runtime-spec's "Default Devices" lists.
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3),
    ("/dev/zero", "c", 1, 5),
    ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8),
    ("/dev/urandom", "c", 1, 9),
    ("/dev/tty", "c", 5, 0),
)

SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
)

# A device's file-type bits (stat.h's S_IFMT) by its config type.
TYPE_BITS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


class Node:
    __slots__ = ("path", "type", "major", "minor", "mode", "uid", "gid")

    def __init__(self, path, dev_type, major, minor, mode=0o666, uid=0, gid=0):
        self.path, self.type, self.major, self.minor = path, dev_type, major, minor
        self.mode, self.uid, self.gid = mode, uid, gid


def nodes_for(config_devices):
    """The default devices, then the config's (which may override a default)."""
    nodes = {path: Node(path, t, major, minor) for path, t, major, minor in DEFAULT_DEVICES}
    for device in config_devices:
        nodes[device.path] = Node(
            device.path, device.type, device.major, device.minor,
            device.file_mode if device.file_mode is not None else 0o666,
            device.uid or 0, device.gid or 0)
    return list(nodes.values())


def host_problems(config):
    """In a new user namespace, where mknod is refused, each device is the
    host's node bind-mounted: a refusal for each the host does not have."""
    userns = config.linux.namespace("user")
    if userns is None or userns.path is not None:
        return []
    found = []
    for node in nodes_for(config.linux.devices):
        try:
            is_device = stat.S_IFMT(os.stat(node.path).st_mode) == TYPE_BITS[node.type]
        except OSError:
            is_device = False
        if not is_device:
            index = next((i for i, device in enumerate(config.linux.devices)
                          if device.path == node.path), None)
            where = "linux.devices" + (f"[{index}]" if index is not None else "")
            found.append(ConfigError(f"config.json: {where}: {node.path}: in a user namespace "
                                     "a device is the host's, bound in, and the host has none"))
    return found


def create_devices(sys, rootfs, nodes, in_user_namespace):
    """mknod each node; inside a user namespace mknod is refused, so bind the host's."""
    old_umask = os.umask(0)
    try:
        for node in nodes:
            target = secure_join(rootfs, node.path)
            try:
                if in_user_namespace:
                    make_mount_point(target, source_is_dir=False)
                    sys.mount(node.path, target, "bind", MS_BIND)
                else:
                    _mknod(target, node)
            except OSError as exc:
                raise ExecError(f"create device {node.path}: {errno_text(exc.errno)}") from None
    finally:
        os.umask(old_umask)


def _mknod(target, node):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.unlink(target)
    os.mknod(target, TYPE_BITS[node.type] | (node.mode & 0o7777),
             os.makedev(node.major, node.minor))
    os.chown(target, node.uid, node.gid)


def create_symlinks(rootfs):
    for source, link in SYMLINKS:
        target = os.path.join(rootfs, link.lstrip("/"))
        if not os.path.lexists(target):
            os.symlink(source, target)
    if os.path.exists("/proc/kcore"):
        core = os.path.join(rootfs, "dev/core")
        if not os.path.lexists(core):
            os.symlink("/proc/kcore", core)
