"""podman (with conmon and netavark) running containers with the runtime under test."""
import socket
import time

import pytest

from conformance.engines import helpers
from conformance.engines.helpers import IMAGE, wait_until
from conformance.harness import criu_problem

helpers.require_engine("podman", "conmon")

pytestmark = pytest.mark.engine

FOREVER = ["sleep", "600"]
# Inside the container: its own cgroup's limit (v2 file, else v1).
MEMORY_LIMIT_FILE = helpers.MEMORY_LIMIT_FILE
PIDS_LIMIT_FILE = helpers.PIDS_LIMIT_FILE


def test_run_output_and_exit_status(podman):
    done = podman("run", "--rm", IMAGE, "sh", "-c",
                  "echo hello from podman; echo to stderr >&2; exit 3", check=False)
    assert done.returncode == 3, helpers.describe(done)
    assert done.stdout == "hello from podman\n"
    assert "to stderr" in done.stderr


def test_run_exit_status_of_signalled_process(podman):
    # PID 1 ignores signals it has no handler for, even SIGKILL from inside:
    # a child kills itself and PID 1 passes its status (128 + 9) on.
    done = podman("run", "--rm", IMAGE, "sh", "-c", 'sh -c "kill -9 \\$\\$"; exit $?',
                  check=False)
    assert done.returncode == 137, helpers.describe(done)


def test_missing_executable_is_exit_127(podman):
    done = podman("run", "--rm", IMAGE, "/no/such/program", check=False)
    assert done.returncode == 127, helpers.describe(done)


def test_detached_run_and_logs(podman):
    cid = podman.run_detached(IMAGE, "sh", "-c", "echo out-line; echo err-line >&2; exec sleep 600")
    assert podman.inspect(cid, "{{.State.Status}}") == "running"
    wait_until(lambda: {"out-line", "err-line"} <= set(podman("logs", cid).stdout.split()
                                                       + podman("logs", cid).stderr.split()),
               "both lines in podman logs")
    podman("rm", "-f", "-t", "0", cid)


def test_exec_output_and_status(podman):
    cid = podman.run_detached(IMAGE, *FOREVER)
    assert podman("exec", cid, "sh", "-c", "echo in-container").stdout == "in-container\n"
    done = podman("exec", cid, "sh", "-c", "exit 5", check=False)
    assert done.returncode == 5, helpers.describe(done)
    # The exec'd process shares the container's pid namespace: sleep is PID 1.
    assert podman("exec", cid, "cat", "/proc/1/cmdline").stdout.split("\0")[0] == "sleep"


def test_exec_user_env_workdir(podman):
    cid = podman.run_detached(IMAGE, *FOREVER)
    done = podman("exec", "--user", "nobody", "--env", "GREETING=hi there", "--workdir", "/tmp",
                  cid, "sh", "-c", 'id; echo "$GREETING"; pwd')
    lines = done.stdout.splitlines()
    assert lines[0].startswith("uid=65534(nobody) gid=65534(nobody)"), done.stdout
    assert lines[1:] == ["hi there", "/tmp"]


def test_interactive_run_with_tty(podman):
    status, output = helpers.run_in_pty(
        [*podman.argv, "run", "--rm", "-it", IMAGE, "sh"], env=podman.env, rows=33, cols=101,
        steps=[("# ", b"tty; stty size; echo done-$((6*7)); exit 7\r")])
    assert status == 7, output
    assert "/dev/pts/0" in output
    assert "33 101" in output
    assert "done-42" in output


def test_exec_with_tty(podman):
    cid = podman.run_detached(IMAGE, *FOREVER)
    status, output = helpers.run_in_pty(
        [*podman.argv, "exec", "-it", cid, "sh", "-c", "tty; stty size; exit 4"],
        env=podman.env, rows=21, cols=77)
    assert status == 4, output
    assert "/dev/pts/" in output
    assert "21 77" in output


def test_stop_container_trapping_term(podman):
    cid = podman.run_detached(
        IMAGE, "sh", "-c", 'trap "echo got-term; exit 0" TERM; echo ready; '
                           "while :; do sleep 0.1; done")
    wait_until(lambda: "ready" in podman("logs", cid).stdout, "the TERM trap to be set")
    started = time.monotonic()
    podman("stop", "--time", "30", cid)
    assert time.monotonic() - started < 15
    assert podman.inspect(cid, "{{.State.ExitCode}}") == "0"
    assert "got-term" in podman("logs", cid).stdout


def test_stop_container_ignoring_term_is_killed(podman):
    cid = podman.run_detached(IMAGE, "sh", "-c", 'trap "" TERM; echo ready; '
                                                 "while :; do sleep 0.1; done")
    wait_until(lambda: "ready" in podman("logs", cid).stdout, "TERM to be ignored")
    started = time.monotonic()
    podman("stop", "--time", "1", cid)
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 15
    assert podman.inspect(cid, "{{.State.ExitCode}}") == "137"


def test_kill(podman):
    cid = podman.run_detached(IMAGE, *FOREVER)
    podman("kill", cid)
    assert podman("wait", cid).stdout.strip() == "137"
    assert podman.inspect(cid, "{{.State.Status}}") == "exited"


def test_kill_with_signal(podman):
    cid = podman.run_detached(IMAGE, "sh", "-c", 'trap "echo got-usr1; exit 9" USR1; echo ready; '
                                                 "while :; do sleep 0.1; done")
    wait_until(lambda: "ready" in podman("logs", cid).stdout, "the USR1 trap to be set")
    podman("kill", "--signal", "USR1", cid)
    assert podman("wait", cid).stdout.strip() == "9"
    assert "got-usr1" in podman("logs", cid).stdout


def test_pause_unpause(podman):
    cid = podman.run_detached(IMAGE, "sh", "-c", "while :; do echo tick; sleep 0.1; done")

    def ticks():
        return podman("logs", cid).stdout.count("tick")

    wait_until(lambda: ticks() > 0, "the first tick")
    podman("pause", cid)
    assert podman.inspect(cid, "{{.State.Status}}") == "paused"
    time.sleep(0.5)
    frozen = ticks()
    time.sleep(1)
    assert ticks() == frozen, "a paused container kept running"
    podman("unpause", cid)
    assert podman.inspect(cid, "{{.State.Status}}") == "running"
    wait_until(lambda: ticks() > frozen, "ticks after unpause")


def test_top(podman):
    cid = podman.run_detached(IMAGE, *FOREVER)
    done = podman("top", cid)
    assert "sleep 600" in done.stdout, done.stdout


def test_rm_force_running_container(podman):
    cid = podman.run_detached(IMAGE, *FOREVER)
    started = time.monotonic()
    podman("rm", "-f", "--time", "2", cid)  # sleep, as PID 1, ignores the TERM that comes first
    assert time.monotonic() - started < 15
    assert cid not in podman("ps", "-a", "-q", "--no-trunc").stdout


def test_memory_limit_visible_inside(podman):
    done = podman("run", "--rm", "--memory", "64m", IMAGE, "sh", "-c", f"cat {MEMORY_LIMIT_FILE}")
    assert done.stdout.strip() == str(64 * 1024 * 1024)


def test_pids_limit_visible_inside(podman):
    done = podman("run", "--rm", "--pids-limit", "42", IMAGE, "sh", "-c", f"cat {PIDS_LIMIT_FILE}")
    assert done.stdout.strip() == "42"


def test_update_memory_limit(podman):
    cid = podman.run_detached("--memory", "64m", IMAGE, *FOREVER)
    podman("update", "--memory", "128m", cid)
    done = podman("exec", cid, "sh", "-c", f"cat {MEMORY_LIMIT_FILE}")
    assert done.stdout.strip() == str(128 * 1024 * 1024)


def test_read_only(podman):
    done = podman("run", "--rm", "--read-only", IMAGE, "sh", "-c",
                  "touch /etc/x; echo rc=$?; touch /tmp/x && echo tmp-writable")
    assert "Read-only file system" in done.stderr
    assert done.stdout.split() == ["rc=1", "tmp-writable"]


def test_user(podman):
    done = podman("run", "--rm", "--user", "65534:65534", IMAGE, "id")
    assert done.stdout.startswith("uid=65534(nobody) gid=65534(nobody)")


def test_cap_drop_all(podman):
    script = "grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status"
    default = dict(line.split() for line in podman("run", "--rm", IMAGE, "sh", "-c",
                                                   script).stdout.splitlines())
    assert int(default["CapBnd:"], 16) != 0
    dropped = dict(line.split() for line in podman("run", "--rm", "--cap-drop", "ALL", IMAGE,
                                                   "sh", "-c", script).stdout.splitlines())
    assert {key: int(value, 16) for key, value in dropped.items()} == {
        "CapPrm:": 0, "CapEff:": 0, "CapBnd:": 0}


def test_network_none(podman):
    done = podman("run", "--rm", "--network", "none", IMAGE, "ls", "/sys/class/net")
    assert done.stdout.split() == ["lo"]


def test_default_bridge_network(podman):
    server = podman.run_detached(IMAGE, "sh", "-c",
                                 "while :; do echo hello-over-bridge | nc -l -p 8080; done")
    address = podman.inspect(server, "{{.NetworkSettings.IPAddress}}")
    assert address.count(".") == 3, address
    done = podman("run", "--rm", IMAGE, "sh", "-c",
                  f"for i in $(seq 50); do nc {address} 8080 && exit 0; sleep 0.2; done; exit 1")
    assert "hello-over-bridge" in done.stdout
    # And from the host, through the bridge.
    with socket.create_connection((address, 8080), timeout=10) as connection:
        connection.settimeout(10)
        assert connection.recv(100).startswith(b"hello-over-bridge")


def test_hostname(podman):
    done = podman("run", "--rm", "--hostname", "engine-box", IMAGE, "hostname")
    assert done.stdout == "engine-box\n"


def test_bind_mount(podman, tmp_path):
    (tmp_path / "in").write_text("from-host\n")
    done = podman("run", "--rm", "-v", f"{tmp_path}:/data", IMAGE, "sh", "-c",
                  "cat /data/in; echo from-container > /data/out")
    assert done.stdout == "from-host\n"
    assert (tmp_path / "out").read_text() == "from-container\n"


def test_tmpfs(podman):
    done = podman("run", "--rm", "--tmpfs", "/scratch:rw,size=1m,mode=0750", IMAGE, "sh", "-c",
                  "grep ' /scratch ' /proc/mounts; echo x > /scratch/f && cat /scratch/f")
    mount, content = done.stdout.splitlines()
    assert mount.split()[2] == "tmpfs"
    assert "size=1024k" in mount and "mode=750" in mount
    assert content == "x"


def test_env_and_workdir(podman):
    done = podman("run", "--rm", "--env", "FOO=bar", "--env", "SPACED=a b", "--workdir",
                  "/var/tmp", IMAGE, "sh", "-c", 'echo "$FOO|$SPACED"; pwd')
    assert done.stdout == "bar|a b\n/var/tmp\n"


def test_init(podman):
    done = podman("run", "--rm", "--init", IMAGE, "sh", "-c",
                  "tr '\\0' ' ' < /proc/1/cmdline; echo; kill -9 $$", check=False)
    assert done.returncode == 137, helpers.describe(done)
    assert done.stdout.startswith("/run/podman-init -- sh -c")


def test_twenty_containers_in_a_row(podman, record_property):
    started = time.monotonic()
    for number in range(20):
        done = podman("run", "--rm", IMAGE, "echo", f"container-{number}")
        assert done.stdout == f"container-{number}\n"
    record_property("seconds for 20 runs", round(time.monotonic() - started, 1))
    assert podman("ps", "-a", "-q").stdout == ""


def test_privileged_run_gets_the_hosts_devices(podman):
    """podman 4.3 passes every host device with its file-type bits in fileMode
    (S_IFBLK | 0o660 for a disk): accepted as runc does, with the permission bits."""
    device, host_mode = helpers.host_block_device()
    done = podman("run", "--rm", "--privileged", IMAGE, "stat", "-c", "%F %a", device,
                  check=False)
    assert (done.returncode, done.stdout) == (0, f"block special file {host_mode}\n"), \
        helpers.describe(done)


def test_device_option_adds_a_device(podman):
    done = podman("run", "--rm", "--device", "/dev/null:/dev/pyoci-null", IMAGE,
                  "sh", "-c", "test -c /dev/pyoci-null && echo a-device >/dev/pyoci-null && echo ok",
                  check=False)
    assert (done.returncode, done.stdout) == (0, "ok\n"), helpers.describe(done)


CRIU_PROBLEM = criu_problem()


@pytest.mark.skipif(CRIU_PROBLEM is not None,
                    reason=f"criu check fails on this kernel: {CRIU_PROBLEM}")
def test_checkpoint_and_restore(podman):
    """podman container checkpoint calls the runtime's checkpoint; restore goes
    through conmon (restore --detach --pid-file --image-path --work-path),
    which hands the container new stdio pipes (descriptors.json's inherit_fd)."""
    # /count is replaced by a rename: never empty, wherever the checkpoint freezes it.
    counter = ("i=0; while true; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; "
               "echo $i; sleep 0.1; done")
    cid = podman.run_detached("--network", "none", IMAGE, "sh", "-c", counter)

    def counted():
        text = podman("exec", cid, "cat", "/count", check=False).stdout.strip()
        return int(text) if text.isdigit() else 0
    wait_until(lambda: counted() > 3, "the counter to count")
    podman("container", "checkpoint", cid)
    assert podman.inspect(cid, "{{.State.Status}}") == "exited"
    podman("container", "restore", cid)
    assert podman.inspect(cid, "{{.State.Status}}") == "running"
    saved = counted()
    wait_until(lambda: counted() > saved, "the counter to count on")
    assert saved > 3  # from where it was, not from 1
    # Its output still reaches podman: the pipes conmon gave the restore.
    def logged():
        return max(map(int, filter(str.isdigit, podman("logs", cid).stdout.split())),
                   default=0)
    wait_until(lambda: logged() > saved, "output after the restore in podman logs")
    podman("rm", "-f", "-t", "0", cid)
