"""Places inside the container's root, resolved by the kernel and held as fds.

A path resolved inside the rootfs and then handed to mount(2) is a race: a
process that shares the rootfs or a volume can swap a component for a
symlink in between, and the mount lands outside the container, or a
read-only remount on some other mount (CVE-2025-31133 class). So each
place pyoci mounts on, masks or makes nodes in is opened once with
openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) (`..` and absolute links
stay inside, /proc/self/fd links are not followed) and used only through
its fd: mount(2) onto /proc/self/fd/N mounts on exactly what was opened.
A mount made there is reopened and checked to be that mount before any
flag is set on it. Kernels before 5.6 have no openat2: there the path is
resolved by secure_join and checked, once open, to be where it
was resolved to.
"""
import errno
import os
import stat

from pyoci.errors import ExecError, errno_text
from pyoci.linux import procfs

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_LINK_LIMIT = 40  # as the kernel's own limit on links in one lookup


def fd_path(fd):
    """The path mount(2) and friends take for the object open at FD."""
    return f"/proc/self/fd/{fd}"


def open_root(path):
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def open_in(sys, root_fd, path, flags=os.O_PATH):
    """PATH resolved inside the root open at ROOT_FD, open with FLAGS."""
    relative = path.lstrip("/") or "."
    for _ in range(8):  # EAGAIN: a rename raced the lookup of a '..'
        try:
            return sys.openat2(root_fd, relative, flags | os.O_CLOEXEC, 0,
                               RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            return _open_by_secure_join(root_fd, relative, flags)
    raise OSError(errno.EAGAIN, f"{path}: renamed while being resolved, again and again")


def _open_by_secure_join(root_fd, relative, flags):
    root = os.readlink(fd_path(root_fd))
    try:
        resolved = secure_join(root, relative)
    except ExecError:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), relative) from None
    fd = os.open(resolved, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    if os.readlink(fd_path(fd)) != resolved or stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise ExecError(f"{relative}: changed while being resolved inside {root}")
    return fd


def make_in(sys, root_fd, path, kind, flags=os.O_PATH):
    """PATH inside the root, made first if missing (its parents as
    directories, itself as KIND: "dir" or "file"), then open."""
    try:
        return open_in(sys, root_fd, path, flags)
    except FileNotFoundError:
        pass
    parent, name = place_in(sys, root_fd, path)
    try:
        _make_at(parent, name, kind)
    finally:
        os.close(parent)
    return open_in(sys, root_fd, path, flags)


def place_in(sys, root_fd, path, _links=0):
    """Where PATH is inside the root, as (its directory, open; a name in
    it that is not a link): the directories on the way made if missing,
    and a link at the end followed, dangling or not, as a lookup would."""
    parent, name = parent_in(sys, root_fd, path)
    try:
        target = os.readlink(name, dir_fd=parent)
    except OSError:  # missing, or not a link
        return parent, name
    os.close(parent)
    if _links >= _LINK_LIMIT:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    return place_in(sys, root_fd, os.path.join(_split(path)[0], target), _links + 1)


def parent_in(sys, root_fd, path):
    """(PATH's directory inside the root, made if missing and open; PATH's last name)."""
    parent_path, name = _split(path)
    return make_in(sys, root_fd, parent_path, "dir", os.O_PATH | os.O_DIRECTORY), name


def make_leaf_in(sys, root_fd, path, kind):
    """PATH made if missing as make_in does, but its last component itself
    open, never followed (O_PATH | O_NOFOLLOW): for places that must not be
    a link at all, which the caller then refuses."""
    if not _split(path)[1]:
        return open_in(sys, root_fd, "/")
    parent, name = parent_in(sys, root_fd, path)
    try:
        return make_open_at(parent, name, kind)
    finally:
        os.close(parent)


def _split(path):
    parent_path, name = os.path.split(path.rstrip("/"))
    return parent_path or "/", name


def _make_at(parent, name, kind):
    """Make NAME in PARENT as KIND, unless something is there already."""
    try:
        if kind == "dir":
            os.mkdir(name, 0o755, dir_fd=parent)
        else:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o755, dir_fd=parent))
    except FileExistsError:
        pass


def make_open_at(parent, name, kind):
    """NAME in PARENT, made as KIND if missing, open itself (O_PATH,
    never followed if it is a link)."""
    _make_at(parent, name, kind)
    return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)


def reopen_mounted(sys, root_fd, path, place_fd):
    """The mount just made on PLACE_FD, by opening PATH again: refused
    unless it is a mount stacked right on PLACE_FD's mount (so nobody
    moved or swapped PATH after the mount was made)."""
    try:
        fd = open_in(sys, root_fd, path)
    except OSError as exc:
        raise ExecError(f"{path}: cannot be opened again once mounted on: "
                        f"{errno_text(exc.errno)}") from None
    new, under = procfs.mount_id(fd), procfs.mount_id(place_fd)
    if new == under or procfs.mount_parent(new) != under:
        os.close(fd)
        raise ExecError(f"{path}: is no longer the mount pyoci just made there "
                        "(moved or swapped for a link while it was mounted)")
    return fd


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
