"""--systemd-cgroup against a real systemd, on pyoci and on runc side by side.

This machine (and the cgroup v2 VM) boot without systemd, so systemd runs as
PID 1 of namespaces of its own (tests/systemd/in_systemd_namespaces.sh),
with a cgroup subtree of its own as its root. The runtime runs beside it,
where it finds /run/systemd/private as on a systemd host; what the tests
read (units, cgroup files, /proc) is read from there too.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conformance.bundle import make_bundle
from conformance.harness import PYOCI, RUNC, Runtime, wait_until
from pyoci.linux import cgroups

pytestmark = pytest.mark.root

SCRIPT = str(Path(__file__).parent / "systemd" / "in_systemd_namespaces.sh")
RUNTIMES = {"pyoci": PYOCI, "runc": RUNC}
UNIFIED = cgroups.detect_mode() == cgroups.UNIFIED


class SystemdHost:
    """A running systemd in namespaces of its own, and commands beside it."""

    def __init__(self, pid):
        self.pid = pid

    def run(self, *argv, check=True):
        completed = subprocess.run([SCRIPT, "enter", str(self.pid), *map(str, argv)],
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   timeout=60)
        if check and completed.returncode != 0:
            raise AssertionError(f"{argv} exited {completed.returncode}: {completed.stderr}")
        return completed

    def show(self, unit, *properties):
        args = [arg for prop in properties for arg in ("-p", prop)]
        lines = self.run("systemctl", "show", unit, *args).stdout.splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def unit_loaded(self, unit):
        return self.show(unit, "LoadState")["LoadState"] == "loaded"

    def read(self, path):
        return self.run("cat", path).stdout

    def cgroup_of(self, pid):
        """{hierarchy: path} of a process, as seen in systemd's namespaces."""
        result = {}
        for line in self.read(f"/proc/{pid}/cgroup").splitlines():
            _, controllers, path = line.split(":", 2)
            result[controllers] = path
        return result

    @contextlib.contextmanager
    def runtime(self, command):
        """A Runtime running COMMAND --systemd-cgroup beside systemd."""
        scratch = Path(tempfile.mkdtemp(prefix="oci-sd-"))
        wrapper = scratch / os.path.basename(command)
        wrapper.write_text(f'#!/bin/sh\nexec {SCRIPT} enter {self.pid} {command} '
                           '--systemd-cgroup "$@"\n')
        wrapper.chmod(0o755)
        runtime = Runtime(str(wrapper), scratch / "state")
        try:
            yield runtime
        finally:
            runtime.force_delete_all()
            shutil.rmtree(scratch)


@pytest.fixture(scope="module")
def systemd():
    name = f"pyoci-systemd-{uuid.uuid4().hex[:8]}"
    manager = cgroups.manager_for(name, name)
    made = manager.create()
    log = tempfile.TemporaryFile()
    boot = subprocess.Popen([SCRIPT, "boot", *manager.paths.values()], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    host = None
    try:
        def systemd_pid():
            children = Path(f"/proc/{boot.pid}/task/{boot.pid}/children").read_text().split()
            return int(children[0]) if children else None
        host = SystemdHost(wait_until(systemd_pid, "unshare to start systemd"))

        def booted():
            if boot.poll() is not None:
                raise AssertionError(f"systemd's namespaces exited {boot.returncode}")
            state = host.run("systemctl", "is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")
        wait_until(booted, "systemd to boot", timeout=120)
        yield host
    except BaseException:
        log.seek(0)
        print(log.read().decode(errors="replace"), file=sys.stderr)
        raise
    finally:
        if host is not None:  # systemd makes a session of its own: not in boot's group
            with contextlib.suppress(ProcessLookupError):
                os.kill(host.pid, signal.SIGKILL)
        os.killpg(boot.pid, signal.SIGKILL)
        boot.wait()
        for directory in manager.paths.values():
            _remove_tree(directory)
        assert not [d for d in made if os.path.exists(d)]


def _remove_tree(directory):
    """rmdir a cgroup tree bottom-up, once the killed processes have left it."""
    deadline = time.monotonic() + 10
    while os.path.exists(directory):
        for parent, children, _ in os.walk(directory, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(parent)
        if time.monotonic() > deadline:
            raise AssertionError(f"could not remove {directory}")
        time.sleep(0.05)


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request, systemd):
    with systemd.runtime(RUNTIMES[request.param]) as runtime:
        yield runtime


@pytest.fixture
def pyoci_sd(systemd):
    with systemd.runtime(PYOCI) as runtime:
        yield runtime


def _bundle(tmp_path, mutate=None, args=("sleep", "1000")):
    return make_bundle(tmp_path / "bundle", list(args), mutate=mutate)


def _with(**linux):
    def mutate(config):
        config["linux"].update(linux)
    return mutate


def _started(runtime, tmp_path, mutate=None):
    container_id = runtime.new_id()
    runtime.create(container_id, _bundle(tmp_path, mutate))
    runtime.start(container_id)
    return container_id, runtime.state(container_id)["pid"]


def test_container_runs_in_its_scope_in_every_hierarchy(systemd, runtime, tmp_path):
    container_id, pid = _started(runtime, tmp_path)
    scope = f"runc-{container_id}.scope"
    assert systemd.show(scope, "ActiveState")["ActiveState"] == "active"
    assert systemd.show(scope, "ControlGroup")["ControlGroup"] == f"/system.slice/{scope}"
    paths = systemd.cgroup_of(pid)
    assert set(paths.values()) == {f"/system.slice/{scope}"}, paths
    runtime.run("delete", "--force", container_id)
    assert not systemd.unit_loaded(scope)


def test_a_mount_failing_while_systemd_places_init_is_the_error(systemd, runtime, tmp_path):
    """pyoci's init makes a tmpfs mount while systemd starts its scope (a
    D-Bus round trip and a job): when that mount fails, its error is the
    one reported, not the scope's, and nothing is left, as with runc."""
    container_id = runtime.new_id()
    bundle = _bundle(tmp_path, lambda c: c["mounts"].insert(0, {
        "destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["size=abc"]}))
    result = runtime.run("create", "--bundle", bundle, container_id, check=False)
    assert result.returncode == 1 and "invalid argument" in result.stderr, result.stderr
    if runtime.name == "pyoci":
        assert result.stderr == "mount tmpfs to /mnt: invalid argument\n"
    assert runtime.listed_ids() == []
    assert not systemd.unit_loaded(f"runc-{container_id}.scope")


def test_slice_prefix_and_name_place_the_scope(systemd, runtime, tmp_path):
    container_id = runtime.new_id()
    bundle = _bundle(tmp_path, _with(cgroupsPath=f"pyoci-tests.slice:test:{container_id}"))
    runtime.create(container_id, bundle)
    pid = runtime.state(container_id)["pid"]
    scope = f"test-{container_id}.scope"
    assert systemd.show(scope, "ControlGroup")["ControlGroup"] == f"/pyoci.slice/pyoci-tests.slice/{scope}"
    elsewhere = {hierarchy: path for hierarchy, path in systemd.cgroup_of(pid).items()
                 if path != f"/pyoci.slice/pyoci-tests.slice/{scope}"}
    if runtime.name == "runc":
        elsewhere.pop("devices", None)  # runc 1.1.5 leaves it in the slice's devices cgroup
    assert elsewhere == {}


LIMITS = {"memory": {"limit": 64 * 1024 * 1024}, "cpu": {"shares": 512, "quota": 25000,
                                                         "period": 100000},
          "pids": {"limit": 42}}


def test_limits_are_unit_properties_and_cgroup_files(systemd, runtime, tmp_path):
    container_id, pid = _started(runtime, tmp_path, _with(resources=LIMITS))
    scope = f"runc-{container_id}.scope"
    memory = "MemoryMax" if UNIFIED else "MemoryLimit"
    shown = systemd.show(scope, memory, "CPUQuotaPerSecUSec", "TasksMax", "Delegate",
                         "MemoryAccounting", "TasksAccounting")
    assert shown[memory] == str(64 * 1024 * 1024)
    assert shown["CPUQuotaPerSecUSec"] == "250ms"
    assert shown["TasksMax"] == "42"
    assert shown["Delegate"] == "yes"
    assert shown["MemoryAccounting"] == shown["TasksAccounting"] == "yes"
    if UNIFIED:
        base = f"/sys/fs/cgroup/system.slice/{scope}"
        assert systemd.read(f"{base}/memory.max").strip() == str(64 * 1024 * 1024)
        assert systemd.read(f"{base}/pids.max").strip() == "42"
        assert systemd.read(f"{base}/cpu.max").split()[0] == "25000"
    else:
        assert systemd.show(scope, "CPUShares")["CPUShares"] == "512"
        base = f"/sys/fs/cgroup/%s/system.slice/{scope}"
        assert systemd.read(base % "memory" + "/memory.limit_in_bytes").strip() == str(64 * 1024 * 1024)
        assert systemd.read(base % "pids" + "/pids.max").strip() == "42"
        assert systemd.read(base % "cpu" + "/cpu.shares").strip() == "512"
        assert systemd.read(base % "cpu" + "/cpu.cfs_quota_us").strip() == "25000"


def test_update_changes_the_unit_and_the_files(systemd, runtime, tmp_path):
    container_id, _ = _started(runtime, tmp_path, _with(resources=LIMITS))
    runtime.run("update", "--memory", "96M", "--pids-limit", "17", container_id)
    scope = f"runc-{container_id}.scope"
    memory = "MemoryMax" if UNIFIED else "MemoryLimit"
    shown = systemd.show(scope, memory, "TasksMax")
    assert shown == {memory: str(96 * 1024 * 1024), "TasksMax": "17"}
    pids_dir = f"/sys/fs/cgroup/system.slice/{scope}" if UNIFIED else \
        f"/sys/fs/cgroup/pids/system.slice/{scope}"
    assert systemd.read(f"{pids_dir}/pids.max").strip() == "17"


def test_commands_on_a_systemd_container(systemd, pyoci_sd, tmp_path):
    container_id, pid = _started(pyoci_sd, tmp_path)
    scope = f"runc-{container_id}.scope"
    exec_cgroup = pyoci_sd.run("exec", container_id, "cat", "/proc/self/cgroup").stdout
    assert {line.split(":", 2)[2] for line in exec_cgroup.splitlines()} <= \
        {f"/system.slice/{scope}", "/"}  # "/": a cgroup namespace's own root
    pyoci_sd.run("pause", container_id)
    assert pyoci_sd.state(container_id)["status"] == "paused"
    pyoci_sd.run("resume", container_id)
    assert pyoci_sd.state(container_id)["status"] == "running"
    assert '"type":"stats"' in pyoci_sd.run("events", "--stats", container_id).stdout
    assert str(pid) in pyoci_sd.run("ps", "--format", "json", container_id).stdout
    pyoci_sd.run("kill", "--all", container_id, "KILL")
    pyoci_sd.wait_for_status(container_id, "stopped")
    pyoci_sd.delete(container_id)
    assert not systemd.unit_loaded(scope)
    leftover = systemd.run("sh", "-c", f"ls -d /sys/fs/cgroup/*/system.slice/{scope} "
                           f"/sys/fs/cgroup/system.slice/{scope}", check=False).stdout
    assert leftover == ""


def test_device_rules_become_device_allow(systemd, pyoci_sd, tmp_path):
    devices = [{"allow": False, "access": "rwm"},
               {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
               {"allow": True, "type": "c", "major": 136, "access": "rwm"}]
    container_id, _ = _started(pyoci_sd, tmp_path, _with(resources={"devices": devices}))
    shown = systemd.run("systemctl", "show", f"runc-{container_id}.scope",
                        "-p", "DevicePolicy", "-p", "DeviceAllow").stdout.splitlines()
    assert "DevicePolicy=strict" in shown
    # The config's rules, then the devices every container gets (as runc).
    for entry in ("/dev/char/1:3 rwm", "char-pts rwm", "char-* m", "block-* m", "/dev/char/1:5 rwm"):
        assert f"DeviceAllow={entry}" in shown


def test_annotations_set_unit_properties(systemd, pyoci_sd, tmp_path):
    def mutate(config):
        config["annotations"] = {"org.systemd.property.TimeoutStopUSec": "uint64 123456789",
                                 "org.systemd.property.CollectMode": "'inactive-or-failed'"}
    container_id, _ = _started(pyoci_sd, tmp_path, mutate)
    shown = systemd.show(f"runc-{container_id}.scope", "TimeoutStopUSec", "CollectMode")
    assert shown == {"TimeoutStopUSec": "2min 3.456789s", "CollectMode": "inactive-or-failed"}


@pytest.mark.parametrize("cgroups_path, message", [
    ("/not/systemd/form", 'expected "slice:prefix:name"'),
    ("bad--name.slice:p:n", "invalid slice name"),
    ("system.slice:p:a/b", "bad unit name"),
])
def test_bad_cgroups_path_leaves_nothing(systemd, pyoci_sd, tmp_path, cgroups_path, message):
    container_id = pyoci_sd.new_id()
    result = pyoci_sd.run("create", "--bundle", _bundle(tmp_path, _with(cgroupsPath=cgroups_path)),
                          container_id, check=False)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not pyoci_sd.exists(container_id)
    assert list((pyoci_sd.root).iterdir()) == []


def test_unit_that_exists_already_is_refused_and_kept(systemd, pyoci_sd, tmp_path):
    first, pid = _started(pyoci_sd, tmp_path, _with(cgroupsPath=":pyoci:shared"))
    second = pyoci_sd.new_id()
    result = pyoci_sd.run("create", "--bundle", tmp_path / "bundle", second, check=False)
    assert result.returncode == 1
    assert "pyoci-shared.scope" in result.stderr and "already loaded" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not pyoci_sd.exists(second)
    assert systemd.show("pyoci-shared.scope", "ActiveState")["ActiveState"] == "active"
    assert pyoci_sd.state(first)["status"] == "running"
    assert systemd.run("kill", "-0", pid).returncode == 0


def test_without_systemd_the_flag_is_one_clear_error(pyoci, tmp_path):
    """Outside systemd's namespaces this host has no systemd running."""
    assert not os.path.isdir("/run/systemd/system")
    container_id = pyoci.new_id()
    result = pyoci.run("--systemd-cgroup", "create", "--bundle", _bundle(tmp_path), container_id,
                       check=False)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("systemd is not running on this host "
                                          "(no /run/systemd/system); drop the flag to use cgroupfs")
    assert not pyoci.exists(container_id)
    assert list(pyoci.root.iterdir()) == []
