"""The runtime's side of init's MOUNT_SOURCE requests (see pyoci/sync.py).

The runtime is the host's root in the host's namespaces, so it reaches
sources that a user namespace's root may not, and it may idmap a mount of
the host's filesystems. It resolves a source through /proc/<init>/root, in
init's mount namespace: a source below an earlier mount's destination is
what that mount made, in config order.
"""
import errno
import os

from pyoci.errors import ExecError, errno_text
from pyoci.linux import namespaces, unix
from pyoci.linux import syscalls as sc
from pyoci.linux.mounts import MS_REC, MountOptions, source_path


class MountSources:
    def __init__(self, syscalls, config, bundle, init_pid):
        self._sys = syscalls
        self._config = config
        self._bundle = bundle
        self._init_pid = init_pid
        self._user_namespaces = {}  # (uid_map, gid_map) text -> namespace fd

    def open(self, index, idmapped):
        """An O_PATH descriptor of mounts[INDEX]'s source, or a detached,
        idmapped copy of it; the caller closes it."""
        mount = self._config.mounts[index]
        path = os.path.abspath(source_path(mount, self._bundle))
        try:
            if not idmapped:
                return os.open(f"/proc/{self._init_pid}/root{path}", os.O_PATH | os.O_CLOEXEC)
            user_namespace = self._user_namespace(mount)
            return self._in_init_mount_namespace(
                lambda: self._idmapped_copy(mount, path, user_namespace))
        except OSError as exc:
            if not idmapped:
                what = "open the source"
            elif exc.errno == errno.EINVAL:
                what = "the filesystem or the kernel cannot idmap it"
            else:
                what = "idmapped copy of the source"
            raise ExecError(f"mount {mount.source} to {mount.destination}: {what}: "
                            f"{errno_text(exc.errno)}") from None

    def _idmapped_copy(self, mount, path, user_namespace):
        options = MountOptions(mount.options)
        flags = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC
        if options.flags & MS_REC:
            flags |= sc.AT_RECURSIVE
        tree = self._sys.open_tree(path, flags)
        self._sys.mount_setattr(tree, sc.MOUNT_ATTR_IDMAP, recursive=options.idmap == "ridmap",
                                userns_fd=user_namespace)
        return tree

    def _in_init_mount_namespace(self, make_fd):
        """MAKE_FD() run in a fork that joined init's mount namespace (open_tree
        clones only mounts of the caller's own); its descriptor comes back."""
        mount_namespace = os.open(f"/proc/{self._init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        ours, theirs = unix.pair(unix.SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ours.close()
                try:
                    self._sys.setns(mount_namespace, sc.CLONE_NEWNS)
                    unix.send_fds(theirs, b"0", [make_fd()])
                    code = 0
                except OSError as exc:
                    theirs.send(str(exc.errno).encode())
            finally:
                os._exit(code)
        theirs.close()
        os.close(mount_namespace)
        try:
            data, fds = unix.receive_fds(ours, 64, 1)
        finally:
            ours.close()
            os.waitpid(pid, 0)
        if not fds:
            code = int(data or errno.EIO)
            raise OSError(code, os.strerror(code))
        return fds[0]

    def _user_namespace(self, mount):
        """One with the mount's mappings, or else the container's."""
        uid_mappings = mount.uid_mappings or self._config.linux.uid_mappings
        gid_mappings = mount.gid_mappings or self._config.linux.gid_mappings
        key = (namespaces.format_id_map(uid_mappings), namespaces.format_id_map(gid_mappings))
        if key not in self._user_namespaces:
            self._user_namespaces[key] = namespaces.mapped_user_namespace(
                self._sys, uid_mappings, gid_mappings)
        return self._user_namespaces[key]

    def close(self):
        for fd in self._user_namespaces.values():
            os.close(fd)
        self._user_namespaces.clear()
