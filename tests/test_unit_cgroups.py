"""pyoci.linux.cgroups: where a container's cgroup goes, mode detection from a
fake mountinfo, /proc/PID/cgroup parsing, and the v1/v2 managers working on
a temporary directory tree that stands in for /sys/fs/cgroup."""
import builtins
import os

import pytest
from hypothesis import given, settings, strategies as st

from pyoci.errors import ExecError
from pyoci.linux import cgroups, procfs
from pyoci.linux.cgroups import (HYBRID, LEGACY, UNIFIED, UNIFIED_KEY, Cgroups, container_cgroup,
                                 detect_mode, from_paths, from_record)
from pyoci.linux.cgroups import v1, v2


# ------------------------------------------------------------ container_cgroup
class TestContainerCgroup:
    @pytest.mark.parametrize("cgroups_path,base,expected", [
        ("/machine/ctr", "/user.slice", "/machine/ctr"),          # absolute: from the root
        ("/a/../b//c/", "/base", "/b/c"),
        ("/", "/base", "/"),
        ("pods/ctr", "/init.scope", "/init.scope/pods/ctr"),     # relative: below base
        ("ctr", "/", "/ctr"),
        ("../escape", "/a/b", "/a/escape"),
        ("../../../../x", "/a", "/x"),
        (None, "/init.scope", "/init.scope/myid"),                # absent: the id
        ("", "/", "/myid"),
    ])
    def test_placement(self, cgroups_path, base, expected):
        assert container_cgroup(cgroups_path, "myid", base) == expected

    @settings(database=None, max_examples=200)
    @given(path=st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", "..", ".", ""]),
                                              max_size=6).map("/".join)),
           base=st.lists(st.sampled_from(["x", "y"]), max_size=3).map(lambda p: "/" + "/".join(p)))
    def test_always_normalized_and_absolute(self, path, base):
        result = container_cgroup(path, "cid", base)
        assert result.startswith("/")
        assert os.path.normpath(result) == result
        assert ".." not in result.split("/")


# --------------------------------------------------------------- mountinfo
def mi(mount_point, fs_type, super_options="rw", optional="shared:1", source=None):
    """One /proc/self/mountinfo line."""
    optional = f" {optional}" if optional else ""
    return (f"30 23 0:26 / {mount_point} rw,nosuid,nodev,noexec,relatime{optional} - "
            f"{fs_type} {source or fs_type} {super_options}\n")


BASE_LINES = [
    mi("/", "ext4", "rw,errors=remount-ro", source="/dev/vda1"),
    mi("/proc", "proc"),
    mi("/sys", "sysfs"),
]

LEGACY_LINES = BASE_LINES + [
    mi("/sys/fs/cgroup", "tmpfs", "ro,mode=755"),
    mi("/sys/fs/cgroup/systemd", "cgroup", "rw,xattr,name=systemd"),
    mi("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
    mi("/sys/fs/cgroup/memory", "cgroup", "rw,memory", optional=""),
    mi("/sys/fs/cgroup/cpuset", "cgroup", "rw,cpuset"),
    mi("/sys/fs/cgroup/net_cls,net_prio", "cgroup", "rw,net_cls,net_prio"),
]
HYBRID_LINES = LEGACY_LINES + [mi("/sys/fs/cgroup/unified", "cgroup2", "rw,nsdelegate")]
UNIFIED_LINES = BASE_LINES + [mi("/sys/fs/cgroup", "cgroup2", "rw,nsdelegate,memory_recursiveprot")]


@pytest.fixture
def mountinfo(tmp_path):
    def write(lines):
        path = tmp_path / "mountinfo"
        path.write_text("".join(lines))
        return str(path)
    return write


class TestDetectMode:
    def test_unified(self, mountinfo):
        assert detect_mode("/sys/fs/cgroup", mountinfo(UNIFIED_LINES)) == UNIFIED

    def test_hybrid(self, mountinfo):
        assert detect_mode("/sys/fs/cgroup", mountinfo(HYBRID_LINES)) == HYBRID

    def test_legacy(self, mountinfo):
        assert detect_mode("/sys/fs/cgroup", mountinfo(LEGACY_LINES)) == LEGACY

    def test_nothing_mounted_is_legacy(self, mountinfo):
        assert detect_mode("/sys/fs/cgroup", mountinfo(BASE_LINES)) == LEGACY

    def test_overmount_last_wins(self, mountinfo):
        # cgroup2 mounted over an earlier tmpfs: unified.
        lines = BASE_LINES + [mi("/sys/fs/cgroup", "tmpfs"), mi("/sys/fs/cgroup", "cgroup2")]
        assert detect_mode("/sys/fs/cgroup", mountinfo(lines)) == UNIFIED
        # tmpfs mounted over the cgroup2: the cgroup2 is hidden.
        lines = BASE_LINES + [mi("/sys/fs/cgroup", "cgroup2"), mi("/sys/fs/cgroup", "tmpfs")]
        assert detect_mode("/sys/fs/cgroup", mountinfo(lines)) == LEGACY

    def test_several_optional_fields(self, mountinfo):
        lines = BASE_LINES + [mi("/sys/fs/cgroup", "cgroup2", optional="shared:4 master:1")]
        assert detect_mode("/sys/fs/cgroup", mountinfo(lines)) == UNIFIED

    def test_other_root(self, mountinfo):
        lines = UNIFIED_LINES + [mi("/mnt/cg", "tmpfs"), mi("/mnt/cg/unified", "cgroup2")]
        assert detect_mode("/mnt/cg", mountinfo(lines)) == HYBRID
        assert detect_mode("/sys/fs/cgroup", mountinfo(lines)) == UNIFIED

    def test_real_host(self):
        assert detect_mode() in (LEGACY, HYBRID, UNIFIED)


# ---------------------------------------------------------- faked /proc files
@pytest.fixture
def fake_files(monkeypatch, tmp_path):
    """Redirect the cgroups modules' open() of fixed /proc paths to files we
    write (and procfs', whose mount_table reads mountinfo for them)."""
    redirects = {}

    def fake_open(path, *args, **kwargs):
        return builtins.open(redirects.get(path, path), *args, **kwargs)

    for module in (cgroups, v1, v2, procfs):
        monkeypatch.setattr(module, "open", fake_open, raising=False)

    def redirect(real_path, content):
        path = tmp_path / ("fake" + real_path.replace("/", "_"))
        path.write_text(content)
        redirects[real_path] = str(path)
    return redirect


V1_PROC_CGROUP = """\
12:cpuset:/
11:memory:/system.slice/x.service
10:net_cls,net_prio:/
4:cpu,cpuacct:/
1:name=systemd:/init.scope
0::/init.scope
"""


class TestOwnCgroups:
    def test_v2(self, fake_files):
        fake_files("/proc/1/cgroup", "0::/init.scope\n")
        assert cgroups.own_cgroups("1") == {UNIFIED_KEY: "/init.scope"}

    def test_v1_and_hybrid(self, fake_files):
        fake_files("/proc/self/cgroup", V1_PROC_CGROUP)
        assert cgroups.own_cgroups() == {
            "cpuset": "/", "memory": "/system.slice/x.service", "net_cls": "/",
            "net_prio": "/", "cpu": "/", "cpuacct": "/", "name=systemd": "/init.scope",
            UNIFIED_KEY: "/init.scope"}

    def test_path_with_colons(self, fake_files):
        fake_files("/proc/7/cgroup", "0::/a:b:c\n")
        assert cgroups.own_cgroups(7) == {UNIFIED_KEY: "/a:b:c"}

    def test_real_self(self):
        own = cgroups.own_cgroups()
        assert own and all(path.startswith("/") for path in own.values())


# ------------------------------------------------------------- v1 hierarchies
def v1_tree(tmp_path):
    root = tmp_path / "cgroup"
    for name in ("systemd", "cpu,cpuacct", "memory", "cpuset", "net_cls,net_prio", "unified"):
        (root / name).mkdir(parents=True)
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    lines = [line.replace("/sys/fs/cgroup", str(root)) for line in HYBRID_LINES]
    return root, "".join(lines)


class TestV1Hierarchies:
    def test_keys_are_each_controller_or_name(self, fake_files, tmp_path):
        root, info = v1_tree(tmp_path)
        fake_files("/proc/self/mountinfo", info)
        assert v1.hierarchies(str(root)) == {
            "name=systemd": f"{root}/systemd", "cpu": f"{root}/cpu,cpuacct",
            "cpuacct": f"{root}/cpu,cpuacct", "memory": f"{root}/memory",
            "cpuset": f"{root}/cpuset", "net_cls": f"{root}/net_cls,net_prio",
            "net_prio": f"{root}/net_cls,net_prio", UNIFIED_KEY: f"{root}/unified"}

    def test_only_below_root(self, fake_files, tmp_path):
        root, info = v1_tree(tmp_path)
        fake_files("/proc/self/mountinfo", info + mi(f"{root}x/memory", "cgroup", "rw,memory"))
        assert f"{root}x/memory" not in v1.hierarchies(str(root)).values()

    def test_for_path_legacy_and_hybrid(self, fake_files, tmp_path):
        root, info = v1_tree(tmp_path)
        fake_files("/proc/self/mountinfo", info)
        fake_files("/proc/self/cgroup", V1_PROC_CGROUP)
        manager = v1.Manager.for_path(str(root), None, "ctr", hybrid=False)
        assert manager.paths == {
            "name=systemd": f"{root}/systemd/init.scope/ctr",
            "cpu": f"{root}/cpu,cpuacct/ctr",
            "cpuacct": f"{root}/cpu,cpuacct/ctr",
            "memory": f"{root}/memory/system.slice/x.service/ctr",
            "cpuset": f"{root}/cpuset/ctr",
            "net_cls": f"{root}/net_cls,net_prio/ctr",
            "net_prio": f"{root}/net_cls,net_prio/ctr"}
        hybrid = v1.Manager.for_path(str(root), "/abs/path", "ctr", hybrid=True)
        assert hybrid.paths[UNIFIED_KEY] == f"{root}/unified/abs/path"
        assert hybrid.paths["memory"] == f"{root}/memory/abs/path"

    def test_manager_for_detects_and_places(self, fake_files, tmp_path):
        root, info = v1_tree(tmp_path)
        fake_files("/proc/self/mountinfo", info)
        fake_files("/proc/self/cgroup", V1_PROC_CGROUP)
        manager = cgroups.manager_for("rel", "ctr", root=str(root))
        assert isinstance(manager, v1.Manager)
        assert manager.paths[UNIFIED_KEY] == f"{root}/unified/init.scope/rel"

    def test_manager_for_unified(self, fake_files, tmp_path):
        root = tmp_path / "cg2"
        root.mkdir()
        fake_files("/proc/self/mountinfo",
                   "".join(line.replace("/sys/fs/cgroup", str(root)) for line in UNIFIED_LINES))
        fake_files("/proc/self/cgroup", "0::/system.slice/x.service\n")
        manager = cgroups.manager_for(None, "ctr", root=str(root))
        assert isinstance(manager, v2.Manager)
        # As runc: beside our own cgroup, which holds processes, not below it.
        assert manager.paths == {UNIFIED_KEY: f"{root}/system.slice/ctr"}
        assert cgroups.manager_for("/machine/ctr", "ctr", root=str(root)).directory == \
            f"{root}/machine/ctr"


# ---------------------------------------------------------------- v1 Manager
class TestV1Manager:
    def test_create_add_destroy(self, tmp_path):
        paths = {"memory": str(tmp_path / "memory" / "a" / "ctr"),
                 "pids": str(tmp_path / "pids" / "ctr")}
        manager = v1.Manager(paths)
        assert manager.paths == paths and manager.paths is not paths
        manager.create()
        manager.create()  # idempotent
        for directory in paths.values():
            assert os.path.isdir(directory)
        manager.add(1234)
        for directory in paths.values():
            with open(os.path.join(directory, "cgroup.procs")) as f:
                assert f.read() == "1234"
        # A real cgroupfs lets rmdir remove a cgroup with its interface files; here we
        # take them out first.
        for directory in paths.values():
            os.unlink(os.path.join(directory, "cgroup.procs"))
        manager.destroy()
        for directory in paths.values():
            assert not os.path.exists(directory)
        assert os.path.isdir(tmp_path / "memory" / "a")  # only the container's own level goes
        manager.destroy()  # already gone is fine

    def test_cpuset_inherits_cpus_and_mems_downwards(self, tmp_path):
        top = tmp_path / "cpuset"
        top.mkdir()
        (top / "cpuset.cpus").write_text("0-3\n")
        (top / "cpuset.mems").write_text("0\n")
        (top / "mid").mkdir()
        (top / "mid" / "cpuset.cpus").write_text("2-3\n")
        (top / "mid" / "cpuset.mems").write_text("1\n")
        leaf = top / "mid" / "a" / "b" / "ctr"
        v1.Manager({"cpuset": str(leaf), "memory": str(tmp_path / "memory" / "ctr")}).create()
        for level in (top / "mid" / "a", top / "mid" / "a" / "b", leaf):
            assert (level / "cpuset.cpus").read_text() == "2-3"
            assert (level / "cpuset.mems").read_text() == "1"
        # The existing levels are untouched.
        assert (top / "cpuset.cpus").read_text() == "0-3\n"
        assert (top / "mid" / "cpuset.cpus").read_text() == "2-3\n"
        assert (tmp_path / "memory" / "ctr").is_dir()

    def test_cpuset_existing_is_left_alone(self, tmp_path):
        top = tmp_path / "cpuset"
        (top / "ctr").mkdir(parents=True)
        (top / "cpuset.cpus").write_text("0\n")
        (top / "cpuset.mems").write_text("0\n")
        v1.Manager({"cpuset": str(top / "ctr")}).create()
        assert os.listdir(top / "ctr") == []

    def test_a_shared_hierarchy_is_one_directory(self, tmp_path):
        shared = tmp_path / "net_cls,net_prio" / "ctr"
        manager = v1.Manager({"net_cls": str(shared), "net_prio": str(shared)})
        assert manager.create() == [str(shared)]
        manager.add(1234)
        assert (shared / "cgroup.procs").read_text() == "1234"
        (shared / "cgroup.procs").unlink()
        manager.destroy([str(shared)])
        assert not shared.exists()

    def test_pids_prefers_the_pids_hierarchy(self, tmp_path):
        for name, content in (("memory", "1\n2\n"), ("pids", "3\n\n4\n")):
            (tmp_path / name).mkdir()
            (tmp_path / name / "cgroup.procs").write_text(content)
        assert v1.Manager({"memory": str(tmp_path / "memory"),
                           "pids": str(tmp_path / "pids")}).pids() == [3, 4]
        assert v1.Manager({"memory": str(tmp_path / "memory")}).pids() == [1, 2]
        assert v1.Manager({"memory": str(tmp_path / "gone")}).pids() == []
        assert v1.Manager({}).pids() == []

    def test_frozen(self, tmp_path):
        freezer = tmp_path / "freezer"
        freezer.mkdir()
        manager = v1.Manager({"freezer": str(freezer), "memory": str(tmp_path)})
        assert manager.frozen() is False  # no freezer.state file
        for content, frozen in (("FROZEN\n", True), ("THAWED\n", False), ("FREEZING\n", False)):
            (freezer / "freezer.state").write_text(content)
            assert manager.frozen() is frozen
        assert v1.Manager({"memory": str(tmp_path)}).frozen() is False


# ---------------------------------------------------------------- v2 Manager
def _refuse_mkdir_in(monkeypatch, refused):
    """mkdir of REFUSED (a cgroup tree not ours) fails with EACCES, as for a
    rootless runtime (root here would be let in)."""
    real = os.makedirs

    def makedirs(path, *args, **kwargs):
        if str(path).startswith(str(refused)):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "makedirs", makedirs)


class TestRootless:
    def test_v1_leaves_out_a_hierarchy_that_refuses_and_only_a_limit_there_fails(
            self, tmp_path, monkeypatch):
        _refuse_mkdir_in(monkeypatch, tmp_path / "pids")
        paths = {"pids": str(tmp_path / "pids" / "ctr"), "memory": str(tmp_path / "memory" / "ctr"),
                 "devices": str(tmp_path / "devices" / "ctr")}
        manager = v1.Manager(paths)
        manager.rootless = manager.may_skip = True
        _refuse_mkdir_in(monkeypatch, tmp_path / "devices")
        manager.create()
        assert list(manager.paths) == ["memory"] and manager.skipped == {"pids", "devices"}
        manager.add(42)
        assert (tmp_path / "memory" / "ctr" / "cgroup.procs").read_text() == "42"
        # Device rules are not enforced rootless; a memory limit is set.
        manager.apply({"devices": [{"allow": False, "access": "rwm"}],
                       "memory": {"limit": 1 << 30}})
        assert (tmp_path / "memory" / "ctr" / "memory.limit_in_bytes").read_text() == \
            str(1 << 30)
        with pytest.raises(ExecError, match="^cannot set pids limit: container could not "
                                            "join or create cgroup$"):
            manager.apply({"pids": {"limit": 5}})

    def test_v1_refusal_is_fatal_with_a_cgroups_path_or_as_root(self, tmp_path, monkeypatch):
        _refuse_mkdir_in(monkeypatch, tmp_path / "pids")
        for rootless, may_skip in ((True, False), (False, False)):
            manager = v1.Manager({"pids": str(tmp_path / "pids" / "ctr")})
            manager.rootless, manager.may_skip = rootless, may_skip
            with pytest.raises(PermissionError):
                manager.create()

    def test_manager_for_skips_only_without_a_cgroups_path(self, fake_files, tmp_path):
        root, info = v1_tree(tmp_path)
        fake_files("/proc/self/mountinfo", info)
        fake_files("/proc/self/cgroup", V1_PROC_CGROUP)
        assert cgroups.manager_for(None, "ctr", root=str(root), rootless=True).may_skip
        assert not cgroups.manager_for("/x", "ctr", root=str(root), rootless=True).may_skip
        assert not cgroups.manager_for(None, "ctr", root=str(root)).may_skip

    def test_v2_goes_without_its_cgroup_unless_limits_need_it(self, tmp_path, monkeypatch):
        (tmp_path / "cgroup.controllers").write_text("memory pids\n")
        _refuse_mkdir_in(monkeypatch, tmp_path / "user.slice")
        manager = v2.Manager(str(tmp_path / "user.slice" / "ctr"), root=str(tmp_path))
        manager.rootless = manager.may_skip = True
        assert manager.create() == [] and manager.paths == {}
        manager.add(42)
        assert manager.pids() == [] and manager.frozen() is False
        manager.apply({"devices": [{"allow": False, "access": "rwm"}]})
        with pytest.raises(ExecError, match="^rootless needs no limits \\+ no cgrouppath when no "
                                            "permission is granted for cgroups: "):
            manager.apply({"pids": {"limit": 5}})

    def test_v2_enables_controllers_only_where_missing(self, tmp_path):
        """In a delegated subtree the ancestors above it are not the user's:
        what is enabled there already is not written again."""
        (tmp_path / "cgroup.controllers").write_text("memory pids\n")
        (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
        (tmp_path / "deleg").mkdir()
        (tmp_path / "deleg" / "cgroup.subtree_control").write_text("")
        (tmp_path / "deleg" / "ctr").mkdir()
        os.chmod(tmp_path / "cgroup.subtree_control", 0o444)
        manager = v2.Manager(str(tmp_path / "deleg" / "ctr"), root=str(tmp_path))
        manager._enable(["pids"])
        assert (tmp_path / "deleg" / "cgroup.subtree_control").read_text() == "+pids"
        assert (tmp_path / "cgroup.subtree_control").read_text() == "memory pids\n"


class TestV2Manager:
    def test_for_path(self, tmp_path):
        manager = v2.Manager.for_path(str(tmp_path), "/a/b")
        assert manager.directory == f"{tmp_path}/a/b"
        assert manager.paths == {UNIFIED_KEY: f"{tmp_path}/a/b"}

    def test_create_add_pids_destroy(self, tmp_path):
        (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
        manager = v2.Manager(str(tmp_path / "x" / "ctr"), root=str(tmp_path))
        assert manager.create() == [manager.directory]
        assert manager.create() == []
        assert os.path.isdir(manager.directory)
        # Every controller enabled from the root down to the parent (one write each
        # into a plain file here: the last one stays).
        assert (tmp_path / "cgroup.subtree_control").read_text() == "+pids"
        assert (tmp_path / "x" / "cgroup.subtree_control").read_text() == "+pids"
        assert manager.pids() == []
        manager.add(77)
        assert (tmp_path / "x" / "ctr" / "cgroup.procs").read_text() == "77"
        assert manager.pids() == [77]
        os.unlink(tmp_path / "x" / "ctr" / "cgroup.procs")
        manager.destroy()
        assert not os.path.exists(manager.directory)
        assert os.path.isdir(tmp_path / "x")
        manager.destroy()

    def test_frozen(self, tmp_path):
        manager = v2.Manager(str(tmp_path))
        assert manager.frozen() is False
        (tmp_path / "cgroup.freeze").write_text("1\n")
        assert manager.frozen() is True
        (tmp_path / "cgroup.freeze").write_text("0\n")
        assert manager.frozen() is False


class TestFromPaths:
    def test_unified(self, tmp_path):
        manager = from_paths({UNIFIED_KEY: str(tmp_path)})
        assert isinstance(manager, v2.Manager)
        assert manager.directory == str(tmp_path)

    def test_v1_and_hybrid(self, tmp_path):
        paths = {"memory": str(tmp_path / "m"), UNIFIED_KEY: str(tmp_path / "u")}
        manager = from_paths(paths)
        assert isinstance(manager, v1.Manager)
        assert manager.paths == paths

    def test_roundtrip(self, tmp_path):
        for manager in (v2.Manager(str(tmp_path / "a")),
                        v1.Manager({"cpu": str(tmp_path / "c"), "pids": str(tmp_path / "p")})):
            assert from_paths(manager.paths).paths == manager.paths


class TestFromRecord:
    """What later commands get: the directories alone, with no driver
    module loaded, unless they set or read limits."""

    def test_without_limits_no_driver(self, tmp_path):
        record = {"id": "c", "cgroup_paths": {UNIFIED_KEY: str(tmp_path)}}
        light = from_record(record)
        assert type(light) is Cgroups and light.paths == record["cgroup_paths"]
        assert isinstance(from_record(record, limits=True), v2.Manager)

    def test_freeze_v2_waits_for_the_event(self, tmp_path):
        (tmp_path / "cgroup.events").write_text("populated 1\nfrozen 1\n")
        Cgroups({UNIFIED_KEY: str(tmp_path)}).freeze(True)
        assert (tmp_path / "cgroup.freeze").read_text() == "1"

    def test_freeze_v1_writes_the_freezer(self, tmp_path):
        recorded = Cgroups({"freezer": str(tmp_path), "memory": str(tmp_path / "m")})
        recorded.freeze(True)
        assert (tmp_path / "freezer.state").read_text() == "FROZEN" and recorded.frozen()
        recorded.freeze(False)
        assert not recorded.frozen()

    def test_no_freezer_is_one_line(self, tmp_path):
        with pytest.raises(ExecError, match="the freezer cgroup controller is not available"):
            Cgroups({"memory": str(tmp_path)}).freeze(True)


def test_pids_below_a_cgroup_and_remove_dir(tmp_path):
    (tmp_path / "cgroup.procs").write_text("10\n 20 \n\n30\n")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "cgroup.procs").write_text("40\n")
    assert sorted(cgroups.pids_below(str(tmp_path))) == [10, 20, 30, 40]
    assert cgroups.pids_below(str(tmp_path / "missing")) == []
    (tmp_path / "d").mkdir()
    cgroups.remove_dir(str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()
    cgroups.remove_dir(str(tmp_path / "d"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("")
    with pytest.raises(OSError):
        cgroups.remove_dir(str(tmp_path / "full"))  # only "already gone" is tolerated


# ------------------------------------------------------------------- stats
def test_v1_stats_are_runcs_shape(tmp_path):
    from pyoci.linux.cgroups.stats import v1_stats
    cpu, pids, cpuset = tmp_path / "cpu", tmp_path / "pids", tmp_path / "cpuset"
    for directory in (cpu, pids, cpuset):
        directory.mkdir()
    (cpu / "cpuacct.usage").write_text("300\n")
    (cpu / "cpuacct.usage_percpu").write_text("100 200 \n")
    (cpu / "cpuacct.usage_all").write_text("cpu user system\n0 60 40\n1 150 50\n")
    (cpu / "cpu.stat").write_text("nr_periods 9\nnr_throttled 4\nthrottled_time 77\n")
    (pids / "pids.current").write_text("2\n")
    (pids / "pids.max").write_text("max\n")
    (cpuset / "cpuset.cpus").write_text("0-2,5\n")
    (cpuset / "cpuset.mems").write_text("\n")
    (cpuset / "cpuset.sched_relax_domain_level").write_text("-1\n")
    data = v1_stats({"cpu": str(cpu), "pids": str(pids), "cpuset": str(cpuset)})
    assert data["cpu"]["usage"] == {"total": 300, "percpu": [100, 200], "percpu_kernel": [40, 50],
                                    "percpu_user": [60, 150], "kernel": 0, "user": 0}
    assert data["cpu"]["throttling"] == {"periods": 9, "throttledPeriods": 4, "throttledTime": 77}
    assert data["pids"] == {"current": 2}  # "max" is runc's 0, which omitempty leaves out
    assert data["cpuset"]["cpus"] == [0, 1, 2, 5] and "mems" not in data["cpuset"]
    assert data["cpuset"]["sched_relax_domain_level"] == -1
    # No memory controller: runc's zero entries; the other sections empty.
    assert data["memory"]["usage"] == {"limit": 0, "failcnt": 0}
    assert (data["blkio"], data["hugetlb"], data["intel_rdt"], data["network_interfaces"]) == \
        ({}, {}, {}, None)


def test_v2_stats_read_io_stat_as_blkio_entries(tmp_path):
    from pyoci.linux.cgroups.stats import v2_stats
    (tmp_path / "io.stat").write_text("8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 5\nuser_usec 3\nsystem_usec 2\n")
    data = v2_stats(str(tmp_path))
    assert data["blkio"] == {
        "ioServiceBytesRecursive": [{"major": 8, "op": "Read", "value": 4096},
                                    {"major": 8, "op": "Write"}],
        "ioServicedRecursive": [{"major": 8, "op": "Read", "value": 1}, {"major": 8, "op": "Write"}]}
    assert data["cpu"] == {"usage": {"total": 5000, "kernel": 2000, "user": 3000}, "throttling": {}}


def test_v2_stats_count_swap_as_v1_does_and_hugetlb_reservations(tmp_path, monkeypatch):
    from pyoci.linux.cgroups import stats
    pages = tmp_path / "hugepages"
    (pages / "hugepages-2048kB").mkdir(parents=True)
    (pages / "hugepages-1048576kB").mkdir()
    monkeypatch.setattr(stats, "HUGEPAGES", str(pages))
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    for name, value in (("memory.max", "100"), ("memory.current", "40"),
                        ("memory.swap.max", "50"), ("memory.swap.current", "5"),
                        ("hugetlb.2MB.current", "0"), ("hugetlb.2MB.rsvd.current", "2097152"),
                        ("hugetlb.2MB.events", "max 3\n")):
        (cgroup / name).write_text(value + "\n")
    data = stats.v2_stats(str(cgroup))
    assert data["memory"]["usage"] == {"limit": 100, "usage": 40, "failcnt": 0}
    assert data["memory"]["swap"] == {"limit": 150, "usage": 45, "failcnt": 0}
    assert data["hugetlb"] == {"2MB": {"usage": 2097152, "failcnt": 3}}  # no 1GB files: none
    (cgroup / "memory.swap.max").write_text("max\n")
    assert stats.v2_stats(str(cgroup))["memory"]["swap"]["limit"] == 2**64 - 1
