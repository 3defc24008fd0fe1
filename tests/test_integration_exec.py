"""`pyoci exec` on real containers (root)."""
import json
import os
import pty
import subprocess
from pathlib import Path

import pytest

from conformance.bundle import make_bundle
from conformance.harness import ConsoleSocket, read_until_closed, wait_until

pytestmark = pytest.mark.root


@pytest.fixture
def running(pyoci, tmp_path):
    """A running container (sleeping) and its id."""
    def settings(config):
        config["process"]["capabilities"] = {s: ["CAP_KILL", "CAP_CHOWN"] for s in
                                             ("bounding", "effective", "permitted")}
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    bundle = make_bundle(tmp_path / "b", ["sleep", "1000"], mutate=settings)
    container_id = pyoci.new_id()
    pyoci.run("run", "--detach", "--bundle", bundle, container_id)
    return container_id


def exec_(pyoci, *args, **kwargs):
    """Run `pyoci exec`; output through files, since a detached process keeps
    whatever stdio it was given."""
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        result = subprocess.run(pyoci.argv + ["exec", *args], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, timeout=30, **kwargs)
        out.seek(0)
        err.seek(0)
        result.stdout, result.stderr = out.read().decode(), err.read().decode()
    return result


def test_exec_joins_the_containers_namespaces_and_cgroups(pyoci, running):
    init_pid = pyoci.state(running)["pid"]
    result = exec_(pyoci, running, "sh", "-c",
                   "for n in mnt pid net ipc uts; do readlink /proc/self/ns/$n; done; "
                   "cat /proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, inside in zip(("mnt", "pid", "net", "ipc", "uts"), lines):
        assert inside == os.readlink(f"/proc/{init_pid}/ns/{name}"), name
    memory = next(line for line in lines if ":memory:" in line)
    assert memory.endswith(f"/{running}")


def test_exec_exit_status_and_runtime_failures(pyoci, running):
    assert exec_(pyoci, running, "sh", "-c", "exit 7").returncode == 7
    missing = exec_(pyoci, running, "no-such-program")
    assert (missing.returncode, missing.stderr) == (
        255, 'exec failed: exec: "no-such-program": executable file not found in $PATH\n')
    unknown = exec_(pyoci, "no-such-container", "true")
    assert unknown.returncode == 255 and "does not exist" in unknown.stderr


def test_exec_flags_set_user_cwd_env_and_caps(pyoci, running):
    result = exec_(pyoci, "--user", "1000:1000", "--additional-gids", "5", "--cwd", "/tmp",
                   "--env", "FOO=bar", running, "sh", "-c", "id; readlink /proc/self/cwd; echo $FOO")
    assert result.stdout.split("\n")[:3] == ["uid=1000 gid=1000 groups=5", "/tmp", "bar"]
    caps = exec_(pyoci, "--cap", "CAP_NET_RAW", running, "grep", "CapEff", "/proc/self/status")
    effective = int(caps.stdout.split()[1], 16)
    assert effective == (1 << 5) | (1 << 0) | (1 << 13)  # KILL, CHOWN, NET_RAW


def test_exec_runs_under_the_containers_seccomp_filter(pyoci, running):
    result = exec_(pyoci, running, "sh", "-c", "grep Seccomp: /proc/self/status; /bin/pwd")
    assert "Seccomp:\t2" in result.stdout
    assert "Permission denied" in result.stderr


def test_exec_process_file(pyoci, running, tmp_path):
    """As podman and containerd call it: --process FILE --detach --pid-file P."""
    process = {"args": ["sh", "-c", "echo $GREETING from $(readlink /proc/self/cwd) as $(id -u) >/tmp/said"],
               "env": ["GREETING=hello", "PATH=/bin"], "cwd": "/etc", "user": {"uid": 0, "gid": 0},
               "terminal": False}
    process_file = tmp_path / "process.json"
    process_file.write_text(json.dumps(process))
    pid_file = tmp_path / "exec.pid"
    result = exec_(pyoci, "--process", str(process_file), "--detach", "--pid-file",
                   str(pid_file), running)
    assert result.returncode == 0, result.stderr
    assert pid_file.read_text().isdigit()
    said = tmp_path / "b" / "rootfs" / "tmp" / "said"
    assert wait_until(lambda: said.exists() and said.read_text(), "the process's output") == \
        "hello from /etc as 0\n"


def test_exec_process_file_is_validated(pyoci, running, tmp_path):
    process_file = tmp_path / "process.json"
    process_file.write_text(json.dumps({"args": "not-a-list", "cwd": "/"}))
    result = exec_(pyoci, "--process", str(process_file), running)
    assert result.returncode == 255
    assert result.stderr.startswith("exec failed: process: process.args: ")


def test_exec_detached_pid_file_names_a_process_in_the_container(pyoci, running, tmp_path):
    pid_file = tmp_path / "pid"
    result = exec_(pyoci, "--detach", "--pid-file", str(pid_file), running, "sleep", "30")
    assert result.returncode == 0, result.stderr
    pid = int(pid_file.read_text())
    init_cgroups = Path(f"/proc/{pyoci.state(running)['pid']}/cgroup").read_text()
    assert Path(f"/proc/{pid}/cgroup").read_text() == init_cgroups
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(
        f"/proc/{pyoci.state(running)['pid']}/ns/pid")


def test_exec_of_a_stopped_container_fails(pyoci, probe):
    container_id, _ = probe.container("stopped")
    result = exec_(pyoci, container_id, "true")
    assert (result.returncode, result.stderr) == (255, "exec failed: cannot exec in a stopped container\n")


def test_exec_tty_sends_the_master_to_the_console_socket(pyoci, running, tmp_path):
    console = ConsoleSocket(tmp_path / "console.sock")
    result = exec_(pyoci, "--tty", "--detach", "--console-socket", console.path, running,
                   "sh", "-c", "tty; test -t 1 && echo isatty")
    assert result.returncode == 0, result.stderr
    master = console.received_master()
    output = read_until_closed(master)
    os.close(master)
    assert output.decode().split("\n")[:2] == ["/dev/pts/0", "isatty"]


def test_exec_tty_in_the_foreground_proxies_the_pty(pyoci, running):
    pid, master = pty.fork()
    if pid == 0:
        os.execv(pyoci.argv[0], pyoci.argv + ["exec", "--tty", running, "sh", "-c", "tty; exit 3"])
    output = read_until_closed(master)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert b"/dev/pts/" in output


def test_exec_preserve_fds(pyoci, running, tmp_path):
    payload = tmp_path / "payload"
    payload.write_text("passed in\n")
    command = " ".join(pyoci.argv + ["exec", "--preserve-fds", "1", running, "cat", "/proc/self/fd/3"])
    result = subprocess.run(["sh", "-c", f"exec 3<{payload}; exec {command}"],
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == "passed in\n", result.stderr
