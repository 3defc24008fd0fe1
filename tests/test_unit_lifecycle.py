"""pyoci.lifecycle without containers: parse_signal, and start/kill/delete/state
acting on container records in a temporary root whose "init" is an ordinary
child process (sleep, or a shell standing in for pyoci-waiter)."""
import json
import os
import signal
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from pyoci import lifecycle, state
from pyoci.errors import ContainerError, ExecError, HookError
from pyoci.linux import procfs
from pyoci.state import Container


# ----------------------------------------------------------------- parse_signal
class TestParseSignal:
    @pytest.mark.parametrize("text", ["KILL", "SIGKILL", "kill", "sigkill", "Kill", "9"])
    def test_kill_spellings(self, text):
        assert lifecycle.parse_signal(text) == signal.SIGKILL == 9

    @pytest.mark.parametrize("text,number", [
        ("TERM", 15), ("SIGTERM", 15), ("HUP", 1), ("int", 2), ("USR1", signal.SIGUSR1),
        ("SIGCHLD", signal.SIGCHLD), ("WINCH", signal.SIGWINCH), ("1", 1), ("15", 15),
        ("64", 64), ("SIGRTMIN", signal.SIGRTMIN), ("RTMAX", signal.SIGRTMAX), ("0", 0)])
    def test_known(self, text, number):
        assert lifecycle.parse_signal(text) == number

    @pytest.mark.parametrize("text", ["FOO", "SIGFOO", "", "SIG", "65", "999", "-9",
                                      "9x", " 9", "SIG_DFL", "SIG_IGN", "DFL", "SIGRTMIN+1",
                                      "NSIG", "SIGKILL "])
    def test_unknown(self, text):
        with pytest.raises(ContainerError) as info:
            lifecycle.parse_signal(text)
        assert str(info.value) == f"unknown signal {text!r}"

    def test_every_signal_by_every_spelling(self):
        for sig in signal.Signals:
            name = sig.name
            for text in (name, name[3:], name.lower(), name[3:].lower(), str(int(sig))):
                assert lifecycle.parse_signal(text) == int(sig), text

    @pytest.mark.parametrize("text", ["¹", "²", "٣", "９"])
    def test_non_ascii_digits_are_unknown(self, text):
        with pytest.raises(ContainerError, match="^unknown signal "):
            lifecycle.parse_signal(text)

    # Non-ASCII digits have their own test above.
    @settings(database=None, max_examples=200)
    @given(st.text(max_size=12).filter(lambda t: not any(c.isdigit() and not c.isascii()
                                                         for c in t)))
    def test_result_is_a_real_signal_or_an_error(self, text):
        try:
            number = lifecycle.parse_signal(text)
        except ContainerError as exc:
            assert str(exc).startswith("unknown signal ")
            return
        assert number in {0} | {int(s) for s in signal.valid_signals()}


# ------------------------------------------------------------ fake containers
@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return str(path)


@pytest.fixture
def children():
    """Spawn ordinary processes to play a container's init; all reaped at the end."""
    spawned = []

    def spawn(argv=("sleep", "30")):
        child = subprocess.Popen(list(argv))
        spawned.append(child)
        return child
    yield spawn
    for child in spawned:
        if child.poll() is None:
            child.kill()
        child.wait()


def make_container(root, container_id, pid=0, start=None, fifo=False, **extra):
    container = Container(root, container_id)
    os.makedirs(container.dir)
    if pid and start is None:
        start = procfs.start_time(pid)
    container.record = {
        "id": container_id, "pid": pid, "pid_start_time": start, "bundle": f"/b/{container_id}",
        "rootfs": "/b/rootfs", "created": "2024-01-01T00:00:00.000000000Z", "annotations": {},
        "cgroup_paths": {}, "owner": "", "has_process": True,
        "hooks": {"poststart": [], "poststop": []}}
    container.record.update(extra)
    container.save()
    if fifo:
        os.mkfifo(container.fifo)
    return container


def poststop_recorder(path):
    return {"path": "/bin/sh", "args": ["sh", "-c", f'cat > "{path}"'], "env": None,
            "timeout": None}


def wait_for_exit(child, timeout=5):
    return child.wait(timeout=timeout)


# ---------------------------------------------------------------------- state
class TestContainerState:
    def test_missing(self, root):
        with pytest.raises(ContainerError, match='^container "nope" does not exist$'):
            state.Container(root, "nope").load().oci_state()

    def test_stopped(self, root):
        make_container(root, "c")
        doc = state.Container(root, "c").load().oci_state()
        assert doc["status"] == "stopped" and doc["pid"] == 0

    def test_running_and_created(self, root, children):
        child = children()
        make_container(root, "run", pid=child.pid)
        make_container(root, "made", pid=child.pid, fifo=True)
        assert state.Container(root, "run").load().oci_state()["status"] == "running"
        assert state.Container(root, "run").load().oci_state()["pid"] == child.pid
        assert state.Container(root, "made").load().oci_state()["status"] == "created"

    def test_list_states_skips_broken(self, root, children):
        make_container(root, "b")
        make_container(root, "a", pid=children().pid)
        os.makedirs(os.path.join(root, "broken"))
        with open(os.path.join(root, "broken", "state.json"), "w") as f:
            f.write("{truncated")
        states = state.list_states(root)
        assert [(s["id"], s["status"]) for s in states] == [("a", "running"), ("b", "stopped")]
        assert state.list_states(os.path.join(root, "absent")) == []


# ----------------------------------------------------------------------- kill
class TestKill:
    def test_missing(self, root):
        with pytest.raises(ContainerError, match='does not exist'):
            lifecycle.kill(root, "nope", "KILL")

    def test_bad_signal(self, root, children):
        child = children()
        make_container(root, "c", pid=child.pid)
        with pytest.raises(ContainerError, match="^unknown signal 'BOGUS'$"):
            lifecycle.kill(root, "c", "BOGUS")
        assert child.poll() is None

    def test_signals_init(self, root, children):
        child = children()
        make_container(root, "c", pid=child.pid)
        lifecycle.kill(root, "c", "USR1")
        assert wait_for_exit(child) == -signal.SIGUSR1

    def test_created_can_be_killed(self, root, children):
        child = children()
        make_container(root, "c", pid=child.pid, fifo=True)
        lifecycle.kill(root, "c", "9")
        assert wait_for_exit(child) == -signal.SIGKILL

    def test_stopped(self, root):
        make_container(root, "c")
        with pytest.raises(ContainerError, match="^container not running$"):
            lifecycle.kill(root, "c", "KILL")

    def test_reused_pid_is_never_signalled(self, root, children):
        child = children()
        make_container(root, "c", pid=child.pid, start=procfs.start_time(child.pid) + 1)
        with pytest.raises(ContainerError, match="^container not running$"):
            lifecycle.kill(root, "c", "KILL")
        time.sleep(0.05)
        assert child.poll() is None

    def test_all_signals_every_pid_in_the_cgroup(self, root, children, tmp_path):
        first, second = children(), children()
        cgroup = tmp_path / "cg"
        cgroup.mkdir()
        # A pid that has exited already is skipped quietly.
        gone = subprocess.Popen(["true"])
        gone.wait()
        (cgroup / "cgroup.procs").write_text(f"{first.pid}\n{second.pid}\n{gone.pid}\n")
        make_container(root, "c", pid=first.pid, cgroup_paths={"": str(cgroup)})
        lifecycle.kill(root, "c", "TERM", all_processes=True)
        assert wait_for_exit(first) == -signal.SIGTERM
        assert wait_for_exit(second) == -signal.SIGTERM


# --------------------------------------------------------------------- delete
class TestDelete:
    def test_missing(self, root):
        with pytest.raises(ContainerError, match='^container "nope" does not exist$'):
            lifecycle.delete(root, "nope")
        lifecycle.delete(root, "nope", force=True)

    def test_stopped_removes_dir_and_runs_poststop(self, root, tmp_path):
        out = tmp_path / "poststop.json"
        make_container(root, "c", annotations={"k": "v"},
                       hooks={"poststart": [], "poststop": [poststop_recorder(out)]})
        lifecycle.delete(root, "c")
        assert not os.path.exists(os.path.join(root, "c"))
        assert json.loads(out.read_text()) == {
            "ociVersion": state.OCI_VERSION, "id": "c", "status": "stopped",
            "bundle": "/b/c", "annotations": {"k": "v"}}

    def test_running_refused_without_force(self, root, children):
        child = children()
        make_container(root, "c", pid=child.pid)
        with pytest.raises(ContainerError) as info:
            lifecycle.delete(root, "c")
        assert str(info.value) == "cannot delete container c that is not stopped: running"
        assert child.poll() is None
        assert os.path.isdir(os.path.join(root, "c"))

    def test_force_kills_init_and_waits(self, root, children, tmp_path):
        child = children()
        out = tmp_path / "poststop.json"
        make_container(root, "c", pid=child.pid, fifo=True,
                       hooks={"poststart": [], "poststop": [poststop_recorder(out)]})
        lifecycle.delete(root, "c", force=True)
        # delete returned only after init died: it is a zombie or gone already.
        assert procfs.is_alive(child.pid, procfs.start_time(child.pid)) is False
        assert wait_for_exit(child) == -signal.SIGKILL
        assert not os.path.exists(os.path.join(root, "c"))
        assert json.loads(out.read_text())["status"] == "stopped"

    def test_force_with_reused_pid_does_not_kill_it(self, root, children):
        child = children()
        make_container(root, "c", pid=child.pid, start=procfs.start_time(child.pid) + 1)
        lifecycle.delete(root, "c", force=True)
        assert not os.path.exists(os.path.join(root, "c"))
        time.sleep(0.05)
        assert child.poll() is None

    def test_half_created_directory(self, root):
        os.makedirs(os.path.join(root, "half"))
        lifecycle.delete(root, "half")
        assert not os.path.exists(os.path.join(root, "half"))

    def test_poststop_failure_is_only_a_warning(self, root, tmp_path, capsys):
        failing = {"path": "/bin/sh", "args": ["sh", "-c", "exit 7"], "env": None,
                   "timeout": None}
        make_container(root, "c", hooks={"poststart": [], "poststop": [failing]})
        lifecycle.delete(root, "c")
        assert not os.path.exists(os.path.join(root, "c"))
        assert "exit status 7" in capsys.readouterr().err


# ---------------------------------------------------------------------- start
def waiter(fifo, payload):
    """A shell playing pyoci-waiter: block opening exec.fifo, write PAYLOAD, 'exec'."""
    return ["/bin/sh", "-c", f'printf "%s" "$1" > "{fifo}"; exec sleep 30', "sh", payload]


class TestStart:
    def test_missing(self, root):
        with pytest.raises(ContainerError, match='^container "nope" does not exist$'):
            lifecycle.start(root, "nope")

    def test_stopped(self, root):
        make_container(root, "c")
        with pytest.raises(ContainerError, match="^cannot start a container that has stopped$"):
            lifecycle.start(root, "c")

    def test_running(self, root, children):
        make_container(root, "c", pid=children().pid)
        with pytest.raises(ContainerError, match="^cannot start an already running container$"):
            lifecycle.start(root, "c")

    def test_no_process(self, root, children):
        make_container(root, "c", pid=children().pid, fifo=True, has_process=False)
        with pytest.raises(ContainerError, match="no process"):
            lifecycle.start(root, "c")

    def test_releases_the_waiter_and_runs_poststart(self, root, children, tmp_path):
        container = Container(root, "c")
        os.makedirs(container.dir)
        os.mkfifo(container.fifo)
        child = children(waiter(container.fifo, "0"))
        out = tmp_path / "poststart.json"
        make_container_record(container, child.pid, hooks={
            "poststart": [poststop_recorder(out)], "poststop": []})
        lifecycle.start(root, "c")
        assert not os.path.exists(container.fifo)
        assert child.poll() is None  # "the program" runs
        hook_state = json.loads(out.read_text())
        assert hook_state["status"] == "running" and hook_state["pid"] == child.pid
        assert state.Container(root, "c").load().oci_state()["status"] == "running"

    def test_exec_failure_reported_and_init_killed(self, root, children):
        container = Container(root, "c")
        os.makedirs(container.dir)
        os.mkfifo(container.fifo)
        child = children(waiter(container.fifo, "0E2 /run.sh"))
        make_container_record(container, child.pid)
        with pytest.raises(ExecError) as info:
            lifecycle.start(root, "c")
        assert str(info.value) == "exec /run.sh: no such file or directory"
        assert wait_for_exit(child) == -signal.SIGKILL

    def test_start_container_hook_failure_destroys(self, root, children):
        container = Container(root, "c")
        os.makedirs(container.dir)
        os.mkfifo(container.fifo)
        child = children(waiter(container.fifo, "0Hstart hook said no"))
        make_container_record(container, child.pid)
        with pytest.raises(HookError, match="^start hook said no$"):
            lifecycle.start(root, "c")
        assert wait_for_exit(child) == -signal.SIGKILL
        assert not os.path.exists(container.dir)

    def test_poststart_failure_destroys(self, root, children):
        container = Container(root, "c")
        os.makedirs(container.dir)
        os.mkfifo(container.fifo)
        child = children(waiter(container.fifo, "0"))
        failing = {"path": "/bin/sh", "args": ["sh", "-c", "exit 5"], "env": None,
                   "timeout": None}
        make_container_record(container, child.pid, hooks={"poststart": [failing],
                                                           "poststop": []})
        with pytest.raises(HookError, match="poststart hook #0: exit status 5"):
            lifecycle.start(root, "c")
        assert wait_for_exit(child) == -signal.SIGKILL
        assert not os.path.exists(container.dir)

    def test_init_dies_without_writing(self, root, children):
        container = Container(root, "c")
        os.makedirs(container.dir)
        os.mkfifo(container.fifo)
        child = children(["/bin/sh", "-c", f': > "{container.fifo}"; exit 1'])
        make_container_record(container, child.pid)
        with pytest.raises(ExecError, match="^container init exited before the program could be started$"):
            lifecycle.start(root, "c")


def make_container_record(container, pid, **extra):
    # Popen has returned, so the process exists; its start time survives its exec.
    start = procfs.start_time(pid)
    container.record = {
        "id": container.id, "pid": pid, "pid_start_time": start, "bundle": container.dir,
        "rootfs": container.dir + "/rootfs", "created": "2024-01-01T00:00:00.000000000Z",
        "annotations": {},
        "cgroup_paths": {}, "owner": "", "has_process": True,
        "hooks": {"poststart": [], "poststop": []}}
    container.record.update(extra)
    container.save()


def test_write_default_spec(tmp_path):
    lifecycle.write_default_spec(str(tmp_path), rootless=False)
    raw = json.loads((tmp_path / "config.json").read_text())
    from pyoci.spec import default_config
    assert raw == default_config()
    with pytest.raises(ExecError, match="^File config.json exists. Remove it first.$"):
        lifecycle.write_default_spec(str(tmp_path), rootless=True)
    assert json.loads((tmp_path / "config.json").read_text()) == raw
