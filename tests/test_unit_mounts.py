"""pyoci.linux.mounts: option parsing, rootfsPropagation; and
pyoci.linux.inroot's secure_join (where a kernel has no openat2).

secure_join is checked three ways: hand-built trees with known answers,
a hypothesis property (the result never leaves the root, whatever the
symlinks and '..' do), and, where the kernel offers openat2(RESOLVE_IN_ROOT),
the kernel itself as the oracle for paths that exist.
"""
import ctypes
import os
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from pyoci.errors import ConfigError, ExecError
from pyoci.linux import syscalls as sc
from pyoci.linux.mounts import (FLAG_OPTIONS, MS_BIND, MS_NOATIME, MS_NODEV, MS_NOEXEC,
                                MS_NOSUID, MS_NOSYMFOLLOW, MS_PRIVATE, MS_RDONLY, MS_REC,
                                MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME,
                                MS_UNBINDABLE, PROPAGATION_OPTIONS, MountOptions,
                                bind_remount_flags, propagation_flag)
from pyoci.linux.inroot import secure_join


# ---------------------------------------------------------------- MountOptions
class TestMountOptions:
    def test_empty(self):
        options = MountOptions([])
        assert options.flags == 0
        assert options.propagation == []
        assert options.data == ""
        assert options.tmpcopyup is False
        assert options.is_bind is False

    def test_ro_then_rw_is_not_read_only(self):
        assert not MountOptions(["ro", "rw"]).flags & MS_RDONLY

    def test_rw_then_ro_is_read_only(self):
        assert MountOptions(["rw", "ro"]).flags & MS_RDONLY

    def test_clearing_options_only_clear_their_own_bit(self):
        options = MountOptions(["nosuid", "nodev", "noexec", "ro", "dev"])
        assert options.flags == MS_NOSUID | MS_NOEXEC | MS_RDONLY

    def test_suid_exec_clear_what_nosuid_noexec_set(self):
        assert MountOptions(["nosuid", "noexec", "suid", "exec"]).flags == 0

    def test_strictatime_relatime_are_independent_bits(self):
        options = MountOptions(["relatime", "strictatime"])
        assert options.flags == MS_RELATIME | MS_STRICTATIME
        assert MountOptions(["relatime", "norelatime"]).flags == 0

    def test_defaults_changes_nothing(self):
        assert MountOptions(["defaults"]).flags == 0
        assert MountOptions(["ro", "defaults"]).flags == MS_RDONLY

    def test_bind_and_rbind(self):
        assert MountOptions(["bind"]).flags == MS_BIND
        assert MountOptions(["bind"]).is_bind
        assert MountOptions(["rbind"]).flags == MS_BIND | MS_REC
        assert MountOptions(["rbind", "ro"]).is_bind

    def test_remount(self):
        assert MountOptions(["remount", "ro"]).flags == MS_REMOUNT | MS_RDONLY

    def test_propagation_collected_in_order_not_in_flags(self):
        options = MountOptions(["rprivate", "ro", "shared", "rslave", "unbindable"])
        assert options.propagation == [MS_PRIVATE | MS_REC, MS_SHARED,
                                       MS_SLAVE | MS_REC, MS_UNBINDABLE]
        assert options.flags == MS_RDONLY

    def test_unknown_options_become_data_joined_by_commas(self):
        options = MountOptions(["nosuid", "mode=755", "size=65536k", "ro", "uid=5"])
        assert options.data == "mode=755,size=65536k,uid=5"
        assert options.flags == MS_NOSUID | MS_RDONLY

    def test_tmpcopyup_is_not_data_nor_flag(self):
        options = MountOptions(["tmpcopyup", "mode=1777"])
        assert options.tmpcopyup is True
        assert options.data == "mode=1777"
        assert options.flags == 0

    def test_default_spec_dev_pts(self):
        options = MountOptions(["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                                "mode=0620", "gid=5"])
        assert options.flags == MS_NOSUID | MS_NOEXEC
        assert options.data == "newinstance,ptmxmode=0666,mode=0620,gid=5"

    def test_every_known_option_is_a_flag_or_propagation(self):
        assert not set(FLAG_OPTIONS) & set(PROPAGATION_OPTIONS)
        for name in FLAG_OPTIONS:
            assert MountOptions([name]).data == ""
        for name in PROPAGATION_OPTIONS:
            options = MountOptions([name])
            assert options.data == "" and options.flags == 0 and len(options.propagation) == 1

    @settings(database=None, max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(sorted(FLAG_OPTIONS) + sorted(PROPAGATION_OPTIONS)
                                    + ["tmpcopyup", "mode=755", "size=1k", "x-foo", "uid=0"]),
                    max_size=12))
    def test_last_option_touching_a_bit_decides_it(self, names):
        """Independent of how MountOptions folds: per bit, the last option
        whose flag mask includes the bit decides whether it is set."""
        options = MountOptions(names)
        for bit in range(32):
            mask = 1 << bit
            expected = False
            for name in names:
                if name in FLAG_OPTIONS and FLAG_OPTIONS[name][1] & mask:
                    expected = not FLAG_OPTIONS[name][0]
            assert bool(options.flags & mask) == expected, (names, bit)
        assert options.propagation == [PROPAGATION_OPTIONS[n] for n in names
                                       if n in PROPAGATION_OPTIONS]
        assert options.data == ",".join(n for n in names if n not in FLAG_OPTIONS
                                        and n not in PROPAGATION_OPTIONS and n != "tmpcopyup")
        assert options.tmpcopyup == ("tmpcopyup" in names)


class TestRecursiveOptions:
    def test_set_and_clear_fold_in_order(self):
        options = MountOptions(["rro", "rnosuid", "rrw"])
        assert options.recursive_set == sc.MOUNT_ATTR_NOSUID
        assert options.recursive_clear == sc.MOUNT_ATTR_RDONLY
        assert options.flags == 0 and options.data == ""

    def test_an_atime_mode_replaces_the_whole_field(self):
        """mount_setattr takes an atime mode only with the field cleared first."""
        options = MountOptions(["rnoatime", "rstrictatime"])
        assert options.recursive_set == sc.MOUNT_ATTR_STRICTATIME
        assert options.recursive_clear == sc.MOUNT_ATTR__ATIME
        assert MountOptions(["ratime"]).recursive_set == sc.MOUNT_ATTR_RELATIME
        assert MountOptions(["ratime"]).recursive_clear == sc.MOUNT_ATTR__ATIME

    def test_idmap_options_are_not_mount_data(self):
        assert MountOptions(["rbind", "ridmap"]).idmap == "ridmap"
        assert MountOptions(["idmap"]).data == ""


class TestBindRemountFlags:
    SOURCE = MS_RDONLY | MS_NODEV | MS_NOEXEC | MS_NOSYMFOLLOW | MS_NOATIME

    def flags(self, *names):
        options = MountOptions(["rbind", *names])
        return bind_remount_flags(options.flags, options.cleared, self.SOURCE)

    def test_no_flag_named_means_no_remount(self):
        assert self.flags() is None
        assert self.flags("rprivate") is None

    def test_named_flags_are_added_to_the_sources(self):
        assert self.flags("nosuid") == self.SOURCE | MS_NOSUID

    def test_explicit_clears_clear_even_a_sources_flag(self):
        assert self.flags("rw") == self.SOURCE & ~MS_RDONLY
        assert self.flags("symfollow", "exec") == self.SOURCE & ~(MS_NOSYMFOLLOW | MS_NOEXEC)

    def test_an_atime_option_replaces_the_sources_mode(self):
        assert self.flags("relatime") == (self.SOURCE & ~MS_NOATIME) | MS_RELATIME


class TestPropagationFlag:
    @pytest.mark.parametrize("name,flag", [
        ("private", MS_PRIVATE), ("rprivate", MS_PRIVATE | MS_REC),
        ("shared", MS_SHARED), ("rshared", MS_SHARED | MS_REC),
        ("slave", MS_SLAVE), ("rslave", MS_SLAVE | MS_REC),
        ("unbindable", MS_UNBINDABLE), ("runbindable", MS_UNBINDABLE | MS_REC),
    ])
    def test_known(self, name, flag):
        assert propagation_flag(name) == flag

    @pytest.mark.parametrize("name", ["", "bogus", "PRIVATE", "ro", "bind", "rprivate "])
    def test_unknown_is_one_line_config_error(self, name):
        with pytest.raises(ConfigError) as info:
            propagation_flag(name)
        message = str(info.value)
        assert message.startswith("config.json: linux.rootfsPropagation: ")
        assert repr(name) in message
        assert "\n" not in message


# ---------------------------------------------------------------- secure_join
@pytest.fixture
def tree(tmp_path):
    """root/ with dirs, a file, and symlinks of every kind."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "var" / "run").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("x")
    (root / "abs").symlink_to("/usr/lib")               # absolute, inside
    (root / "rel").symlink_to("usr/lib")                # relative
    (root / "usr" / "up").symlink_to("../etc")          # relative with ..
    (root / "escape").symlink_to("../../../../../..")   # tries to leave
    (root / "escape_abs").symlink_to("/../../etc")      # absolute with ..
    (root / "host").symlink_to(str(tmp_path))           # a host path: taken inside root
    (root / "chain1").symlink_to("chain2")
    (root / "chain2").symlink_to("/abs")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "self").symlink_to("self")
    (root / "grow").symlink_to("grow/x")
    (root / "var" / "run" / "lock").symlink_to("../../etc")
    (root / "dangling").symlink_to("/nonexistent/deeper")
    return str(root)


class TestSecureJoin:
    @pytest.mark.parametrize("path,expected", [
        ("", ""),
        ("/", ""),
        ("etc", "etc"),
        ("/etc/passwd", "etc/passwd"),
        ("//etc///passwd/", "etc/passwd"),
        ("./etc/./passwd", "etc/passwd"),
        ("/abs", "usr/lib"),
        ("/abs/x", "usr/lib/x"),
        ("/rel/x", "usr/lib/x"),
        ("/usr/up/passwd", "etc/passwd"),
        ("/escape", ""),
        ("/escape/etc", "etc"),
        ("/escape_abs", "etc"),
        ("/chain1/y", "usr/lib/y"),
        ("/var/run/lock/passwd", "etc/passwd"),
        ("/dangling", "nonexistent/deeper"),
        ("/not/there/yet", "not/there/yet"),
        ("/../../..", ""),
        ("/../../../etc", "etc"),
        ("/usr/../../etc", "etc"),
        ("/abs/../../../..", ""),           # abs -> /usr/lib, then up past the root
        ("/rel/..", "usr"),                 # '..' applies to the link's target
        ("/usr/up/..", ""),
    ])
    def test_resolution(self, tree, path, expected):
        assert secure_join(tree, path) == os.path.join(tree, *expected.split("/") if expected else [])

    def test_host_path_symlink_is_taken_inside_root(self, tree, tmp_path):
        result = secure_join(tree, "/host/etc")
        assert result == os.path.join(tree, *str(tmp_path).strip("/").split("/"), "etc")
        assert result.startswith(tree + os.sep)

    @pytest.mark.parametrize("path", ["/loop1", "/loop2/x", "/self", "/grow", "/etc/../loop1"])
    def test_loops_are_an_error(self, tree, path):
        with pytest.raises(ExecError) as info:
            secure_join(tree, path)
        message = str(info.value)
        assert "too many levels of symbolic links" in message
        assert path in message
        assert "\n" not in message

    def test_long_but_finite_chain_is_fine(self, tmp_path):
        root = tmp_path / "r"
        root.mkdir()
        (root / "target").mkdir()
        (root / "l0").symlink_to("target")
        for i in range(1, 100):
            (root / f"l{i}").symlink_to(f"l{i - 1}")
        assert secure_join(str(root), "/l99") == str(root / "target")

    def test_does_not_create_anything(self, tree):
        before = sorted(os.listdir(tree))
        secure_join(tree, "/a/b/c/../../d")
        assert sorted(os.listdir(tree)) == before


# ------------------------------------------------ secure_join: hypothesis
NAMES = ["a", "b", "c", "d"]
segment = st.sampled_from(NAMES + ["..", ".", ""])
rel_path = st.lists(segment, max_size=6).map("/".join)
link_target = st.one_of(rel_path.map(lambda p: p or "."), rel_path.map(lambda p: "/" + p))
# A tree: a few directories, and links placed anywhere with arbitrary targets.
dir_paths = st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join),
                     max_size=5)
links = st.lists(st.tuples(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join),
                           link_target), max_size=6)
query = st.one_of(rel_path, rel_path.map(lambda p: "/" + p))


def build_tree(root, dirs, symlinks):
    for d in dirs:
        try:
            os.makedirs(os.path.join(root, d), exist_ok=True)
        except OSError:  # a file or link already sits on the way
            pass
    for where, target in symlinks:
        full = os.path.join(root, where)
        try:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            os.symlink(target, full)
        except OSError:
            pass


def _under(path, root):
    return path == root or path.startswith(root + os.sep)


# The kernel as the oracle: openat2(RESOLVE_IN_ROOT) does exactly this resolution.
_SYS_openat2 = 437
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def kernel_resolve_in_root(root, path):
    """The path the kernel opens for PATH inside ROOT; None if it fails or has no openat2."""
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT)
    dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _libc.syscall(_SYS_openat2, dirfd, path.encode() or b".", ctypes.byref(how),
                           ctypes.sizeof(how))
        if fd < 0:
            return None  # ENOENT, ENOTDIR, ELOOP (limit 40), or ENOSYS on old kernels
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    finally:
        os.close(dirfd)


def test_kernel_oracle_works_here(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to("/../d")
    resolved = kernel_resolve_in_root(str(tmp_path), "l")
    if resolved is None:
        pytest.skip("openat2(RESOLVE_IN_ROOT) is not available")
    assert resolved == str(tmp_path / "d")


@settings(database=None, max_examples=120, deadline=None)
@given(dirs=dir_paths, symlinks=links, path=query)
def test_secure_join_never_leaves_root_and_agrees_with_kernel(dirs, symlinks, path):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(os.path.realpath(tmp), "root")
        os.mkdir(root)
        # A decoy beside the root that '..' would reach if it escaped.
        os.mkdir(os.path.join(os.path.dirname(root), "a"))
        build_tree(root, dirs, symlinks)
        expected = kernel_resolve_in_root(root, path)
        try:
            result = secure_join(root, path)
        except ExecError as exc:
            assert "too many levels of symbolic links" in str(exc)
            assert expected is None  # the kernel gives up on a loop too
            return
        # Lexically: only plain names below the root.
        assert _under(result, root)
        rest = os.path.relpath(result, root)
        assert rest == "." or all(part not in ("..", ".", "") for part in rest.split(os.sep))
        # On disk: whatever exists of it resolves below the root too.
        assert _under(os.path.realpath(result), root)
        # Where the whole path exists, the kernel's resolution inside the root is the same.
        if expected is not None:
            assert result == expected
