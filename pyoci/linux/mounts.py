"""Mount options, flags, and mounting one config entry inside a rootfs."""
import os
import stat

from pyoci import log
from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux import inroot, lsm, syscalls as sc

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
UMOUNT_NOFOLLOW = 8

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
    go under). Once mounted, TARGET is the path of the new mount's own fd,
    which every later step goes through (inroot.py)."""
    __slots__ = ("index", "mount", "options", "defer_readonly", "mount_label", "mount_fd",
                 "target")

    def __init__(self, index, mount, defer_readonly=False, mount_label=None):
        self.index = index
        self.mount = mount
        self.mount_label = mount_label  # linux.mountLabel (SELinux)
        self.options = MountOptions(mount.options)
        self.defer_readonly = defer_readonly and bool(
            self.options.flags & MS_RDONLY or self.options.recursive_set & sc.MOUNT_ATTR_RDONLY)
        self.mount_fd = self.target = None

    def describe(self):
        return f"mount {self.mount.source or self.mount.type} to {self.mount.destination}"

    def fail(self, exc):
        return ExecError(f"{self.describe()}: {errno_text(exc.errno)}")

    def attacher(self, sys, root_fd, kind):
        """What mounts on the destination: it takes a function that mounts
        on the path it is given (the pinned mount point, made as KIND), and
        returns the new mount's path."""
        def attach(do_mount):
            destination = self.mount.destination
            if kind == "ordinary dir":
                place = _ordinary_directory(sys, root_fd, self)
            else:
                place = inroot.make_in(sys, root_fd, destination, kind)
            try:
                log.pause_point("init:mount-point", destination)
                do_mount(inroot.fd_path(place))
                log.pause_point("init:mounted", destination)
                self.mount_fd = inroot.reopen_mounted(sys, root_fd, destination, place)
            finally:
                os.close(place)
            self.target = inroot.fd_path(self.mount_fd)
            return self.target
        return attach

    def close(self):
        if self.mount_fd is not None:
            os.close(self.mount_fd)
            self.mount_fd = None


# Filesystems the kernel makes without a device, whose mount no cgroup checks.
_VIRTUAL_TYPES = frozenset(("proc", "sysfs", "tmpfs", "devpts", "mqueue"))


def independent_of_cgroups(entry):
    """Whether ENTRY mounts the same in or out of the container's cgroups: a
    bind (no device is opened) or a virtual filesystem, not a cgroup one."""
    return is_bind_mount(entry.mount, entry.options) or entry.mount.type in _VIRTUAL_TYPES


def mount_entry(sys, root_fd, bundle, entry, cgroup_mounter, sources):
    """Mount one config entry inside the root open at ROOT_FD (before pivot_root).

    SOURCES opens bind sources init cannot reach and makes idmapped copies
    (pyoci/linux/mount_sources.py, by way of the runtime).
    """
    mount, options = entry.mount, entry.options
    flags = options.flags & ~MS_RDONLY if entry.defer_readonly else options.flags
    try:
        if is_bind_mount(mount, options):
            _bind(sys, root_fd, bundle, entry, flags, sources)
        elif mount.type == "cgroup":
            cgroup_mounter(entry.attacher(sys, root_fd, "dir"), options)
        else:
            _mount_fs(sys, root_fd, entry, flags)
        _set_recursive(sys, entry, options.recursive_set & ~(
            sc.MOUNT_ATTR_RDONLY if entry.defer_readonly else 0))
        for flag in options.propagation:
            sys.mount(None, entry.target, None, flag)
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


def _bind(sys, root_fd, bundle, entry, flags, sources):
    mount, options = entry.mount, entry.options
    if is_idmapped(mount, options):
        _attach_fd(sys, root_fd, entry, sources.idmapped(entry.index),
                   lambda fd, place: sys.move_mount_fd(fd, place))
    else:
        source = source_path(mount, bundle)
        try:
            source_stat = os.stat(source)
        except PermissionError:
            # Only the host's root may reach it (a user namespace's root may not).
            _attach_fd(sys, root_fd, entry, sources.open(entry.index), lambda fd, place: sys.mount(
                inroot.fd_path(fd), place, "bind", MS_BIND | (flags & MS_REC)))
        else:
            entry.attacher(sys, root_fd, _kind(source_stat.st_mode))(
                lambda place: sys.mount(source, place, "bind", MS_BIND | (flags & MS_REC)))
    remount = bind_remount_flags(flags, options.cleared, mount_flags(entry.target))
    if remount is not None:
        sys.mount(None, entry.target, None, MS_BIND | MS_REMOUNT | remount)


def _kind(mode):
    return "dir" if stat.S_ISDIR(mode) else "file"


def _attach_fd(sys, root_fd, entry, source_fd, attach):
    """Mount the source open at SOURCE_FD (by ATTACH) on the entry's destination, close it."""
    try:
        entry.attacher(sys, root_fd, _kind(os.fstat(source_fd).st_mode))(
            lambda place: attach(source_fd, place))
    finally:
        os.close(source_fd)


def _mount_fs(sys, root_fd, entry, flags):
    mount, options = entry.mount, entry.options
    data, image_dir, host_sysfs = options.data, None, False

    def do_mount(place):
        nonlocal data, image_dir, host_sysfs
        if mount.type == "tmpfs" and "mode=" not in data:
            # As runc: a tmpfs takes the mode of the directory it covers,
            # setuid, setgid and sticky bits included.
            data = _with_covered_mode(place, data)
        data = lsm.mount_data(data, mount.type, False, entry.mount_label)
        if options.tmpcopyup:
            # The pinned place is the image's directory, soon under the tmpfs.
            image_dir = os.open(place, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sys.mount(mount.source or mount.type, place, mount.type,
                      flags & ~MS_RDONLY if options.tmpcopyup else flags, data or None)
        except PermissionError:
            if mount.type != "sysfs":
                raise
            # sysfs refuses a network namespace we do not own: show the host's, as runc does.
            sys.mount("/sys", place, "bind", MS_BIND | MS_REC)
            host_sysfs = True

    try:
        target = entry.attacher(sys, root_fd, "ordinary dir" if mount.type in ("proc", "sysfs")
                                else "dir")(do_mount)
        if host_sysfs:
            remount_bind(sys, target, flags)
        if image_dir is not None:
            copy_tree(image_dir, target)
            if flags & MS_RDONLY:
                sys.mount(None, target, None, flags | MS_REMOUNT, data or None)
    finally:
        if image_dir is not None:
            os.close(image_dir)
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


def _ordinary_directory(sys, root_fd, entry):
    """proc and sysfs never go through a link or over a file of the image:
    that has been the way to mount them somewhere the masks do not reach."""
    place = inroot.make_leaf_in(sys, root_fd, entry.mount.destination, "dir")
    if not stat.S_ISDIR(os.fstat(place).st_mode):
        os.close(place)
        raise ExecError(f"{entry.describe()}: filesystem {entry.mount.type!r} must be mounted "
                        "on ordinary directory")
    return place


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
