"""The rootfs mounts containerd passes in Create (its snapshotter's:
overlay, or a bind), made on <bundle>/rootfs as runc's shim makes them."""
import os

from pyoci.shim.ttrpc import INVALID_ARGUMENT, TtrpcError


def mount_all(mounts, target):
    """Mount each of MOUNTS (containerd.types.Mount) on TARGET, in order.
    True if anything was mounted (and so must be unmounted at Delete)."""
    if not mounts:
        return False
    from pyoci.linux import mounts as oci_mounts, syscalls
    sys = syscalls.syscalls()
    os.makedirs(target, mode=0o711, exist_ok=True)
    done = 0
    try:
        for mount in mounts:
            options = oci_mounts.MountOptions(mount["options"])
            if options.propagation or options.recursive_set or options.recursive_clear or \
                    options.idmap or options.tmpcopyup:
                raise TtrpcError(INVALID_ARGUMENT, f"rootfs mount {mount['type']} "
                                 f"{mount['source']}: options {mount['options']} are not "
                                 "taken for a rootfs")
            try:
                sys.mount(mount["source"], target, mount["type"], options.flags,
                          options.data or None)
            except OSError as exc:
                raise TtrpcError(2, f"rootfs mount {mount['type']} {mount['source']} on {target}: "
                                 f"{exc.strerror.lower()}") from None
            done += 1
            if options.is_bind and options.flags & oci_mounts.MS_RDONLY:
                sys.mount(None, target, None, options.flags | oci_mounts.MS_REMOUNT)
    except BaseException:
        if done:
            unmount(target)
        raise
    return True


def unmount(target):
    """Every mount on TARGET, top first; none there is fine."""
    from pyoci.linux import procfs
    mounted = sum(point == target for point, _, _ in procfs.mount_table())
    if not mounted:
        return
    from pyoci.linux import mounts as oci_mounts, syscalls
    sys = syscalls.syscalls()
    for _ in range(mounted):
        sys.umount2(target, oci_mounts.MNT_DETACH)
