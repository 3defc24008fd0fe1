"""Crashes: pyoci SIGKILLed at each of its fault points (log.fault_point,
armed by --debug and PYOCI_FAULT), in the command or in what it forks, and
during each hook; the container's
init killed before and after start. After each, `state` tells the truth,
`delete --force` succeeds, and LeakCheck finds the host as it was: no state
files, cgroups, mounts, processes or network namespaces of the container.

LeakCheck makes this process a child subreaper, as an engine's shim is:
what the dead runtime forked comes to us, and is reaped or counted.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.bundle import bind_mount, make_bundle, user_namespace
from conformance.harness import WAIT_TIMEOUT, LeakCheck, process_alive, wait_until

pytestmark = pytest.mark.root

PACKAGE = Path(__file__).resolve().parents[1] / "pyoci"
# What a created container's init runs: pyoci-waiter, or (to run
# startContainer hooks) init itself, in pyoci's interpreter.
WAITING = ("/memfd:pyoci-waiter (deleted)", os.path.realpath(sys.executable))


def fault_points():
    """Every log.fault_point("NAME") in pyoci's source."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        found.update(re.findall(r'log\.fault_point\("([^"]+)"\)', path.read_text()))
    return sorted(found)


def test_fault_points_are_named_after_their_command():
    points = fault_points()
    assert len(points) >= 20
    assert {point.partition(":")[0] for point in points} == {"create", "start", "delete", "exec"}


@pytest.fixture
def leak_check(pyoci, tmp_path):
    check = LeakCheck(pyoci, tmp_path)
    yield check
    check.close()


def crash_bundle(directory):
    """A bundle that takes every step of create: a new user namespace (id
    maps), a bind mount of a source only the host's root may reach (a mount
    source fd), cgroup limits, and a program that waits. DIRECTORY must be
    one the namespace's root may traverse (the scratch fixture's)."""
    directory = Path(directory)
    private = directory / "private" / "data"  # below a directory of mode 0700
    private.mkdir(parents=True)
    private.parent.chmod(0o700)

    def mutate(config):
        user_namespace(config)
        config["mounts"].append(bind_mount(private, "/mnt/private"))
        config["linux"]["resources"] = {"memory": {"limit": 256 << 20}, "pids": {"limit": 100}}

    bundle = make_bundle(directory / "bundle", ["sleep", "1000"], mutate)
    (bundle / "rootfs" / "mnt" / "private").mkdir(parents=True)
    return bundle


def assert_state_is_true(runtime, container_id):
    """`state` says the container does not exist, or what its init really is."""
    shown = runtime.run("state", container_id, check=False)
    if shown.returncode != 0:
        assert shown.returncode == 1
        assert shown.stderr.strip().splitlines() == [f'container "{container_id}" does not exist']
        return
    state = json.loads(shown.stdout)
    status, pid = state["status"], state["pid"]
    assert status in ("creating", "created", "running", "stopped")
    if status == "stopped":
        assert pid == 0
        return
    assert process_alive(pid), f"{status}, but init {pid} is gone"
    executable = os.readlink(f"/proc/{pid}/exe")
    if status == "created":
        assert executable in WAITING, f"created, but init runs {executable}"
    if status == "running":
        assert executable not in WAITING, "running, but init still waits for start"


def assert_nothing_left(check):
    """Nothing of the container's on the host, once what was killed has
    died (a stage whose runtime died exits when it reads end of file)."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while (left := check.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == {}


def delete_and_check(runtime, container_id, check):
    deleted = runtime.run("delete", "--force", container_id, check=False)
    assert deleted.returncode == 0, deleted.stderr
    assert not runtime.exists(container_id)
    assert_nothing_left(check)


def command_line(point, bundle, container_id):
    return {"create": ("create", "--bundle", bundle, container_id),
            "start": ("start", container_id),
            "delete": ("delete", "--force", container_id),
            "exec": ("exec", container_id, "sleep", "1000")}[point.partition(":")[0]]


# Points in what the command forks are named COMMAND:CHILD/STEP (the
# namespace stage, init, exec's process): the child dies there, and the
# command fails with one line (exec with 255, as runc's does).


def error_lines(stderr):
    return [line for line in stderr.splitlines() if "level=debug" not in line]


@pytest.mark.parametrize("point", fault_points())
def test_killed_at(point, pyoci, scratch, leak_check):
    bundle = crash_bundle(scratch)
    container_id = pyoci.new_id()
    command, _, step = point.partition(":")
    if command != "create":
        pyoci.create(container_id, bundle)
    if command in ("delete", "exec"):
        pyoci.start(container_id)
    crashed = pyoci.run("--debug", *command_line(point, bundle, container_id), check=False,
                        env={"PYOCI_FAULT": point})
    if "/" in step:
        assert crashed.returncode == (255 if command == "exec" else 1), \
            f"{point}: exit {crashed.returncode}, {crashed.stderr[-2000:]}"
        assert len(error_lines(crashed.stderr)) == 1, \
            f"{point}: exit {crashed.returncode}, {crashed.stderr[-2000:]}"
    else:
        assert crashed.returncode == -signal.SIGKILL, \
            f"{point} was not reached: exit {crashed.returncode}, {crashed.stderr[-2000:]}"
    assert_state_is_true(pyoci, container_id)
    delete_and_check(pyoci, container_id, leak_check)


def test_without_debug_a_fault_point_is_never_armed(pyoci, scratch, leak_check):
    bundle = crash_bundle(scratch)
    container_id = pyoci.new_id()
    pyoci.run("create", "--bundle", bundle, container_id, env={"PYOCI_FAULT": "create:fifo"})
    assert pyoci.state(container_id)["status"] == "created"
    assert_state_is_true(pyoci, container_id)
    delete_and_check(pyoci, container_id, leak_check)


# ---------------------------------------------------------------- in a hook
# Each hook says it runs (a file), then waits to be let go (another file);
# meanwhile the test SIGKILLs the pyoci command that runs it. Host hooks and
# createContainer (before pivot_root) see the bundle's directory as the host
# does; startContainer runs in the container, where it is /hook.
HOOKS = {
    "prestart": "create", "createRuntime": "create", "createContainer": "create",
    "startContainer": "start", "poststart": "start", "poststop": "delete",
}


def hook_script(directory):
    return (f"touch {directory}/running; "
            f"while [ ! -e {directory}/release ]; do sleep 0.05; done")


@pytest.mark.parametrize("phase", HOOKS)
def test_killed_during_hook(phase, pyoci, tmp_path, scratch, leak_check):
    bundle = crash_bundle(scratch)
    marks = bundle / "rootfs" / "hook"
    marks.mkdir()
    marks.chmod(0o777)
    seen = "/hook" if phase == "startContainer" else str(marks)
    config = json.loads((bundle / "config.json").read_text())
    config["hooks"] = {phase: [{"path": "/bin/sh", "args": ["sh", "-c", hook_script(seen)]}]}
    (bundle / "config.json").write_text(json.dumps(config))
    container_id = pyoci.new_id()
    command = HOOKS[phase]
    if command != "create":
        pyoci.create(container_id, bundle)
    if command == "delete":
        pyoci.start(container_id)
    argv = pyoci.argv + [str(arg) for arg in command_line(command, bundle, container_id)]
    with open(tmp_path / "stderr", "w+") as stderr:
        runner = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=stderr)
        try:
            wait_until(lambda: (marks / "running").exists() or runner.poll() is not None,
                       f"the {phase} hook to run")
            assert runner.poll() is None, f"{command} exited {runner.returncode} before its hook"
            runner.kill()
            runner.wait()
            assert_state_is_true(pyoci, container_id)  # before the hook goes on
        finally:
            (marks / "release").touch()
            if runner.poll() is None:
                runner.kill()
                runner.wait()
    delete_and_check(pyoci, container_id, leak_check)


# ---------------------------------------------------------------- init
@pytest.mark.parametrize("started", [False, True], ids=["created", "running"])
def test_init_killed(started, pyoci, scratch, leak_check):
    bundle = crash_bundle(scratch)
    container_id = pyoci.new_id()
    pyoci.create(container_id, bundle)
    if started:
        pyoci.start(container_id)
    os.kill(pyoci.state(container_id)["pid"], signal.SIGKILL)
    pyoci.wait_for_status(container_id, "stopped")
    if not started:
        refused = pyoci.run("start", container_id, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == "cannot start a container that has stopped"
    assert_state_is_true(pyoci, container_id)
    delete_and_check(pyoci, container_id, leak_check)


# ---------------------------------------------------------------- state files
def _truncate(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def _replace_with_directory(path):
    path.unlink()
    path.mkdir()


CORRUPTIONS = {
    "truncated": _truncate,
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(b"\x00\xffnot json"),
    "a list": lambda path: path.write_text("[1, 2]"),
    "no pid": lambda path: path.write_text(json.dumps(
        {key: value for key, value in json.loads(path.read_text()).items() if key != "pid"})),
    "unreadable": _replace_with_directory,
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_unusable_state_file(corruption, pyoci, scratch, leak_check):
    """One line from every command but delete --force, which still finds the
    container's cgroups (from the config create kept) and kills what runs."""
    bundle = crash_bundle(scratch)
    container_id = pyoci.new_id()
    pyoci.create(container_id, bundle)
    pyoci.start(container_id)
    other_id = pyoci.new_id()
    pyoci.create(other_id, bundle)
    CORRUPTIONS[corruption](pyoci.root / container_id / "state.json")
    for args in (("state",), ("start",), ("kill",), ("pause",), ("delete",),
                 ("exec", container_id, "true")):
        refused = pyoci.run(*args, *(() if args[0] == "exec" else (container_id,)), check=False)
        assert refused.returncode == (255 if args[0] == "exec" else 1), args
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "state.json is unusable" in lines[0], (args, lines)
        assert "delete --force" in lines[0]
    listed = pyoci.run("list", "--quiet")
    assert listed.stdout.split() == [other_id]
    assert "state.json is unusable" in listed.stderr
    pyoci.run("delete", "--force", other_id)
    delete_and_check(pyoci, container_id, leak_check)


def test_missing_exec_fifo(pyoci, scratch, leak_check):
    """A created container whose exec.fifo was removed is still created (its
    init still waits); start says why it cannot go on; kill still works."""
    bundle = crash_bundle(scratch)
    container_id = pyoci.new_id()
    pyoci.create(container_id, bundle)
    (pyoci.root / container_id / "exec.fifo").unlink()
    assert pyoci.state(container_id)["status"] == "created"
    assert_state_is_true(pyoci, container_id)
    refused = pyoci.run("start", container_id, check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"cannot start container {container_id}: its exec.fifo is gone "
        "(delete --force removes the container)"]
    pyoci.kill(container_id, "KILL")
    pyoci.wait_for_status(container_id, "stopped")
    delete_and_check(pyoci, container_id, leak_check)


# ---------------------------------------------------------------- pid reuse
def _spawn_with_pid(pid):
    """A process of our own given PID, through the pid namespace's
    ns_last_pid (root only); None if another process took it first."""
    for _ in range(20):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        stranger = subprocess.Popen(["sleep", "1000"])
        if stranger.pid == pid:
            return stranger
        stranger.kill()
        stranger.wait()
    return None


def test_recycled_init_pid_is_never_signalled(pyoci, scratch, leak_check):
    """Once init has exited and its pid is another process's, the container
    is stopped, and neither kill nor delete reaches the stranger."""
    bundle = crash_bundle(scratch)
    container_id = pyoci.new_id()
    pyoci.create(container_id, bundle)
    pyoci.start(container_id)
    pid = pyoci.state(container_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), f"init {pid} to be reaped")
    stranger = _spawn_with_pid(pid)
    assert stranger is not None, f"pid {pid} could not be taken again"
    try:
        assert pyoci.state(container_id)["status"] == "stopped"
        refused = pyoci.run("kill", container_id, "KILL", check=False)
        assert (refused.returncode, refused.stderr.strip()) == (1, "container not running")
        pyoci.run("kill", "--all", container_id, "KILL")
        pyoci.delete(container_id)
        assert stranger.poll() is None, "the stranger with init's old pid was signalled"
    finally:
        stranger.kill()
        stranger.wait()
    assert_nothing_left(leak_check)


# ---------------------------------------------------------------- full disk
def test_full_disk_under_root(pyoci, scratch, leak_check):
    """--root on a full filesystem: create fails in one line when it writes
    state.json, and leaves nothing, not even a half-written file."""
    root = scratch / "full"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", root], check=True)
    with open(root / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    runtime = type(pyoci)(pyoci.argv[0], root)
    container_id = runtime.new_id()
    failed = runtime.run("create", "--bundle", crash_bundle(scratch), container_id, check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"write {root}/{container_id}/state.json: no space left on device"]
    assert sorted(os.listdir(root)) == ["filler"]
    assert_nothing_left(leak_check)
