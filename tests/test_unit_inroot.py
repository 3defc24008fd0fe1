"""pyoci.linux.inroot: places inside a root, resolved by the kernel
(openat2 RESOLVE_IN_ROOT) or, where it has none (a seam that answers
ENOSYS), by secure_join and a check of what was opened. Real trees on
the real kernel; a decoy beside the root catches any escape."""
import errno
import os

import pytest

from pyoci.linux import inroot
from pyoci.linux.syscalls import syscalls


class NoOpenat2:
    """A kernel before 5.6."""
    def openat2(self, *args):
        raise OSError(errno.ENOSYS, "openat2: function not implemented")


KERNELS = {"openat2": syscalls(), "no openat2": NoOpenat2()}


@pytest.fixture
def world(tmp_path):
    """root/ full of links out of it, and host/ beside it that they name."""
    root, host = tmp_path / "root", tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    host.mkdir()
    (host / "passwd").write_text("host's")
    (root / "etc" / "passwd").write_text("root's")
    (root / "abs").symlink_to(host)                      # the host's path: taken inside
    (root / "up").symlink_to("../" * 10 + str(host).lstrip("/"))
    (root / "etc" / "alias").symlink_to("/etc")
    (root / "dangling").symlink_to("/made/here")
    (root / "loop").symlink_to("loop")
    return root, host


def opened(fd):
    try:
        return os.readlink(inroot.fd_path(fd))
    finally:
        os.close(fd)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("path,inside", [
    ("/etc/passwd", "etc/passwd"), ("/etc/alias/passwd", "etc/passwd"),
    ("/../../etc/passwd", "etc/passwd"), ("etc/../../../etc", "etc"), ("/", ""),
])
def test_open_in_stays_inside(world, kernel, path, inside):
    root, _ = world
    root_fd = inroot.open_root(root)
    try:
        assert opened(inroot.open_in(KERNELS[kernel], root_fd, path)) == \
            os.path.join(root, inside).rstrip("/")
    finally:
        os.close(root_fd)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("path", ["/abs/passwd", "/up/passwd", "/loop"])
def test_links_out_of_the_root_find_nothing_of_the_hosts(world, kernel, path):
    root, _ = world
    root_fd = inroot.open_root(root)
    try:
        with pytest.raises(OSError) as info:
            os.close(inroot.open_in(KERNELS[kernel], root_fd, path))
        assert info.value.errno in (errno.ENOENT, errno.ELOOP)
    finally:
        os.close(root_fd)


def test_magic_links_are_not_followed():
    """A procfs mounted inside the root (an earlier mount entry) offers
    /proc/self/cwd and fd links that jump anywhere: refused. The host's
    root stands in for such a root here."""
    root_fd = inroot.open_root("/")
    try:
        with pytest.raises(OSError) as info:
            os.close(inroot.open_in(syscalls(), root_fd, "/proc/self/cwd"))
        assert info.value.errno == errno.ELOOP
    finally:
        os.close(root_fd)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("kind", ["dir", "file"])
def test_make_in_makes_inside_only(world, kernel, kind):
    root, host = world
    root_fd = inroot.open_root(root)
    try:
        made = opened(inroot.make_in(KERNELS[kernel], root_fd, "/abs/new/place", kind))
        assert made == os.path.join(root, str(host).lstrip("/"), "new", "place")
        assert (os.path.isdir if kind == "dir" else os.path.isfile)(made)
        # A dangling link is made where it points, inside.
        assert opened(inroot.make_in(KERNELS[kernel], root_fd, "/dangling", kind)) == \
            os.path.join(root, "made", "here")
    finally:
        os.close(root_fd)
    assert sorted(os.listdir(host)) == ["passwd"]


def test_place_in_follows_a_final_link_and_make_leaf_in_does_not(world):
    root, _ = world
    sys = syscalls()
    root_fd = inroot.open_root(root)
    try:
        parent, name = inroot.place_in(sys, root_fd, "/dangling")
        assert (opened(parent), name) == (os.path.join(root, "made"), "here")
        leaf = inroot.make_leaf_in(sys, root_fd, "/dangling", "dir")
        assert opened(leaf) == os.path.join(root, "dangling")  # the link itself
    finally:
        os.close(root_fd)


def test_fallback_refuses_a_path_changed_after_it_was_resolved(world, monkeypatch):
    """Without openat2, a swap between secure_join and open is caught."""
    root, host = world
    root_fd = inroot.open_root(root)
    real_join = inroot.secure_join

    def join_then_swap(base, path):
        resolved = real_join(base, path)
        os.rename(root / "etc", root / "etc.real")
        (root / "etc").symlink_to("etc.real")
        return resolved
    monkeypatch.setattr(inroot, "secure_join", join_then_swap)
    try:
        with pytest.raises(Exception) as info:
            os.close(inroot.open_in(NoOpenat2(), root_fd, "/etc/passwd"))
        assert "changed while being resolved" in str(info.value)
    finally:
        os.close(root_fd)
