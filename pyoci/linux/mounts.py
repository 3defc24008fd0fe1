"""Mount options, flags, and mounting one config entry inside a rootfs."""
import os
import stat

from pyoci import log
from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux import lsm, syscalls as sc

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
    "symfollow": (True, MS_NOSYMFOLLOW), "sync": (False, MS_SYNCHRONOUS),
}

PROPAGATION_OPTIONS = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}

# Recursive attributes (mount_setattr(2) with AT_RECURSIVE): option -> (clear?, attribute).
# The atime modes are one field, not bits: setting one clears the field first.
RECURSIVE_OPTIONS = {
    "rro": (False, sc.MOUNT_ATTR_RDONLY), "rrw": (True, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, sc.MOUNT_ATTR_NOSUID), "rsuid": (True, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (False, sc.MOUNT_ATTR_NODEV), "rdev": (True, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (False, sc.MOUNT_ATTR_NOEXEC), "rexec": (True, sc.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, sc.MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, sc.MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (False, sc.MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, sc.MOUNT_ATTR_NOSYMFOLLOW),
    # relatime is the atime field's zero: there is nothing to clear, as for
    # runc and util-linux's mount.
    "rnorelatime": (True, sc.MOUNT_ATTR_RELATIME),
}
RECURSIVE_ATIME_OPTIONS = {
    "rrelatime": sc.MOUNT_ATTR_RELATIME,
    "rnoatime": sc.MOUNT_ATTR_NOATIME, "ratime": sc.MOUNT_ATTR_RELATIME,
    "rstrictatime": sc.MOUNT_ATTR_STRICTATIME, "rnostrictatime": sc.MOUNT_ATTR_RELATIME,
}

# Options pyoci handles itself rather than passing to the kernel.
TMPCOPYUP = "tmpcopyup"
IDMAP_OPTIONS = ("idmap", "ridmap")

# The flags a bind mount has per mount (MS_REMOUNT | MS_BIND sets them all at once).
ATIME_FLAGS = MS_NOATIME | MS_RELATIME | MS_STRICTATIME
PER_MOUNT_FLAGS = (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOSYMFOLLOW |
                   MS_NODIRATIME | ATIME_FLAGS)
ST_NOSYMFOLLOW = 0x2000  # statfs(2) f_flags; os lacks the name


class MountOptions:
    """A mount's options split into flags (set and explicitly cleared),
    propagation, recursive attributes, data and pyoci's own extensions."""
    __slots__ = ("flags", "cleared", "propagation", "recursive_set", "recursive_clear",
                 "data", "tmpcopyup", "idmap")

    def __init__(self, options):
        self.flags = self.cleared = 0
        self.recursive_set = self.recursive_clear = 0
        self.propagation = []
        data = []
        self.tmpcopyup = False
        self.idmap = None
        for option in options:
            if option in FLAG_OPTIONS:
                clear, flag = FLAG_OPTIONS[option]
                if clear:
                    self.flags &= ~flag
                    self.cleared |= flag
                else:
                    self.flags |= flag
                    self.cleared &= ~flag
            elif option in PROPAGATION_OPTIONS:
                self.propagation.append(PROPAGATION_OPTIONS[option])
            elif option in RECURSIVE_OPTIONS:
                clear, attribute = RECURSIVE_OPTIONS[option]
                self._recursive(attribute, 0, clear)
            elif option in RECURSIVE_ATIME_OPTIONS:
                self._recursive(RECURSIVE_ATIME_OPTIONS[option], sc.MOUNT_ATTR__ATIME, False)
            elif option == TMPCOPYUP:
                self.tmpcopyup = True
            elif option in IDMAP_OPTIONS:
                self.idmap = option
            else:
                data.append(option)
        self.data = ",".join(data)

    def _recursive(self, attribute, field, clear):
        if clear:
            self.recursive_set &= ~attribute
            self.recursive_clear |= attribute
        else:
            self.recursive_set = (self.recursive_set & ~field) | attribute
            self.recursive_clear = (self.recursive_clear & ~attribute) | field

    @property
    def is_bind(self):
        return bool(self.flags & MS_BIND)


def propagation_flag(name):
    """rootfsPropagation's value as mount flags."""
    try:
        return PROPAGATION_OPTIONS[name]
    except KeyError:
        raise ConfigError(f"config.json: linux.rootfsPropagation: unknown value {name!r}") from None


def is_bind_mount(mount, options=None):
    return (options or MountOptions(mount.options)).is_bind or mount.type == "bind"


def source_path(mount, bundle):
    """A bind mount's source: absolute, or relative to the bundle."""
    source = mount.source or ""
    return source if source.startswith("/") else os.path.join(bundle, source)


def check(config):
    """What create refuses in `mounts` before anything is made."""
    has_userns = config.linux.namespace("user") is not None
    for index, mount in enumerate(config.mounts):
        where = f"config.json: mounts[{index}] ({mount.destination})"
        options = MountOptions(mount.options)
        bind = is_bind_mount(mount, options)
        if bind and options.data:
            _check_bind_data(where, options.data)
        if is_idmapped(mount, options):
            if not bind:
                raise ConfigError(f"{where}: idmapped mounts are only supported for bind mounts")
            if bool(mount.uid_mappings) != bool(mount.gid_mappings):
                raise ConfigError(f"{where}: uidMappings and gidMappings go together")
            if not mount.uid_mappings and not has_userns:
                raise ConfigError(f"{where}: {options.idmap} needs uidMappings and gidMappings, "
                                  "or a user namespace whose mappings it takes")


def is_idmapped(mount, options):
    """Whether MOUNT (with its parsed OPTIONS) is an idmapped mount."""
    return bool(options.idmap or mount.uid_mappings or mount.gid_mappings)


IDMAPPED_MOUNTS_SINCE = (5, 12)  # mount_setattr(MOUNT_ATTR_IDMAP)


def host_problems(config, release=None):
    """A refusal for each idmapped mount where the kernel (RELEASE, by
    default this one's) has none."""
    release = release or os.uname().release
    try:
        version = tuple(int(part) for part in release.split("-")[0].split(".")[:2])
    except ValueError:
        return []
    if version >= IDMAPPED_MOUNTS_SINCE:
        return []
    return [ConfigError(f"config.json: mounts[{index}] ({mount.destination}): idmapped mounts "
                        f"need Linux {'.'.join(map(str, IDMAPPED_MOUNTS_SINCE))}; this is {release}")
            for index, mount in enumerate(config.mounts)
            if is_idmapped(mount, MountOptions(mount.options))]


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
    """Add FLAGS to an existing bind mount, keeping those it has.

    A mount inherited from a more privileged namespace has its flags locked
    (nodev, nosuid, noexec, ro, the atime mode): the kernel refuses a
    remount that would clear one, and a remount clears what it is not given.
    """
    sys.mount(None, target, None, MS_BIND | MS_REMOUNT | mount_flags(target) | flags)


def mount_flags(path):
    """The per-mount flags of the mount at PATH, as mount(2) takes them."""
    vfs = os.statvfs(path)
    mapping = {os.ST_RDONLY: MS_RDONLY, os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV,
               os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: MS_NOATIME,
               os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME,
               ST_NOSYMFOLLOW: MS_NOSYMFOLLOW}
    flags = sum(flag for st, flag in mapping.items() if vfs.f_flag & st)
    return flags if flags & ATIME_FLAGS else flags | MS_STRICTATIME


def bind_remount_flags(flags, cleared, source_flags):
    """The flags to remount a new bind mount with, or None if it needs no remount.

    As runc: what the options set or clear by name is applied, and every
    other flag of the source (locked or not) is kept; an atime option
    replaces the source's whole atime mode.
    """
    named = (flags | cleared) & PER_MOUNT_FLAGS
    if not named:
        return None
    kept = source_flags & ~cleared
    if named & ATIME_FLAGS:
        kept &= ~ATIME_FLAGS
    return (kept | flags) & PER_MOUNT_FLAGS


class Entry:
    """One config mount being made (mounts[INDEX]): where it goes, and what is
    applied once every mount and device exists (read-only of a mount others
    go under)."""
    __slots__ = ("index", "mount", "options", "target", "defer_readonly", "mount_label")

    def __init__(self, rootfs, index, mount, defer_readonly=False, mount_label=None):
        self.index = index
        self.mount = mount
        self.mount_label = mount_label  # linux.mountLabel (SELinux)
        self.options = MountOptions(mount.options)
        self.target = secure_join(rootfs, mount.destination)
        self.defer_readonly = defer_readonly and bool(
            self.options.flags & MS_RDONLY or self.options.recursive_set & sc.MOUNT_ATTR_RDONLY)

    def describe(self):
        return f"mount {self.mount.source or self.mount.type} to {self.mount.destination}"

    def fail(self, exc):
        return ExecError(f"{self.describe()}: {errno_text(exc.errno)}")


def mount_entry(sys, rootfs, bundle, entry, cgroup_mounter, sources):
    """Mount one config entry under ROOTFS (before pivot_root).

    SOURCES opens bind sources init cannot reach and makes idmapped copies
    (pyoci/linux/mount_sources.py, by way of the runtime).
    """
    mount, options, target = entry.mount, entry.options, entry.target
    flags = options.flags & ~MS_RDONLY if entry.defer_readonly else options.flags
    try:
        if is_bind_mount(mount, options):
            _bind(sys, bundle, entry, flags, sources)
        elif mount.type == "cgroup":
            make_mount_point(target)
            cgroup_mounter(target, options)
        else:
            _mount_fs(sys, rootfs, entry, flags)
        _set_recursive(sys, entry, options.recursive_set & ~(
            sc.MOUNT_ATTR_RDONLY if entry.defer_readonly else 0))
        for flag in options.propagation:
            sys.mount(None, target, None, flag)
    except OSError as exc:
        raise entry.fail(exc) from None


def finish_entry(sys, entry):
    """The read-only part of a mount that other mounts went under."""
    if not entry.defer_readonly:
        return
    try:
        sys.mount_setattr(entry.target, sc.MOUNT_ATTR_RDONLY,
                          recursive=bool(entry.options.recursive_set & sc.MOUNT_ATTR_RDONLY))
    except OSError as exc:
        raise entry.fail(exc) from None


def _set_recursive(sys, entry, attr_set):
    options = entry.options
    if not (attr_set or options.recursive_clear):
        return
    try:
        sys.mount_setattr(entry.target, attr_set, options.recursive_clear, recursive=True)
    except OSError as exc:
        raise ExecError(f"{entry.describe()}: set recursive mount attributes: "
                        f"{errno_text(exc.errno)}") from None


def _check_bind_data(where, data):
    """A bind mount has no filesystem to take data options: the kernel ignores
    them. As runc, key=value ones are accepted (runtime-tools' `mounts` sends
    "mode=755,size=1k" with its binds), and --debug says so; any other word is
    no option pyoci knows, likely a misspelt flag (`rnoexecc`): refused."""
    words = [option for option in data.split(",") if "=" not in option]
    if words:
        raise ConfigError(f"{where}: unknown mount option {words[0]!r}")
    log.debug(f"{where}: {data!r} has no effect on a bind mount (the kernel ignores it)")


def _bind(sys, bundle, entry, flags, sources):
    mount, options, target = entry.mount, entry.options, entry.target
    if is_idmapped(mount, options):
        _attach(sources.idmapped(entry.index), target, lambda fd: sys.move_mount_fd(fd, target))
    else:
        source = source_path(mount, bundle)
        try:
            source_stat = os.stat(source)
        except PermissionError:
            # Only the host's root may reach it (a user namespace's root may not).
            _attach(sources.open(entry.index), target, lambda fd: sys.mount(
                f"/proc/self/fd/{fd}", target, "bind", MS_BIND | (flags & MS_REC)))
        else:
            make_mount_point(target, stat.S_ISDIR(source_stat.st_mode))
            sys.mount(source, target, "bind", MS_BIND | (flags & MS_REC))
    remount = bind_remount_flags(flags, options.cleared, mount_flags(target))
    if remount is not None:
        sys.mount(None, target, None, MS_BIND | MS_REMOUNT | remount)


def _attach(source_fd, target, attach):
    """Make TARGET's mount point for the source open at SOURCE_FD, ATTACH it, close it."""
    try:
        make_mount_point(target, stat.S_ISDIR(os.fstat(source_fd).st_mode))
        attach(source_fd)
    finally:
        os.close(source_fd)


def _mount_fs(sys, rootfs, entry, flags):
    mount, options, target = entry.mount, entry.options, entry.target
    if mount.type in ("proc", "sysfs"):
        _check_ordinary_directory(rootfs, entry)
    data = options.data
    if mount.type == "tmpfs" and "mode=" not in data:
        # As runc: a tmpfs takes the mode of the directory it covers,
        # setuid, setgid and sticky bits included.
        data = _with_covered_mode(target, data)
    data = lsm.mount_data(data, mount.type, False, entry.mount_label)
    make_mount_point(target)
    if options.tmpcopyup:
        _mount_tmpfs_copyup(sys, mount, flags, data, target)
        return
    try:
        sys.mount(mount.source or mount.type, target, mount.type, flags, data or None)
    except PermissionError:
        if mount.type != "sysfs":
            raise
        # sysfs refuses a network namespace we do not own: show the host's, as runc does.
        sys.mount("/sys", target, "bind", MS_BIND | MS_REC)
        remount_bind(sys, target, flags)
    lsm.label_mount_point(target, mount.type, entry.mount_label)


def _with_covered_mode(target, data):
    try:
        covered = os.stat(target).st_mode
    except FileNotFoundError:
        return data
    if not stat.S_ISDIR(covered):
        return data
    mode = f"mode={stat.S_IMODE(covered):04o}"
    return f"{mode},{data}" if data else mode


def _check_ordinary_directory(rootfs, entry):
    """proc and sysfs never go through a link or over a file of the image:
    that has been the way to mount them somewhere the masks do not reach."""
    destination = entry.mount.destination.rstrip("/") or "/"
    parent = secure_join(rootfs, os.path.dirname(destination))
    place = os.path.join(parent, os.path.basename(destination))
    if os.path.lexists(place) and (os.path.islink(place) or not os.path.isdir(place)):
        raise ExecError(f"{entry.describe()}: filesystem {entry.mount.type!r} must be mounted "
                        "on ordinary directory")


def _mount_tmpfs_copyup(sys, mount, flags, data, target):
    """tmpfs whose initial content is a copy of what the image had there."""
    image_dir = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sys.mount(mount.source or "tmpfs", target, mount.type, flags & ~MS_RDONLY, data or None)
        copy_tree(image_dir, target)
        if flags & MS_RDONLY:
            sys.mount(None, target, None, flags | MS_REMOUNT, data or None)
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
