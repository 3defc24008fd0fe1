"""pyoci-specific lifecycle behaviour on real containers (root)."""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conformance.bundle import make_bundle
from conformance.harness import read_until_closed, wait_until

pytestmark = pytest.mark.root


def wait_exited(pid):
    def exited():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    wait_until(exited, f"process {pid} to exit")


def run_foreground(pyoci, bundle, container_id, timeout=30, **popen):
    return subprocess.run(pyoci.argv + ["run", "--bundle", str(bundle), container_id],
                          capture_output=True, text=True, timeout=timeout, **popen)


def without_pid_namespace(config):
    """PID 1 of a pid namespace cannot be killed from inside; share the host's."""
    namespaces = config["linux"]["namespaces"]
    namespaces[:] = [ns for ns in namespaces if ns["type"] != "pid"]


@pytest.mark.parametrize("script, status", [("exit 0", 0), ("exit 3", 3),
                                            ("kill -9 $$", 128 + 9)])
def test_run_exits_with_container_status(pyoci, tmp_path, script, status):
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", f"echo out; echo err >&2; {script}"],
                         mutate=without_pid_namespace)
    container_id = pyoci.new_id()
    result = run_foreground(pyoci, bundle, container_id)
    assert result.returncode == status
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert not pyoci.exists(container_id), "run removes the container after it exits"


def test_run_forwards_signals(pyoci, tmp_path):
    bundle = make_bundle(tmp_path / "b", [
        "sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"])
    proc = subprocess.Popen(pyoci.argv + ["run", "--bundle", str(bundle), pyoci.new_id()],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 7
    assert proc.stdout.read() == "got TERM\n"


def test_run_detached_leaves_container_running(pyoci, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    container_id = pyoci.new_id()
    pyoci.run("run", "--detach", "--bundle", bundle, container_id)
    assert pyoci.state(container_id)["status"] == "running"


def test_state_is_derived_from_the_system(pyoci, probe):
    container_id, _ = probe.container("running")
    state = pyoci.state(container_id)
    os.kill(state["pid"], signal.SIGKILL)
    stopped = pyoci.wait_for_status(container_id, "stopped")
    assert stopped["pid"] == 0
    recorded = json.loads((pyoci.root / container_id / "state.json").read_text())
    assert recorded["pid"] == state["pid"], "state.json is not rewritten by state"


def test_reused_pid_is_not_the_container(pyoci, probe):
    """A different process with the recorded pid (other start time) means stopped."""
    container_id, _ = probe.container("running")
    state_file = pyoci.root / container_id / "state.json"
    recorded = json.loads(state_file.read_text())
    recorded["pid_start_time"] -= 1
    state_file.write_text(json.dumps(recorded))
    assert pyoci.state(container_id)["status"] == "stopped"


def test_pid_file_is_decimal_without_newline(pyoci, probe, tmp_path):
    container_id = pyoci.new_id()
    pid_file = tmp_path / "pidfile"
    bundle = probe.bundle("true")
    pyoci.run("create", "--bundle", bundle, "--pid-file", pid_file, container_id)
    text = pid_file.read_text()
    assert text == str(pyoci.state(container_id)["pid"])
    assert list(tmp_path.glob("pidfile*")) == [pid_file], "written via temp + rename"


def test_created_container_waits_in_pyoci_waiter_not_python(pyoci, probe):
    container_id, _ = probe.container("created")
    pid = pyoci.state(container_id)["pid"]
    exe = os.readlink(f"/proc/{pid}/exe")
    assert exe.startswith("/memfd:pyoci-waiter"), exe
    assert "python" not in Path(f"/proc/{pid}/maps").read_text()


def ignore_every_signal():
    """In the child about to exec pyoci: ignore signals 1-64, glibc's reserved
    32 and 33 included (only the raw syscall reaches those)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    ignore = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # handler SIG_IGN, flags, restorer, mask
    for signum in range(1, 65):
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            libc.syscall(13, signum, ignore, None, 8)  # rt_sigaction on x86_64


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="raw rt_sigaction number is x86_64's")
def test_program_gets_default_signals_and_only_its_fds(pyoci, tmp_path):
    """Whatever pyoci inherited, the program starts with default dispositions,
    nothing blocked, and no fd but its stdio (ls, exec'd last, lists its own
    directory fd as the lowest free number: 3 when nothing leaked)."""
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; "
                                          "exec ls /proc/self/fd"])
    result = subprocess.run(pyoci.argv + ["run", "--bundle", str(bundle), pyoci.new_id()],
                            capture_output=True, text=True, timeout=30,
                            preexec_fn=ignore_every_signal)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "SigBlk:\t0000000000000000" in lines
    assert "SigIgn:\t0000000000000000" in lines
    assert sorted(lines[2:], key=int) == ["0", "1", "2", "3"], result.stderr


def test_preserve_fds_and_listen_fds(pyoci, tmp_path):
    """--preserve-fds N passes fds 3..3+N-1; LISTEN_FDS adds socket-activation fds after them."""
    payload = tmp_path / "payload"
    payload.write_text("preserved\n")
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "cat <&3; cat <&4; echo $LISTEN_FDS $LISTEN_PID"])
    command = " ".join(pyoci.argv + ["run", "--preserve-fds", "1", "--bundle", str(bundle),
                                     pyoci.new_id()])
    result = subprocess.run(["sh", "-c", f"exec 3<{payload} 4<{payload}; exec {command}"],
                            capture_output=True, text=True, timeout=30,
                            env={**os.environ, "LISTEN_FDS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "preserved\npreserved\n1 1\n"


def test_no_pivot_runs_in_rootfs(pyoci, tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "ls /; cat /proc/self/mountinfo | head -1"])
    result = subprocess.run(pyoci.argv + ["run", "--no-pivot", "--bundle", str(bundle), pyoci.new_id()],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "bin" in result.stdout.split() and "work" not in result.stdout.split()


def test_list_formats(pyoci, probe):
    container_id, bundle = probe.container("created")
    table = pyoci.run("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert table[1].split()[:3] == [container_id, str(pyoci.state(container_id)["pid"]), "created"]
    listed = json.loads(pyoci.run("list", "--format", "json").stdout)
    assert [entry["id"] for entry in listed] == [container_id]
    assert set(listed[0]) >= {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}
    assert pyoci.run("list", "-q").stdout == container_id + "\n"


def test_list_json_of_nothing_is_null_like_runc(pyoci):
    assert pyoci.run("list", "--format", "json").stdout.strip() == "null"


def test_kill_all_signals_every_process_in_the_cgroup(pyoci, probe):
    container_id, bundle = probe.container("running")
    pyoci.run("kill", "--all", container_id, "KILL")
    pyoci.wait_for_status(container_id, "stopped")


def test_delete_force_of_running_container_removes_everything(pyoci, probe, leak_check):
    container_id, _ = probe.container("running")
    pid = pyoci.state(container_id)["pid"]
    pyoci.run("delete", "--force", container_id)
    assert not pyoci.exists(container_id)
    wait_exited(pid)
    assert leak_check.leftovers() == {}


def test_interrupted_create_is_cleaned_by_delete_force(pyoci, probe, leak_check):
    """A crash mid-create (here: pyoci killed while a hook runs) leaves a record
    that delete --force undoes: init, cgroups and the state directory."""
    marker = probe.directory / "hook-pid"
    bundle = probe.bundle("true", mutate=lambda c: c.update(hooks={"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ >{marker}.tmp; mv {marker}.tmp {marker}; exec sleep 60"]}]}))
    container_id = pyoci.new_id()
    proc = subprocess.Popen(pyoci.argv + ["create", "--bundle", str(bundle), container_id])
    wait_until(marker.exists, "the hook to start")
    proc.kill()
    proc.wait()
    assert pyoci.state(container_id)["status"] in ("creating", "stopped")
    pyoci.run("delete", "--force", container_id)
    assert not pyoci.exists(container_id)
    hook_pid = int(marker.read_text())
    os.kill(hook_pid, signal.SIGKILL)  # the hook is not the runtime's to end
    wait_exited(hook_pid)
    assert leak_check.leftovers() == {}


def test_log_json_has_runc_shape(pyoci, tmp_path):
    log = tmp_path / "log.json"
    result = pyoci.run("--log", log, "--log-format", "json", "state", "missing-container", check=False)
    assert result.returncode == 1
    assert result.stderr == 'container "missing-container" does not exist\n'
    last = json.loads(log.read_text().splitlines()[-1])
    assert set(last) == {"level", "msg", "time"}
    assert last["level"] == "error" and "does not exist" in last["msg"]


def test_existing_id_is_refused(pyoci, probe):
    container_id, bundle = probe.container("created")
    result = pyoci.run("create", "--bundle", bundle, container_id, check=False)
    assert result.returncode == 1
    assert result.stderr == f"container with id exists: {container_id}\n"
    assert pyoci.state(container_id)["status"] == "created"


def test_delete_of_running_container_names_its_status(pyoci, probe):
    container_id, _ = probe.container("running")
    result = pyoci.run("delete", container_id, check=False)
    assert result.returncode == 1
    assert result.stderr == f"cannot delete container {container_id} that is not stopped: running\n"


def test_kill_of_stopped_container_says_not_running(pyoci, probe):
    container_id, _ = probe.container("stopped")
    result = pyoci.run("kill", container_id, "KILL", check=False)
    assert (result.returncode, result.stderr) == (1, "container not running\n")


def test_start_of_stopped_container(pyoci, probe):
    container_id, _ = probe.container("stopped")
    result = pyoci.run("start", container_id, check=False)
    assert (result.returncode, result.stderr) == (1, "cannot start a container that has stopped\n")


def test_foreground_run_with_terminal_proxies_the_pty(pyoci, tmp_path):
    """As runc: `run` in the foreground with terminal=true and no console
    socket allocates the pty itself and copies it to and from its own stdio."""
    import pty
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "tty; read line; echo got $line; exit 4"],
                         mutate=lambda c: c["process"].update(terminal=True))
    pid, master = pty.fork()
    if pid == 0:
        os.execv(pyoci.argv[0], pyoci.argv + ["run", "--bundle", str(bundle), pyoci.new_id()])
    output = b""
    while b"/dev/pts/" not in output:
        output += os.read(master, 1024)
    os.write(master, b"hello\r")
    output += read_until_closed(master)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 4
    assert b"/dev/pts/0" in output and b"got hello" in output


def test_debug_log_traces_the_lifecycle(pyoci, probe, tmp_path):
    log = tmp_path / "debug.json"
    container_id = pyoci.new_id()
    pyoci.run("--debug", "--log-format", "json", "--log", log, "create", "--bundle",
              probe.bundle("true"), container_id)
    pyoci.run("--debug", "--log-format", "json", "--log", log, "delete", "--force", container_id)
    messages = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
    assert any(m.startswith(f"create {container_id}: init ") for m in messages)
    assert any(m.startswith(f"delete {container_id}: status created") for m in messages)
