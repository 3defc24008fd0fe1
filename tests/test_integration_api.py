"""pyoci.runtime, the Python API, driving a real container from a Python
program (its own process: the caller becomes its containers' subreaper).
runc runs the same bundle from its command line for the reference."""
import json
import subprocess
import sys

import pytest

from conformance.bundle import make_bundle
from conformance.harness import RUNC, private_runtime

pytestmark = pytest.mark.root

PROGRAM = r"""
import json, os, sys
from pyoci.errors import PyociError
from pyoci.runtime import Runtime

root, bundle = sys.argv[1:3]
runtime = Runtime(root)
seen = {}
fds = len(os.listdir("/proc/self/fd"))
out_read, out_write = os.pipe()
null = os.open(os.devnull, os.O_RDONLY)
container = runtime.create("api-1", bundle, stdio=(null, out_write, out_write))
os.close(out_write)
seen["created"] = runtime.state("api-1")["status"]
runtime.start("api-1")
seen["started"] = runtime.state("api-1")["status"]
exec_read, exec_write = os.pipe()
pid = runtime.exec("api-1", {"args": ["sh", "-c", "echo from exec; exit 7"], "cwd": "/tmp",
                             "env": ["PATH=/bin"], "user": {"uid": 65534, "gid": 65534}},
                   stdio=(null, exec_write, exec_write))
os.close(exec_write)
seen["exec"] = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), os.read(exec_read, 100).decode()]
# That process could keep every capability, CAP_SYS_PTRACE among them: it ran
# from a sealed copy of the pyoci command (and this program went on). One
# without CAP_SYS_PTRACE is forked from here.
caps = ["CAP_CHOWN"]
pid = runtime.exec("api-1", {"args": ["true"], "cwd": "/", "capabilities": {
    "bounding": caps, "effective": caps, "permitted": caps}})
seen["exec_in_process"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
seen["pids"] = len(runtime.pids("api-1"))
runtime.pause("api-1")
seen["paused"] = runtime.state("api-1")["status"]
runtime.resume("api-1")
runtime.update("api-1", {"pids": {"limit": 50}})
seen["pids_limit"] = runtime.stats("api-1")["pids"]["limit"]
try:
    runtime.delete("api-1")
except PyociError as exc:
    seen["delete_running"] = [str(exc), exc.exit_code]
runtime.kill("api-1", "KILL")
seen["init_status"] = os.waitstatus_to_exitcode(os.waitpid(container.record["pid"], 0)[1])
seen["stopped"] = runtime.state("api-1")["status"]
runtime.delete("api-1")
try:
    runtime.state("api-1")
except PyociError as exc:
    seen["after_delete"] = str(exc)
seen["list"] = runtime.list()
seen["output"] = os.read(out_read, 100).decode()
for fd in (out_read, exec_read, null):
    os.close(fd)
seen["fds_kept"] = len(os.listdir("/proc/self/fd")) - fds  # no lock or socket left open
print(json.dumps(seen))
"""


def test_a_container_through_the_python_api(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "echo from init; exec sleep 600"])
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path / "root"), str(bundle)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {
        "created": "created", "started": "running", "exec": [7, "from exec\n"], "pids": 1,
        "exec_in_process": 0,
        "paused": "paused", "pids_limit": 50,
        "delete_running": ["cannot delete container api-1 that is not stopped: running", 1],
        "init_status": -9, "stopped": "stopped",
        "after_delete": 'container "api-1" does not exist', "list": [],
        "output": "from init\n", "fds_kept": 0}
    runc_seen = reference_on_runc(bundle, tmp_path)
    assert {key: seen[key] for key in runc_seen} == runc_seen


def reference_on_runc(bundle, tmp_path):
    """What the same steps through runc's command line show (its messages
    are its own, and its init is not our child: those are pyoci's alone)."""
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh", "-c", "echo from exec; exit 7"], "cwd": "/tmp",
                                   "env": ["PATH=/bin"], "user": {"uid": 65534, "gid": 65534}}))
    seen = {}
    with private_runtime(RUNC) as runc:
        container_id = runc.new_id()
        output = tmp_path / "init-output"
        with open(output, "w") as out:
            subprocess.run([*runc.argv, "create", "--bundle", bundle, container_id],
                           stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True)
        seen["created"] = runc.state(container_id)["status"]
        runc.start(container_id)
        seen["started"] = runc.state(container_id)["status"]
        done = runc.run("exec", "--process", process, container_id, check=False)
        seen["exec"] = [done.returncode, done.stdout]
        seen["pids"] = len(json.loads(runc.run("ps", "--format", "json", container_id).stdout))
        runc.run("pause", container_id)
        seen["paused"] = runc.state(container_id)["status"]
        runc.run("resume", container_id)
        runc.run("update", "--pids-limit", "50", container_id)
        seen["pids_limit"] = json.loads(runc.run("events", "--stats", container_id).stdout)[
            "data"]["pids"]["limit"]
        assert runc.run("delete", container_id, check=False).returncode == 1
        runc.kill(container_id, "KILL")
        runc.wait_for_status(container_id, "stopped")
        seen["stopped"] = runc.state(container_id)["status"]
        runc.delete(container_id)
        assert not runc.exists(container_id)
        seen["list"] = json.loads(runc.run("list", "--format", "json").stdout) or []
        seen["output"] = output.read_text()
    return seen
