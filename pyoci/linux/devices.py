"""Device nodes in /dev: the default set every container gets, the config's
``linux.devices``, and the standard /dev symlinks."""
import os
import stat

from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux import inroot
from pyoci.linux.mounts import MS_BIND

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


def create_devices(sys, root_fd, nodes, in_user_namespace):
    """mknod each node; inside a user namespace mknod is refused, so bind the host's."""
    old_umask = os.umask(0)
    try:
        for node in nodes:
            try:
                parent, name = inroot.place_in(sys, root_fd, node.path)
                try:
                    if in_user_namespace:
                        _bind_host_node(sys, parent, name, node.path)
                    else:
                        _mknod(parent, name, node)
                finally:
                    os.close(parent)
            except OSError as exc:
                raise ExecError(f"create device {node.path}: {errno_text(exc.errno)}") from None
    finally:
        os.umask(old_umask)


def _bind_host_node(sys, parent, name, host_path):
    place = inroot.make_open_at(parent, name, "file")
    try:
        sys.mount(host_path, inroot.fd_path(place), "bind", MS_BIND)
    finally:
        os.close(place)


def _mknod(parent, name, node):
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    os.mknod(name, TYPE_BITS[node.type] | (node.mode & 0o7777),
             os.makedev(node.major, node.minor), dir_fd=parent)
    os.chown(name, node.uid, node.gid, dir_fd=parent, follow_symlinks=False)


def create_symlinks(sys, root_fd):
    links = SYMLINKS + ((("/proc/kcore", "/dev/core"),) if os.path.exists("/proc/kcore") else ())
    for source, link in links:
        parent, name = inroot.parent_in(sys, root_fd, link)
        try:
            os.symlink(source, name, dir_fd=parent)
        except FileExistsError:
            pass
        finally:
            os.close(parent)
