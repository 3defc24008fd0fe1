"""containerd (ctr, containerd-shim-runc-v2) running tasks with the runtime under test.

ctr's shim calls the runtime given by ``ctr run --runc-binary``; its state
root is ``--runc-root``/<namespace>.
"""
import uuid

import pytest

from conformance.engines import helpers
from conformance.engines.helpers import IMAGE, wait_until

helpers.require_engine("containerd", "ctr", "containerd-shim-runc-v2")

pytestmark = pytest.mark.engine

FOREVER = ["sleep", "600"]


def new_id():
    return f"eng-{uuid.uuid4().hex[:12]}"


def wait_for_status(ctr, container_id, status):
    wait_until(lambda: ctr.task_status(container_id) == status,
               f"task {container_id} to be {status}")


def test_run_foreground(ctr):
    container_id = new_id()
    done = ctr("run", "--rm", *ctr.runtime_args(), IMAGE, container_id, "sh", "-c",
               "echo hello from ctr; exit 3", check=False)
    assert done.returncode == 3, helpers.describe(done)
    assert done.stdout == "hello from ctr\n"
    assert container_id not in ctr("container", "ls", "-q").stdout.split()


def test_run_foreground_with_tty(ctr):
    container_id = new_id()
    status, output = helpers.run_in_pty(
        [helpers.tool("ctr"), "--address", ctr.containerd.socket, "--namespace", ctr.NAMESPACE,
         "run", "--rm", "--tty", *map(str, ctr.runtime_args()), IMAGE, container_id, "sh", "-c",
         f"tty; {helpers.STTY_SIZE_WHEN_SET}; exit 6"], rows=27, cols=93)
    assert status == 6, output
    assert "/dev/pts/0" in output
    assert "27 93" in output


def test_run_detached_then_kill_and_delete(ctr):
    container_id = ctr.run_detached(new_id(), *FOREVER)
    pid, status = ctr.tasks()[container_id]
    assert status == "RUNNING"
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        assert cmdline.read().split(b"\0")[0] == b"sleep"
    ctr("task", "kill", "--signal", "SIGKILL", container_id)
    wait_for_status(ctr, container_id, "STOPPED")
    # `ctr task delete` reports a non-zero exit status of the task.
    assert "exit code 137" in ctr("task", "delete", container_id).stderr
    ctr("container", "delete", container_id)


def test_task_exec(ctr):
    container_id = ctr.run_detached(new_id(), *FOREVER)
    done = ctr("task", "exec", "--exec-id", "exec-1", container_id, "sh", "-c",
               "echo from-exec; exit 4", check=False)
    assert done.returncode == 4, helpers.describe(done)
    assert done.stdout == "from-exec\n"
    done = ctr("task", "exec", "--exec-id", "exec-2", "--user", "65534", "--cwd", "/tmp",
               container_id, "sh", "-c", "id -u; pwd; cat /proc/1/cmdline")
    assert done.stdout.split("\n")[:2] == ["65534", "/tmp"]
    assert done.stdout.split("\n")[2].startswith("sleep")


def test_task_kill_term_trapped(ctr):
    container_id = ctr.run_detached(new_id(), "sh", "-c",
                                    'trap "exit 0" TERM; touch /ready; '
                                    "while :; do sleep 0.1; done")
    wait_until(lambda: ctr("task", "exec", "--exec-id", "probe", container_id, "test", "-e",
                           "/ready", check=False).returncode == 0, "the TERM trap to be set")
    ctr("task", "kill", container_id)  # SIGTERM
    wait_for_status(ctr, container_id, "STOPPED")
    assert "exit code" not in ctr("task", "delete", container_id).stderr


def test_task_pause_resume(ctr):
    container_id = ctr.run_detached(new_id(), *FOREVER)
    ctr("task", "pause", container_id)
    wait_for_status(ctr, container_id, "PAUSED")
    ctr("task", "resume", container_id)
    wait_for_status(ctr, container_id, "RUNNING")


def test_task_ps(ctr):
    container_id = ctr.run_detached(new_id(), *FOREVER)
    pid, _ = ctr.tasks()[container_id]
    done = ctr("task", "ps", container_id)
    listed = [int(line.split()[0]) for line in done.stdout.splitlines()[1:] if line.strip()]
    assert pid in listed, done.stdout


def test_task_metrics(ctr):
    container_id = ctr.run_detached(new_id(), *FOREVER)
    done = ctr("task", "metrics", container_id)
    metrics = dict(line.split(None, 1) for line in done.stdout.splitlines()[1:] if line.strip())
    assert int(metrics["pids.current"]) >= 1, done.stdout
    assert int(metrics.get("memory.usage_in_bytes", metrics.get("memory.usage", "0"))) > 0


def _processes_in_pid_namespace_of(pid, argv):
    """Pids of processes running ARGV in PID's pid namespace."""
    import os
    namespace = os.readlink(f"/proc/{pid}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:-1] == [a.encode() for a in argv]:
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_a_task_sharing_a_pid_namespace_takes_its_children_when_it_exits(ctr):
    """As in a Kubernetes pod with shareProcessNamespace: when the task's init
    exits, the shim runs `kill --all ID 9` and the task's children go too."""
    first = ctr.run_detached(new_id(), *FOREVER)
    first_pid, _ = ctr.tasks()[first]
    orphan = ["sleep", "301"]
    second = ctr.run_detached(new_id(), "sh", "-c", "sleep 301 & sleep 1",
                              options=("--with-ns", f"pid:/proc/{first_pid}/ns/pid"))
    wait_for_status(ctr, second, "STOPPED")
    wait_until(lambda: not _processes_in_pid_namespace_of(first_pid, orphan),
               "the exited task's child to be killed")
    ctr("task", "delete", second, check=False)
    ctr("container", "delete", second)
