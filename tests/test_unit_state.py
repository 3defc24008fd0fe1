"""pyoci.state and pyoci.linux.procfs: ids, the status table, atomic writes,
status derived from a fake /proc, and the state JSON."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pyoci import OCI_VERSION, state
from pyoci.errors import ConfigError, ContainerError
from pyoci.linux import procfs
from pyoci.state import (CREATED, CREATING, PAUSED, RUNNING, STOPPED, Container,
                         validate_id, write_atomic)

try:
    from pyoci.validate import validate_state
except ImportError:  # pragma: no cover
    validate_state = None


# ------------------------------------------------------------- fake /proc
def stat_line(pid, comm="sh", state_letter="S", ppid=1, start=12345):
    """A /proc/PID/stat line: pid (comm) then fields; index 19 after comm is starttime."""
    after = [state_letter, str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 30
    return f"{pid} ({comm}) " + " ".join(after) + "\n"


class FakeProc:
    def __init__(self, root):
        self.root = root
        root.mkdir(exist_ok=True)

    def add(self, pid, **fields):
        directory = self.root / str(pid)
        directory.mkdir(exist_ok=True)
        (directory / "stat").write_text(stat_line(pid, **fields))

    def remove(self, pid):
        (self.root / str(pid) / "stat").unlink()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def fake_proc(tmp_path, monkeypatch):
    """Point pyoci's procfs at a fake tree, whether it reads PROC at call time
    or took it as a default argument."""
    proc = FakeProc(tmp_path / "proc")
    path = str(proc.root)
    monkeypatch.setattr(procfs, "PROC", path)
    for name in ("stat_fields", "start_time", "is_alive", "children_pids"):
        function = getattr(procfs, name)
        if function.__defaults__ == ("/proc",):
            monkeypatch.setattr(function, "__defaults__", (path,))
    return proc


# ----------------------------------------------------------------- procfs
class TestProcfs:
    @pytest.mark.parametrize("comm", ["sh", "a b", "x) y", "((", ")", ") S 99 (", "a\nb",
                                      "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"])
    def test_stat_fields_with_hostile_comm(self, fake_proc, comm):
        fake_proc.add(42, comm=comm, state_letter="R", ppid=7, start=987654)
        fields = procfs.stat_fields(42, str(fake_proc.root))
        assert fields[0] == b"R"
        assert fields[1] == b"7"
        assert fields[19] == b"987654"
        assert procfs.start_time(42, str(fake_proc.root)) == 987654

    @settings(database=None, max_examples=100,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(comm=st.binary(max_size=16).filter(lambda b: b"\0" not in b),
           start=st.integers(0, 2**63))
    def test_stat_fields_any_comm(self, tmp_path, comm, start):
        root = tmp_path  # the same file is rewritten for every example
        (root / "5").mkdir(exist_ok=True)
        after = [b"S", b"1"] + [b"0"] * 17 + [str(start).encode(), b"0"]
        (root / "5" / "stat").write_bytes(b"5 (" + comm + b") " + b" ".join(after) + b"\n")
        fields = procfs.stat_fields(5, str(root))
        assert fields[0] == b"S" and int(fields[19]) == start

    def test_gone_pid(self, fake_proc):
        assert procfs.stat_fields(99999, str(fake_proc.root)) is None
        assert procfs.start_time(99999, str(fake_proc.root)) is None
        assert procfs.is_alive(99999, 1, str(fake_proc.root)) is False

    @pytest.mark.parametrize("letter,start,alive", [
        ("R", 100, True), ("S", 100, True), ("D", 100, True), ("T", 100, True),
        ("Z", 100, False), ("X", 100, False), ("S", 101, False)])
    def test_is_alive(self, fake_proc, letter, start, alive):
        fake_proc.add(10, state_letter=letter, start=start)
        assert procfs.is_alive(10, 100, str(fake_proc.root)) is alive

    def test_children_pids(self, fake_proc):
        fake_proc.add(1, ppid=0)
        fake_proc.add(20, ppid=1)
        fake_proc.add(21, ppid=20)
        fake_proc.add(22, ppid=20, comm="odd ) name")
        fake_proc.add(23, ppid=1)
        (fake_proc.root / "self").mkdir()
        (fake_proc.root / "sys").mkdir()
        assert sorted(procfs.children_pids(20, str(fake_proc.root))) == [21, 22]
        assert sorted(procfs.children_pids(1, str(fake_proc.root))) == [20, 23]
        assert procfs.children_pids(23, str(fake_proc.root)) == []

    def test_real_proc_self(self):
        pid = os.getpid()
        fields = procfs.stat_fields(pid)
        assert fields[0] in (b"R", b"S")
        assert int(fields[1]) == os.getppid()
        start = procfs.start_time(pid)
        assert procfs.is_alive(pid, start)
        assert not procfs.is_alive(pid, start + 1)

    def test_real_zombie_is_not_alive(self):
        child = subprocess.Popen(["/bin/sh", "-c", "exit 0"])
        start = procfs.start_time(child.pid)
        deadline = time.monotonic() + 5
        while procfs.stat_fields(child.pid)[0] != b"Z":
            assert time.monotonic() < deadline
            time.sleep(0.005)
        try:
            assert procfs.is_alive(child.pid, start) is False
            assert child.pid in procfs.children_pids(os.getpid())
        finally:
            child.wait()


# --------------------------------------------------------------- validate_id
class TestValidateId:
    @pytest.mark.parametrize("container_id", [
        "a", "abc", "my-container", "my_container", "c.1", "A+B", "123", "...", ".a", "a.",
        "x" * 1024, "-", "+", "_", "sha256.0123456789abcdef"])
    def test_valid(self, container_id):
        validate_id(container_id)

    @pytest.mark.parametrize("container_id", [
        "", ".", "..", "a/b", "../x", "/abs", "a b", " a", "a ", "a\tb", "a:b", "a,b",
        "a*", "a\0b", "a\\b", "a\nb", "$x", "a;b"])
    def test_invalid(self, container_id):
        with pytest.raises(ContainerError) as info:
            validate_id(container_id)
        assert str(info.value) == f"invalid container ID format: {container_id}"

    @pytest.mark.parametrize("container_id", ["abc\n", "..\n"])
    def test_trailing_newline_is_invalid(self, container_id):
        with pytest.raises(ContainerError, match="invalid container ID format"):
            validate_id(container_id)

    @settings(database=None, max_examples=200)
    @given(st.text(alphabet="abcXYZ019_+-.", min_size=1, max_size=40))
    def test_safe_alphabet_is_valid_unless_dot_or_dotdot(self, container_id):
        if container_id in (".", ".."):
            with pytest.raises(ContainerError):
                validate_id(container_id)
        else:
            validate_id(container_id)

    @settings(database=None, max_examples=200)
    @given(st.text(max_size=20))
    def test_a_valid_id_is_one_safe_path_component(self, container_id):
        try:
            validate_id(container_id.rstrip("\n"))
        except ContainerError:
            return
        container_id = container_id.rstrip("\n")
        assert "/" not in container_id and "\0" not in container_id
        assert container_id not in ("", ".", "..")
        assert not any(c.isspace() for c in container_id)


# ------------------------------------------------------------ status table
STATUSES = [CREATING, CREATED, RUNNING, PAUSED, STOPPED]


@pytest.mark.parametrize("status,start,kill,delete", [
    (CREATING, False, False, False),
    (CREATED, True, True, False),
    (RUNNING, False, True, False),
    (PAUSED, False, True, False),
    (STOPPED, False, False, True),
])
def test_operation_table(status, start, kill, delete):
    assert state.can_start(status) is start
    assert state.can_kill(status) is kill
    assert state.can_delete(status) is delete


# ------------------------------------------------------------ write_atomic
class TestWriteAtomic:
    def test_creates_and_replaces(self, tmp_path):
        path = tmp_path / "state.json"
        write_atomic(str(path), b"first")
        assert path.read_bytes() == b"first"
        write_atomic(str(path), b"second, longer content")
        assert path.read_bytes() == b"second, longer content"
        write_atomic(str(path), b"3")
        assert path.read_bytes() == b"3"
        assert os.listdir(tmp_path) == ["state.json"]

    def test_mode(self, tmp_path):
        path = tmp_path / "f"
        old = os.umask(0)
        try:
            write_atomic(str(path), b"x", 0o600)
            assert os.stat(path).st_mode & 0o777 == 0o600
            write_atomic(str(path), b"x", 0o640)
            assert os.stat(path).st_mode & 0o777 == 0o640
        finally:
            os.umask(old)

    def test_replaces_by_rename(self, tmp_path):
        """A reader holding the old file sees all of the old content."""
        path = tmp_path / "f"
        write_atomic(str(path), b"old content")
        with open(path, "rb") as reader:
            write_atomic(str(path), b"new")
            assert reader.read() == b"old content"
        assert path.read_bytes() == b"new"

    def test_empty(self, tmp_path):
        write_atomic(str(tmp_path / "f"), b"")
        assert (tmp_path / "f").read_bytes() == b""


def test_rfc3339_now():
    text = state.rfc3339_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", text)


# ---------------------------------------------------------------- Container
def make_record(container_id="c1", pid=4242, start=777, **extra):
    record = {"id": container_id, "pid": pid, "pid_start_time": start,
              "bundle": "/b/" + container_id, "rootfs": "/b/rootfs", "created": "2024-01-01T00:00:00.000000000Z",
              "annotations": {}, "cgroup_paths": {}, "owner": "", "has_process": True}
    record.update(extra)
    return record


@pytest.fixture
def container(tmp_path):
    c = Container(str(tmp_path / "root"), "c1")
    c.make_dir()
    c.record = make_record()
    c.save()
    return c


def _fifo(container):
    os.mkfifo(container.fifo)


class TestStatus:
    def test_pid_gone_is_stopped(self, container, fake_proc):
        assert container.status() == STOPPED

    def test_pid_zero_is_stopped(self, container, fake_proc):
        container.record["pid"] = 0
        _fifo(container)
        assert container.status() == STOPPED

    def test_zombie_is_stopped(self, container, fake_proc):
        fake_proc.add(4242, state_letter="Z", start=777)
        _fifo(container)
        assert container.status() == STOPPED

    def test_dead_x_is_stopped(self, container, fake_proc):
        fake_proc.add(4242, state_letter="X", start=777)
        assert container.status() == STOPPED

    def test_pid_reused_is_stopped(self, container, fake_proc):
        fake_proc.add(4242, state_letter="S", start=778)
        _fifo(container)
        assert container.status() == STOPPED

    def test_fifo_present_is_created(self, container, fake_proc):
        fake_proc.add(4242, state_letter="S", start=777)
        _fifo(container)
        assert container.status() == CREATED

    def test_fifo_absent_is_running(self, container, fake_proc):
        fake_proc.add(4242, state_letter="R", start=777)
        assert container.status() == RUNNING

    def test_creating_flag(self, container, fake_proc):
        fake_proc.add(4242, state_letter="S", start=777)
        container.record["creating"] = True
        _fifo(container)
        assert container.status() == CREATING

    def test_transitions(self, container, fake_proc):
        fake_proc.add(4242, start=777)
        _fifo(container)
        assert container.status() == CREATED
        os.unlink(container.fifo)
        assert container.status() == RUNNING
        fake_proc.add(4242, state_letter="Z", start=777)
        assert container.status() == STOPPED
        fake_proc.remove(4242)
        assert container.status() == STOPPED

    def test_v2_frozen_is_paused(self, container, fake_proc, tmp_path):
        cgroup = tmp_path / "cg"
        cgroup.mkdir()
        (cgroup / "cgroup.freeze").write_text("1\n")
        container.record["cgroup_paths"] = {"": str(cgroup)}
        fake_proc.add(4242, start=777)
        assert container.status() == PAUSED
        (cgroup / "cgroup.freeze").write_text("0\n")
        assert container.status() == RUNNING

    def test_v1_frozen_is_paused(self, container, fake_proc, tmp_path):
        freezer = tmp_path / "freezer"
        freezer.mkdir()
        (freezer / "freezer.state").write_text("FROZEN\n")
        container.record["cgroup_paths"] = {"freezer": str(freezer), "cpu": str(tmp_path / "x")}
        fake_proc.add(4242, start=777)
        assert container.status() == PAUSED

    def test_real_process(self, container):
        """With the real /proc: this test process is alive with its own start time."""
        container.record["pid"] = os.getpid()
        container.record["pid_start_time"] = procfs.start_time(os.getpid())
        assert container.status() == RUNNING
        _fifo(container)
        assert container.status() == CREATED
        container.record["pid_start_time"] += 1
        assert container.status() == STOPPED


class TestOciState:
    def test_running_shape(self, container, fake_proc):
        fake_proc.add(4242, start=777)
        doc = container.oci_state()
        assert doc == {"ociVersion": OCI_VERSION, "id": "c1", "pid": 4242, "status": RUNNING,
                       "bundle": "/b/c1", "rootfs": "/b/rootfs",
                       "created": "2024-01-01T00:00:00.000000000Z", "owner": ""}
        assert "annotations" not in doc

    def test_stopped_pid_is_zero(self, container, fake_proc):
        doc = container.oci_state()
        assert doc["status"] == STOPPED
        assert doc["pid"] == 0

    def test_annotations_included_when_present(self, container, fake_proc):
        container.record["annotations"] = {"org.example/key": "value"}
        fake_proc.add(4242, start=777)
        _fifo(container)
        doc = container.oci_state()
        assert doc["annotations"] == {"org.example/key": "value"}
        assert doc["status"] == CREATED
        assert list(doc)[:4] == ["ociVersion", "id", "pid", "status"]

    @pytest.mark.skipif(validate_state is None, reason="pyoci.validate.validate_state absent")
    @pytest.mark.parametrize("setup", ["stopped", "created", "running", "creating", "annotated"])
    def test_valid_per_state_schema(self, container, fake_proc, setup):
        if setup != "stopped":
            fake_proc.add(4242, start=777)
        if setup in ("created", "creating"):
            _fifo(container)
        if setup == "creating":
            container.record["creating"] = True
        if setup == "annotated":
            container.record["annotations"] = {"a": "b", "c.d/e": ""}
        doc = container.oci_state()
        validate_state(doc)
        validate_state(json.loads(json.dumps(doc)))

    @pytest.mark.skipif(validate_state is None, reason="pyoci.validate.validate_state absent")
    def test_state_schema_rejects_a_broken_state(self):
        with pytest.raises(ConfigError):
            validate_state({"ociVersion": "1.0.0", "id": "x", "status": "bogus", "bundle": "/"})

    def test_hook_state(self, container, fake_proc):
        container.record["annotations"] = {"k": "v"}
        assert container.hook_state(CREATED) == {
            "ociVersion": OCI_VERSION, "id": "c1", "status": CREATED, "bundle": "/b/c1",
            "annotations": {"k": "v"}, "pid": 4242}
        stopped = container.hook_state(STOPPED)
        assert "pid" not in stopped and stopped["status"] == STOPPED
        container.record["annotations"] = None
        assert container.hook_state(STOPPED)["annotations"] == {}


class TestDirectory:
    def test_make_dir_twice(self, tmp_path):
        root = str(tmp_path / "root")
        Container(root, "dup").make_dir()
        with pytest.raises(ContainerError) as info:
            Container(root, "dup").make_dir()
        assert str(info.value) == "container with id exists: dup"

    def test_make_dir_creates_root_and_lock(self, tmp_path):
        root = tmp_path / "deep" / "root"
        c = Container(str(root), "x")
        c.make_dir()
        assert (root / "x").is_dir()
        assert (root / "x" / "lock").is_file()
        assert os.stat(root / "x").st_mode & 0o777 == 0o711 & ~_umask()

    def test_load_missing(self, tmp_path):
        with pytest.raises(ContainerError) as info:
            Container(str(tmp_path), "X").load()
        assert str(info.value) == 'container "X" does not exist'

    def test_load_missing_root(self, tmp_path):
        with pytest.raises(ContainerError, match='^container "X" does not exist$'):
            Container(str(tmp_path / "nope"), "X").load()

    def test_lock_existing_missing(self, tmp_path):
        with pytest.raises(ContainerError, match='^container "X" does not exist$'):
            Container(str(tmp_path), "X").lock_existing()

    def test_save_load_roundtrip(self, container):
        loaded = Container(container.root, "c1").load()
        assert loaded.record == container.record
        assert os.stat(container.state_file).st_mode & 0o777 == 0o600

    def test_load_dir_without_state_is_stopped_shell(self, tmp_path):
        root = tmp_path / "root"
        (root / "half").mkdir(parents=True)
        c = Container(str(root), "half").load()
        assert c.record["pid"] == 0
        assert c.status() == STOPPED
        assert c.oci_state()["pid"] == 0

    def test_remove_dir(self, container):
        _fifo(container)
        container.remove_dir()
        assert not os.path.exists(container.dir)
        assert os.path.isdir(container.root)

    def test_list_ids(self, tmp_path):
        root = tmp_path / "root"
        assert state.list_ids(str(root)) == []
        for name in ("b", "a", "c"):
            (root / name).mkdir(parents=True)
        (root / "stray-file").write_text("")
        assert state.list_ids(str(root)) == ["a", "b", "c"]

    def test_paths(self, tmp_path):
        c = Container(str(tmp_path), "x")
        assert c.dir == os.path.join(str(tmp_path), "x")
        assert c.state_file == os.path.join(c.dir, "state.json")
        assert c.fifo == os.path.join(c.dir, "exec.fifo")


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_lock_is_exclusive_across_processes(container):
    """Another process cannot take the container's lock while we hold it."""
    code = ("import os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n"
            "    os.lockf(fd, os.F_TLOCK, 0)\n"
            "except OSError:\n"
            "    sys.exit(3)\n")
    lock = os.path.join(container.dir, "lock")
    assert subprocess.run([sys.executable, "-c", code, lock]).returncode == 3


@pytest.mark.parametrize("euid, in_userns, user, runtime_dir, root", [
    (0, False, "root", "/run/user/0", "/run/pyoci"),
    (1001, False, "u", "/run/user/1001", "/run/user/1001/pyoci"),
    (1001, False, "u", None, "/run/pyoci"),
    # root of rootless podman's user namespace
    (0, True, "u", "/run/user/1001", "/run/user/1001/pyoci"),
    (0, True, "root", "/run/user/0", "/run/pyoci")])
def test_default_root_is_the_users_runtime_dir_as_runc(monkeypatch, euid, in_userns, user,
                                                       runtime_dir, root):
    from pyoci import state as state_module
    from pyoci.linux import procfs
    monkeypatch.setattr(state_module.os, "geteuid", lambda: euid)
    monkeypatch.setattr(procfs, "in_user_namespace", lambda: in_userns)
    monkeypatch.setenv("USER", user)
    if runtime_dir is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime_dir)
    assert state_module.default_root() == root
