"""Building the container's root filesystem in its mount namespace.

``prepare`` runs before the createRuntime hooks (mounts, devices, while the
host is still visible); ``enter`` does pivot_root; ``finish`` applies what
needs the container's own /proc (readonly and masked paths, readonly root).
"""
import os
import stat

from pyoci.errors import ExecError, errno_text
from pyoci.linux import devices, inroot, mounts, procfs
from pyoci.linux import syscalls as sc
from pyoci.linux.mounts import (MNT_DETACH, MS_BIND, MS_MOVE, MS_RDONLY, MS_REC, MS_SLAVE,
                                remount_bind)


def prepare(sys, config, bundle, cgroup_mounter, sources, in_user_namespace, wait_for_cgroups):
    """SOURCES: see mounts.mount_entry. WAIT_FOR_CGROUPS() returns once init
    is in the container's cgroups: what may depend on them (a cgroup mount,
    a device's filesystem, device nodes) waits for it, the rest need not."""
    rootfs = config.root_path
    # Nothing done in here may propagate back to the host: every mount is a
    # slave (of the host's peer group, where the host's is shared), which
    # also lets pivot_root take the rootfs. rootfsPropagation is applied to
    # the new root once it is the root (finish).
    _mount_or_fail(sys, None, "/", None, MS_SLAVE | MS_REC, "set propagation of /")
    _mount_or_fail(sys, rootfs, rootfs, "bind", MS_BIND | MS_REC, "bind rootfs")
    entries = [mounts.Entry(index, mount, _others_go_under(mount, config.mounts[index + 1:]),
                            config.linux.mount_label)
               for index, mount in enumerate(config.mounts)]
    root_fd = inroot.open_root(rootfs)
    try:
        for entry in entries:
            if not mounts.independent_of_cgroups(entry):
                wait_for_cgroups()
            mounts.mount_entry(sys, root_fd, bundle, entry, cgroup_mounter, sources)
        wait_for_cgroups()
        if config.process:
            _make_cwd(sys, root_fd, config.process.cwd)
        if not _dev_is_bound(config):
            devices.create_devices(sys, root_fd, devices.nodes_for(config.linux.devices),
                                   in_user_namespace)
            devices.create_symlinks(sys, root_fd)
        for entry in entries:
            mounts.finish_entry(sys, entry)
    finally:
        os.close(root_fd)
        for entry in entries:
            entry.close()


def _make_cwd(sys, root_fd, cwd):
    try:
        os.close(inroot.make_in(sys, root_fd, cwd, "dir"))
    except OSError as exc:
        raise ExecError(f"make cwd {cwd}: {errno_text(exc.errno)}") from None


def _others_go_under(mount, later_mounts):
    """Whether later mounts, or the devices pyoci makes, go below MOUNT: it is
    then made writable and turned read-only once they exist, as runc does
    for a read-only /dev."""
    destination = os.path.normpath(mount.destination)
    if destination == "/dev":
        return True
    return any(is_below(below, destination) and below != destination
               for below in (os.path.normpath(later.destination) for later in later_mounts))


def enter(sys, rootfs, no_pivot):
    """Make ROOTFS the root: pivot_root, or MS_MOVE + chroot with --no-pivot."""
    try:
        if no_pivot:
            _detach_host_proc_and_sys(sys, rootfs)
            os.chdir(rootfs)
            sys.mount(rootfs, "/", None, MS_MOVE)
            os.chroot(".")
        else:
            _pivot(sys, rootfs)
        os.chdir("/")
    except OSError as exc:
        raise ExecError(f"pivot_root {rootfs}: {errno_text(exc.errno)}") from None


def _detach_host_proc_and_sys(sys, rootfs):
    """Without pivot_root the host's mounts stay in our mount table, below the
    chroot. An unmasked procfs or sysfs there would let the container mount a
    fresh, unmasked one (the kernel allows that while a fully visible one
    exists): detach them, or cover one that cannot be detached."""
    detached = []
    for point, fs_type, _ in procfs.mount_table():
        if fs_type not in ("proc", "sysfs") or is_below(point, rootfs):
            continue
        if any(is_below(point, done) for done in detached):
            continue
        try:
            sys.umount2(point, MNT_DETACH)
        except OSError:
            sys.mount("tmpfs", point, "tmpfs", MS_RDONLY, "size=0")
        detached.append(point)


def is_below(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def chroot(rootfs):
    """The root for a container that shares the host's mount namespace."""
    try:
        os.chroot(rootfs)
        os.chdir("/")
    except OSError as exc:
        raise ExecError(f"chroot {rootfs}: {errno_text(exc.errno)}") from None


def _pivot(sys, rootfs):
    # pivot_root(".", ".") stacks the old root under the new one; unmount it
    # from there without needing a directory for it in the image.
    old_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        sys.pivot_root(".", ".")
        os.fchdir(old_root)
        sys.mount(None, ".", None, MS_SLAVE | MS_REC)
        sys.umount2(".", MNT_DETACH)
    finally:
        os.close(old_root)
        os.close(new_root)


def finish(sys, config):
    """After pivot_root and sysctl: lock down paths, then the root itself."""
    propagation = config.linux.rootfs_propagation
    if propagation:
        _mount_or_fail(sys, None, "/", None, mounts.propagation_flag(propagation),
                       "set rootfs propagation")
    root_fd = inroot.open_root("/")
    try:
        for path in config.linux.readonly_paths:
            _readonly_path(sys, root_fd, path)
        _mask_paths(sys, root_fd, config.linux.masked_paths)
    finally:
        os.close(root_fd)
    if config.root_readonly:
        try:
            remount_bind(sys, "/", MS_RDONLY | MS_REC)
        except OSError as exc:
            raise ExecError(f"remount / read-only: {errno_text(exc.errno)}") from None


def _at_place(sys, root_fd, path, what, body):
    """BODY(fd) with PATH open inside the root, if it exists; an OSError is
    one line saying WHAT failed."""
    try:
        place = inroot.open_in(sys, root_fd, path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ExecError(f"{what}: {errno_text(exc.errno)}") from None
    try:
        body(place)
    except OSError as exc:
        raise ExecError(f"{what}: {errno_text(exc.errno)}") from None
    finally:
        os.close(place)


def _readonly_path(sys, root_fd, path):
    def bind_read_only(place):
        sys.mount(inroot.fd_path(place), inroot.fd_path(place), None, MS_BIND | MS_REC)
        bound = inroot.reopen_mounted(sys, root_fd, path, place)
        try:
            remount_bind(sys, inroot.fd_path(bound), MS_RDONLY | MS_REC)
        finally:
            os.close(bound)
    _at_place(sys, root_fd, path, f"make {path} read-only", bind_read_only)


def _mask_paths(sys, root_fd, paths):
    """/dev/null over each file; over each directory, one empty read-only
    tmpfs shared by all of them (as runc: one superblock, not one each)."""
    empty_dir = null = None

    def mask(path, place):
        nonlocal empty_dir, null
        if stat.S_ISDIR(os.fstat(place).st_mode):
            if empty_dir is None:
                sys.mount("tmpfs", inroot.fd_path(place), "tmpfs", MS_RDONLY, "size=0")
                empty_dir = inroot.reopen_mounted(sys, root_fd, path, place)
                return
            copy = sys.open_tree("", sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | sc.AT_EMPTY_PATH,
                                 dirfd=empty_dir)
            try:
                sys.move_mount_fd(copy, inroot.fd_path(place))
            finally:
                os.close(copy)
        else:
            if null is None:
                null = _open_null(sys, root_fd)
            sys.mount(inroot.fd_path(null), inroot.fd_path(place), None, MS_BIND)
    try:
        for path in paths:
            _refuse_link_to_kernel_files(path)
            _at_place(sys, root_fd, path, f"mask {path}", lambda place: mask(path, place))
    finally:
        for fd in (empty_dir, null):
            if fd is not None:
                os.close(fd)


def _open_null(sys, root_fd):
    """The container's /dev/null, which must be the null device: a link or
    a file put in its place would bind something else over masked paths
    (CVE-2025-31133)."""
    null = inroot.open_in(sys, root_fd, "/dev/null")
    if not _is_null(null):
        os.close(null)
        raise ExecError("mask: /dev/null is not the null device (char 1:3): refusing to "
                        "bind it over masked paths")
    return null


def reopen_dev_null():
    """As runc, after entering the root: stdio that is a null device (the
    host's /dev/null an engine gave) becomes the container's own /dev/null.
    CRIU cannot dump an fd of a mount outside the container."""
    targets = [fd for fd in range(3) if _is_null(fd)]
    if not targets:
        return
    try:
        # Judged before it is opened for real: opening another device may act.
        place = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # none in the root (or a link): stdio stays as given
    try:
        if not _is_null(place):
            return
        null = os.open(inroot.fd_path(place), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    finally:
        os.close(place)
    for fd in targets:
        os.dup2(null, fd)
    os.close(null)


def _is_null(fd):
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3)


def _refuse_link_to_kernel_files(path):
    """A masked path that is a link into /proc or /sys would mask something
    other than what the config names, or nothing at all."""
    if not os.path.islink(path):
        return
    target = os.path.realpath(path)
    if any(is_below(target, kernel) for kernel in ("/proc", "/sys")):
        raise ExecError(f"mask {path}: is a symbolic link to {target}, "
                        "which must not be masked through a link")


def _dev_is_bound(config):
    """A bind-mounted /dev is the engine's choice: leave its nodes alone."""
    return any(m.destination == "/dev" and mounts.MountOptions(m.options).is_bind
               for m in config.mounts)


def _mount_or_fail(sys, source, target, fstype, flags, what):
    try:
        sys.mount(source, target, fstype, flags)
    except OSError as exc:
        raise ExecError(f"{what}: {errno_text(exc.errno)}") from None
