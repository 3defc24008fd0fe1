"""Mount options, flags, and mounting one config entry inside a rootfs."""
import os
import stat

from pyoci.errors import ConfigError, ExecError, errno_text

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_I_VERSION = 0x800000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_DETACH = 2

# option -> (clear?, flag)
FLAG_OPTIONS = {
    "async": (True, MS_SYNCHRONOUS), "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND), "defaults": (False, 0), "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME), "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC), "iversion": (False, MS_I_VERSION),
    "lazytime": (False, MS_LAZYTIME), "loud": (True, MS_SILENT),
    "mand": (False, MS_MANDLOCK), "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV), "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC), "noiversion": (True, MS_I_VERSION),
    "nolazytime": (True, MS_LAZYTIME), "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME), "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID), "nosymfollow": (False, MS_NOSYMFOLLOW),
    "rbind": (False, MS_BIND | MS_REC), "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT), "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY), "silent": (False, MS_SILENT),
    "strictatime": (False, MS_STRICTATIME), "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}

PROPAGATION_OPTIONS = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}

# Options pyoci handles itself rather than passing to the kernel.
TMPCOPYUP = "tmpcopyup"


class MountOptions:
    """A mount's options split into flags, propagation, data and extensions."""
    __slots__ = ("flags", "propagation", "data", "tmpcopyup")

    def __init__(self, options):
        self.flags = 0
        self.propagation = []
        data = []
        self.tmpcopyup = False
        for option in options:
            if option in FLAG_OPTIONS:
                clear, flag = FLAG_OPTIONS[option]
                self.flags = self.flags & ~flag if clear else self.flags | flag
            elif option in PROPAGATION_OPTIONS:
                self.propagation.append(PROPAGATION_OPTIONS[option])
            elif option == TMPCOPYUP:
                self.tmpcopyup = True
            else:
                data.append(option)
        self.data = ",".join(data)

    @property
    def is_bind(self):
        return bool(self.flags & MS_BIND)


def propagation_flag(name):
    """rootfsPropagation's value as mount flags."""
    try:
        return PROPAGATION_OPTIONS[name]
    except KeyError:
        raise ConfigError(f"config.json: linux.rootfsPropagation: unknown value {name!r}") from None


def secure_join(root, path):
    """ROOT/PATH with every symlink resolved as if ROOT were '/'.

    A container's rootfs may hold symlinks pointing anywhere; resolving them
    against the host would let a mount escape the rootfs.
    """
    parts = [p for p in path.split("/") if p]
    resolved = []
    links_followed = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)
            continue
        links_followed += 1
        if links_followed > 255:
            raise ExecError(f"secure join {path}: too many levels of symbolic links")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p] + parts
    return os.path.join(root, *resolved)


def make_mount_point(target, source_is_dir=True):
    """Create TARGET as a directory, or as an empty file for a file bind."""
    if source_is_dir:
        os.makedirs(target, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if not os.path.exists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o755))


def remount_bind(sys, target, flags):
    """Apply FLAGS to an existing bind mount.

    A mount inherited from a more privileged namespace keeps its locked flags
    (nodev, nosuid, noexec, ro...); retry with them when the kernel insists.
    """
    flags |= MS_BIND | MS_REMOUNT
    try:
        sys.mount(None, target, None, flags)
    except PermissionError:
        sys.mount(None, target, None, flags | locked_flags(target))


def locked_flags(path):
    vfs = os.statvfs(path)
    mapping = {os.ST_RDONLY: MS_RDONLY, os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV,
               os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: MS_NOATIME,
               os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME}
    return sum(flag for st, flag in mapping.items() if vfs.f_flag & st)


def mount_entry(sys, rootfs, bundle, mount, cgroup_mounter):
    """Mount one config entry under ROOTFS (before pivot_root)."""
    options = MountOptions(mount.options)
    target = secure_join(rootfs, mount.destination)
    try:
        if options.is_bind or mount.type == "bind":
            _bind(sys, bundle, mount, options, target)
        elif mount.type == "cgroup":
            cgroup_mounter(target, options)
        else:
            _mount_fs(sys, mount, options, target)
        for flag in options.propagation:
            sys.mount(None, target, None, flag)
    except OSError as exc:
        raise ExecError(f"mount {mount.source or mount.type} to {mount.destination}: "
                        f"{errno_text(exc.errno)}") from None


def _bind(sys, bundle, mount, options, target):
    source = mount.source or ""
    if not source.startswith("/"):
        source = os.path.join(bundle, source)
    source_stat = os.stat(source)
    make_mount_point(target, stat.S_ISDIR(source_stat.st_mode))
    sys.mount(source, target, "bind", MS_BIND | (options.flags & MS_REC))
    extra = options.flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
    if extra:
        remount_bind(sys, target, extra | (options.flags & MS_REC))


def _mount_fs(sys, mount, options, target):
    make_mount_point(target)
    if options.tmpcopyup:
        _mount_tmpfs_copyup(sys, mount, options, target)
        return
    try:
        sys.mount(mount.source or mount.type, target, mount.type, options.flags, options.data or None)
    except PermissionError:
        if mount.type != "sysfs":
            raise
        # sysfs refuses a network namespace we do not own: show the host's, as runc does.
        sys.mount("/sys", target, "bind", MS_BIND | MS_REC)
        remount_bind(sys, target, options.flags | MS_REC)


def _mount_tmpfs_copyup(sys, mount, options, target):
    """tmpfs whose initial content is a copy of what the image had there."""
    image_dir = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sys.mount(mount.source or "tmpfs", target, mount.type, options.flags & ~MS_RDONLY,
                  options.data or None)
        copy_tree(image_dir, target)
        if options.flags & MS_RDONLY:
            sys.mount(None, target, None, options.flags | MS_REMOUNT)
    finally:
        os.close(image_dir)


def copy_tree(source_dir_fd, destination):
    """Copy the tree below an open directory into DESTINATION, keeping modes and owners."""
    for entry in os.scandir(source_dir_fd):
        info = entry.stat(follow_symlinks=False)
        target = os.path.join(destination, entry.name)
        if stat.S_ISDIR(info.st_mode):
            os.mkdir(target, stat.S_IMODE(info.st_mode))
            child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                            dir_fd=source_dir_fd)
            try:
                copy_tree(child, target)
            finally:
                os.close(child)
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(entry.name, dir_fd=source_dir_fd), target)
        elif stat.S_ISREG(info.st_mode):
            source = os.open(entry.name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=source_dir_fd)
            try:
                out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                              stat.S_IMODE(info.st_mode))
                try:
                    while os.sendfile(out, source, None, 1 << 20):
                        pass
                finally:
                    os.close(out)
            finally:
                os.close(source)
        else:
            os.mknod(target, info.st_mode, info.st_rdev)
        os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(info.st_mode):
            os.chmod(target, stat.S_IMODE(info.st_mode))
