"""containerd's shims side by side: every scenario on three runtime handlers.

- ``runc``: containerd's Go shim (io.containerd.runc.v2) running runc, the reference;
- ``pyoci``: the same Go shim running pyoci (``--runc-binary``);
- ``pyoci-shim``: pyoci's own shim, containerd-shim-pyoci-v2 (io.containerd.pyoci.v2),
  which containerd finds on its PATH beside the pyoci command.

After each test, nothing of its containers is left: state dirs, cgroups,
processes (shims included), mounts.
"""
import os
import signal
import subprocess
import time
import uuid
from types import SimpleNamespace

import pytest

from conformance.engines import helpers
from conformance.engines.helpers import IMAGE, STTY_SIZE_WHEN_SET, wait_until
from conformance.harness import RUNC

helpers.require_engine("containerd", "ctr", "containerd-shim-runc-v2")

pytestmark = pytest.mark.engine

HANDLERS = ("runc", "pyoci", "pyoci-shim")
FOREVER = ["sleep", "600"]
PYOCI_SHIM_ROOT = "/run/containerd/pyoci"


class HandlerCtr(helpers.Ctr):
    """ctr running its tasks on one of HANDLERS."""

    def __init__(self, containerd, handler, runc_root):
        binary = RUNC if handler == "runc" else helpers.default_pyoci()
        super().__init__(containerd, SimpleNamespace(path=binary), runc_root,
                         **({"runtime": self.PYOCI_SHIM} if handler == "pyoci-shim" else {}))
        self.handler = handler
        self.created = []

    def new_id(self):
        container_id = f"eng-{uuid.uuid4().hex[:12]}"
        root = PYOCI_SHIM_ROOT if self.handler == "pyoci-shim" else self.runc_root
        self.created.append((container_id, os.path.join(root, self.NAMESPACE)))
        return container_id

    def run_foreground(self, container_id, *command, options=(), **run_options):
        return self("run", "--rm", *self.runtime_args(), *options, IMAGE, container_id, *command,
                    check=False, **run_options)

    def init_pid(self, container_id):
        return self.tasks()[container_id][0]


@pytest.fixture(params=HANDLERS)
def ctr(request, containerd_daemon, ctr_image, engine_tmp):
    engine = HandlerCtr(containerd_daemon, request.param, engine_tmp / "shim-test-runc-root")
    yield engine
    engine.cleanup()
    deadline = time.monotonic() + helpers.LEAK_TIMEOUT
    while (found := helpers.leftovers(engine.created)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not found, f"left behind on {request.param}: {found}"


def wait_for_status(ctr, container_id, status):
    wait_until(lambda: ctr.task_status(container_id) == status,
               f"task {container_id} to be {status}")


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def test_run_foreground_output_and_exit_status(ctr):
    done = ctr.run_foreground(ctr.new_id(), "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout) == (3, "out\n")
    assert "err\n" in done.stderr


def test_stdin_reaches_the_process_and_its_end_too(ctr):
    """ctr writes its input and closes the stdin fifo: cat sees end of file.
    On pyoci's shim only: containerd's Go shim opens the fifo only after
    the start, and input written and closed before that is lost to it (here
    ctr then waits for ever, runc as pyoci)."""
    if ctr.handler != "pyoci-shim":
        pytest.skip("containerd's Go shim loses stdin closed before it opens the fifo")
    done = ctr.run_foreground(ctr.new_id(), "sh", "-c", "cat; echo end", input="line one\nline two\n")
    assert (done.returncode, done.stdout) == (0, "line one\nline two\nend\n")


def test_stdin_written_after_the_start(ctr):
    argv = [helpers.tool("ctr"), "--address", ctr.containerd.socket, "--namespace", ctr.NAMESPACE,
            "run", "--rm", *map(str, ctr.runtime_args()), IMAGE, ctr.new_id(), "cat"]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    out, _ = process.communicate("late\n", timeout=60)
    assert (process.returncode, out) == (0, "late\n")


def test_run_with_a_terminal(ctr):
    container_id = ctr.new_id()
    status, output = helpers.run_in_pty(
        [helpers.tool("ctr"), "--address", ctr.containerd.socket, "--namespace", ctr.NAMESPACE,
         "run", "--rm", "--tty", *map(str, ctr.runtime_args()), IMAGE, container_id, "sh", "-c",
         f"tty; {STTY_SIZE_WHEN_SET}; read line; echo got $line; exit 4"],
        rows=33, cols=101, steps=[("33 101", b"typed\r")])
    assert status == 4, output
    assert "/dev/pts/0" in output and "33 101" in output and "got typed" in output


def test_a_detached_task_through_its_life(ctr):
    container_id = ctr.run_detached(ctr.new_id(), *FOREVER)
    pid, status = ctr.tasks()[container_id]
    assert status == "RUNNING" and pid > 0
    done = ctr("task", "exec", "--exec-id", "exec-1", container_id, "sh", "-c",
               "echo in exec; exit 5", check=False)
    assert (done.returncode, done.stdout) == (5, "in exec\n")
    done = ctr("task", "exec", "--exec-id", "exec-2", "--user", "65534", "--cwd", "/tmp",
               container_id, "sh", "-c", "id -u; pwd")
    assert done.stdout == "65534\n/tmp\n"
    exec_process = subprocess.Popen(
        [helpers.tool("ctr"), "--address", ctr.containerd.socket, "--namespace", ctr.NAMESPACE,
         "task", "exec", "--exec-id", "exec-3", container_id, "sleep", "30"])
    try:
        listed = wait_until(lambda: (lambda rows: rows if len(rows) == 2 else None)(
            [line.split() for line in ctr("task", "ps", container_id).stdout.splitlines()[1:]]),
            "ps to list the exec process")
        assert {int(row[0]) for row in listed} >= {pid}
        # ctr prints the exec's ProcessDetails as Go formats it
        assert sorted("exec-3" if "ExecID:exec-3," in row[1] else row[1] for row in listed) \
            == ["-", "exec-3"]
    finally:
        ctr("task", "kill", "--exec-id", "exec-3", "--signal", "SIGKILL", container_id,
            check=False)
        exec_process.wait(timeout=30)
    ctr("task", "pause", container_id)
    wait_for_status(ctr, container_id, "PAUSED")
    ctr("task", "resume", container_id)
    wait_for_status(ctr, container_id, "RUNNING")
    metrics = dict(line.split(None, 1) for line in
                   ctr("task", "metrics", container_id).stdout.splitlines()[3:] if line.strip())
    assert int(metrics["pids.current"]) >= 1
    assert int(metrics.get("memory.usage_in_bytes", metrics.get("memory.usage", "0"))) > 0
    ctr("task", "kill", "--signal", "SIGKILL", container_id)
    wait_for_status(ctr, container_id, "STOPPED")
    assert "exit code 137" in ctr("task", "delete", container_id).stderr
    ctr("container", "delete", container_id)


def test_exec_with_a_terminal(ctr):
    container_id = ctr.run_detached(ctr.new_id(), *FOREVER)
    status, output = helpers.run_in_pty(
        [helpers.tool("ctr"), "--address", ctr.containerd.socket, "--namespace", ctr.NAMESPACE,
         "task", "exec", "--tty", "--exec-id", "tty-1", container_id, "sh", "-c",
         f"tty; {STTY_SIZE_WHEN_SET}; exit 6"], rows=20, cols=70)
    assert status == 6, output
    assert "/dev/pts/" in output and "20 70" in output


def test_sigterm_trapped_and_the_task_ends_cleanly(ctr):
    container_id = ctr.run_detached(ctr.new_id(), "sh", "-c",
                                    "trap 'exit 0' TERM; touch /ready; while :; do sleep 0.1; done")
    wait_until(lambda: ctr("task", "exec", "--exec-id", "probe", container_id, "test", "-e",
                           "/ready", check=False).returncode == 0, "the trap to be set")
    ctr("task", "kill", container_id)
    wait_for_status(ctr, container_id, "STOPPED")
    assert "exit code" not in ctr("task", "delete", container_id).stderr
    ctr("container", "delete", container_id)


def test_the_events_containerd_sees(ctr):
    """Every handler publishes a task's events in the same order."""
    container_id = ctr.new_id()
    events = subprocess.Popen([helpers.tool("ctr"), "--address", ctr.containerd.socket,
                               "--namespace", ctr.NAMESPACE, "events"],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        ctr.run_detached(container_id, *FOREVER)
        ctr("task", "exec", "--exec-id", "x", container_id, "true")
        ctr("task", "pause", container_id)
        ctr("task", "resume", container_id)
        ctr("task", "kill", "--signal", "SIGKILL", container_id)
        wait_for_status(ctr, container_id, "STOPPED")
        ctr("task", "delete", container_id, check=False)
        time.sleep(1)
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=30)
    topics = [line.split()[5] for line in out.splitlines()
              if line.split()[5:6] and line.split()[5].startswith("/tasks/") and container_id in line]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started",
                      "/tasks/exit", "/tasks/paused", "/tasks/resumed", "/tasks/exit",
                      "/tasks/delete"], out
    ctr("container", "delete", container_id)


def shim_client(ctr, container_id):
    """A ttrpc client of the task's shim, at the address in its bundle."""
    from pyoci.shim import ttrpc
    bundle = ctr.containerd.state / "io.containerd.runtime.v2.task" / ctr.NAMESPACE / container_id
    address = (bundle / "address").read_text().strip()
    return ttrpc.Client(address[len("unix://"):], [("containerd-namespace-ttrpc", ctr.NAMESPACE)])


def test_update_resources(ctr):
    """Update, as CRI's UpdateContainerResources sends it (ctr 1.6 has no
    `task update`): LinuxResources JSON in an Any, straight to the shim."""
    from pyoci.shim import messages as m
    container_id = ctr.run_detached(ctr.new_id(), *FOREVER)
    client = shim_client(ctr, container_id)
    try:
        client.call(m.TASK_SERVICE, "Update", m.UPDATE_TASK_REQUEST, m.UPDATE_TASK_REQUEST.new(
            id=container_id, resources=m.ANY.new(
                type_url=m.SPEC_RESOURCES_URL,
                value=b'{"memory": {"limit": 67108864}, "pids": {"limit": 42}}')), m.EMPTY)
        state = client.call(m.TASK_SERVICE, "State", m.STATE_REQUEST,
                            m.STATE_REQUEST.new(id=container_id), m.STATE_RESPONSE)
    finally:
        client.close()
    assert (state["id"], state["status"], state["pid"]) == (
        container_id, m.RUNNING, ctr.init_pid(container_id))
    assert limits_of(ctr.init_pid(container_id)) == (67108864, 42)


def limits_of(pid):
    """(memory limit, pids limit) of PID's cgroups, as the host sees them."""
    files = (helpers.cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max"),
             helpers.cgroup_file(pid, "pids", "pids.max"))
    return tuple(int(open(name).read()) for name in files)


def test_what_a_shim_refuses(ctr):
    """The calls' errors containerd tells apart by their codes."""
    from pyoci.shim import messages as m, ttrpc
    container_id = ctr.run_detached(ctr.new_id(), *FOREVER)
    client = shim_client(ctr, container_id)
    try:
        def code(method, request_type, **fields):
            with pytest.raises(ttrpc.TtrpcError) as info:
                client.call(m.TASK_SERVICE, method, request_type, request_type.new(**fields),
                            m.EMPTY)
            return info.value.code
        assert code("State", m.STATE_REQUEST, id="no-such-container") == ttrpc.NOT_FOUND
        assert code("Kill", m.KILL_REQUEST, id=container_id, exec_id="no-such-exec",
                    signal=9) == ttrpc.NOT_FOUND
        assert code("Checkpoint", m.CHECKPOINT_TASK_REQUEST, id=container_id) != ttrpc.OK
        with pytest.raises(ttrpc.TtrpcError) as info:
            client.call("no.such.Service", "Call", m.EMPTY, {}, m.EMPTY)
        assert info.value.code == ttrpc.UNIMPLEMENTED
    finally:
        client.close()


def test_one_shim_serves_a_group(ctr):
    """Containers of one pod (io.kubernetes.cri.sandbox-id) share a shim: their
    inits have one parent, the shim."""
    group = ("--annotation", f"io.kubernetes.cri.sandbox-id=pod-{uuid.uuid4().hex[:8]}")
    first = ctr.run_detached(ctr.new_id(), *FOREVER, options=group)
    second = ctr.run_detached(ctr.new_id(), *FOREVER, options=group)
    alone = ctr.run_detached(ctr.new_id(), *FOREVER)
    shims = {name: parent_of(ctr.init_pid(name)) for name in (first, second, alone)}
    assert shims[first] == shims[second] != shims[alone]


def test_a_command_that_does_not_exist(ctr):
    done = ctr.run_foreground(ctr.new_id(), "no-such-program")
    assert done.returncode != 0
    assert "executable file not found" in done.stderr, done.stderr


def test_a_dead_shims_container_is_cleaned_up(ctr):
    """containerd runs the shim's `delete` when its shim dies: the container goes."""
    container_id = ctr.run_detached(ctr.new_id(), *FOREVER)
    shim = parent_of(ctr.init_pid(container_id))
    os.kill(shim, signal.SIGKILL)
    wait_until(lambda: ctr.task_status(container_id) in (None, "STOPPED"),
               "containerd to clean up after the dead shim")
    ctr("task", "delete", container_id, check=False)


def test_a_privileged_task_and_its_exec(ctr):
    """CAP_SYS_PTRACE in the container: pyoci's shim runs create and exec
    from a sealed copy of the interpreter (CVE-2019-5736), and serves on."""
    container_id = ctr.run_detached(ctr.new_id(), *FOREVER, options=("--privileged",))
    done = ctr("task", "exec", "--exec-id", "priv", container_id, "sh", "-c",
               "grep CapEff /proc/self/status; exit 3", check=False)
    effective = int(done.stdout.split()[1], 16)
    assert done.returncode == 3 and effective & 1 << 19, done.stdout  # CAP_SYS_PTRACE
    assert ctr.task_status(container_id) == "RUNNING"
