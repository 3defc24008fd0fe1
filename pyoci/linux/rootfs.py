"""Building the container's root filesystem in its mount namespace.

``prepare`` runs before the createRuntime hooks (mounts, devices, while the
host is still visible); ``enter`` does pivot_root; ``finish`` applies what
needs the container's own /proc (readonly and masked paths, readonly root).
"""
import os

from pyoci.errors import ExecError, errno_text
from pyoci.linux import devices, mounts
from pyoci.linux.mounts import (MNT_DETACH, MS_BIND, MS_MOVE, MS_PRIVATE, MS_RDONLY,
                                MS_REC, MS_SLAVE, remount_bind, secure_join)


def prepare(sys, config, bundle, cgroup_mounter, in_user_namespace):
    rootfs = config.root_path
    propagation = config.linux.rootfs_propagation
    # Nothing done in here may propagate back to the host.
    root_flag = mounts.propagation_flag(propagation) if propagation else MS_SLAVE | MS_REC
    _mount_or_fail(sys, None, "/", None, root_flag, "set propagation of /")
    _make_parent_private(sys, rootfs)
    _mount_or_fail(sys, rootfs, rootfs, "bind", MS_BIND | MS_REC, "bind rootfs")
    for mount in config.mounts:
        mounts.mount_entry(sys, rootfs, bundle, mount, cgroup_mounter)
    if config.process:
        os.makedirs(secure_join(rootfs, config.process.cwd), 0o755, exist_ok=True)
    if not _dev_is_bound(config):
        devices.create_devices(sys, rootfs, devices.nodes_for(config.linux.devices),
                               in_user_namespace)
        devices.create_symlinks(rootfs)


def enter(sys, rootfs, no_pivot):
    """Make ROOTFS the root: pivot_root, or MS_MOVE + chroot with --no-pivot."""
    try:
        if no_pivot:
            os.chdir(rootfs)
            sys.mount(rootfs, "/", None, MS_MOVE)
            os.chroot(".")
        else:
            _pivot(sys, rootfs)
        os.chdir("/")
    except OSError as exc:
        raise ExecError(f"pivot_root {rootfs}: {errno_text(exc.errno)}") from None


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
    for path in config.linux.readonly_paths:
        _readonly_path(sys, path)
    for path in config.linux.masked_paths:
        _mask_path(sys, path)
    if config.root_readonly:
        try:
            remount_bind(sys, "/", MS_RDONLY | MS_REC)
        except OSError as exc:
            raise ExecError(f"remount / read-only: {errno_text(exc.errno)}") from None


def _readonly_path(sys, path):
    if not os.path.lexists(path):
        return
    try:
        sys.mount(path, path, None, MS_BIND | MS_REC)
        remount_bind(sys, path, MS_RDONLY | MS_REC)
    except OSError as exc:
        raise ExecError(f"make {path} read-only: {errno_text(exc.errno)}") from None


def _mask_path(sys, path):
    try:
        if os.path.isdir(path):
            sys.mount("tmpfs", path, "tmpfs", MS_RDONLY)
        elif os.path.lexists(path):
            sys.mount("/dev/null", path, None, MS_BIND)
    except OSError as exc:
        raise ExecError(f"mask {path}: {errno_text(exc.errno)}") from None


def _make_parent_private(sys, rootfs):
    """pivot_root refuses a new root whose parent mount is shared."""
    mount_point = _mount_point_of(rootfs)
    _mount_or_fail(sys, None, mount_point, None, MS_PRIVATE, f"make {mount_point} private")


def _mount_point_of(path):
    """The mount point that contains PATH, from our mountinfo."""
    best = "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best = point
    return best


def _dev_is_bound(config):
    """A bind-mounted /dev is the engine's choice: leave its nodes alone."""
    return any(m.destination == "/dev" and mounts.MountOptions(m.options).is_bind
               for m in config.mounts)


def _mount_or_fail(sys, source, target, fstype, flags, what):
    try:
        sys.mount(source, target, fstype, flags)
    except OSError as exc:
        raise ExecError(f"{what}: {errno_text(exc.errno)}") from None
