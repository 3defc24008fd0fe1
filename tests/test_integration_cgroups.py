"""Resource limits, pause/resume, ps, update and events on real containers
(root). Every test runs on cgroup v1/hybrid (this host) and on a pure cgroup
v2 host (tests/vm/run_in_v2_vm.sh boots one), reading v1 or v2 files."""
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.bundle import make_bundle
from conformance.harness import PYOCI, RUNC, private_runtime, wait_until
from tests.pausing import (container_init_below, create_paused, living_descendants,
                           mount_points)

pytestmark = pytest.mark.root

V1 = Path("/sys/fs/cgroup")
UNIFIED = (V1 / "cgroup.controllers").exists()


def start(pyoci, tmp_path, args, resources=None, name="b"):
    def limits(config):
        if resources is not None:
            config["linux"]["resources"] = resources
    bundle = make_bundle(tmp_path / name, args, mutate=limits)
    container_id = pyoci.new_id()
    pyoci.run("run", "--detach", "--bundle", bundle, container_id)
    return container_id


def read(pyoci, container_id, controller, v1_name, v2_name=None):
    """A cgroup file of the container: V1_NAME in CONTROLLER's hierarchy, or
    V2_NAME (default: the same) in its unified directory."""
    paths = json.loads((pyoci.root / container_id / "state.json").read_text())["cgroup_paths"]
    directory, name = (paths[""], v2_name or v1_name) if UNIFIED else (paths[controller], v1_name)
    return (Path(directory) / name).read_text().strip()


def test_each_resource_is_written_to_its_cgroup_file(pyoci, tmp_path):
    resources = {
        "memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 32 << 20},
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 42},
    }
    if not UNIFIED:
        resources["memory"]["swappiness"] = 7
    container_id = start(pyoci, tmp_path, ["sleep", "100"], resources)
    if UNIFIED:
        files = ("memory.max", "memory.swap.max", "memory.low", "cpu.weight", "cpu.max",
                 "cpuset.cpus", "cpuset.mems", "pids.max")
        assert [read(pyoci, container_id, "", name) for name in files] == [
            str(64 << 20), str(32 << 20), str(32 << 20), "20", "20000 100000", "0", "0", "42"]
        return
    assert [read(pyoci, container_id, *where) for where in (
        ("memory", "memory.limit_in_bytes"), ("memory", "memory.memsw.limit_in_bytes"),
        ("memory", "memory.soft_limit_in_bytes"), ("memory", "memory.swappiness"),
        ("cpu", "cpu.shares"), ("cpu", "cpu.cfs_quota_us"), ("cpu", "cpu.cfs_period_us"),
        ("cpuset", "cpuset.cpus"), ("cpuset", "cpuset.mems"), ("pids", "pids.max"))] == [
        str(64 << 20), str(96 << 20), str(32 << 20), "7", "512", "20000", "100000", "0", "0", "42"]


def test_device_rules_deny_what_they_do_not_allow(pyoci, tmp_path, probe):
    def rules(config):
        config["linux"]["resources"] = {"devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]}
        config["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]
    output = probe.run("echo x >/dev/null && echo null-ok; head -c1 /dev/kmsg || echo kmsg-denied",
                       mutate=rules)
    assert "null-ok" in output and "kmsg-denied" in output


def test_limits_are_in_force_when_prestart_hooks_run(pyoci, tmp_path):
    """As runc: the limits are set once init has made the mounts, before the
    prestart hooks, which may rely on them."""
    name = f"/pyoci-hooked-{tmp_path.name}"
    directory = (V1 if UNIFIED else V1 / "pids") / name.lstrip("/")
    seen = tmp_path / "seen"

    def hooked(config):
        config["linux"].update(cgroupsPath=name, resources={"pids": {"limit": 42}})
        config["hooks"] = {"prestart": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"cat {directory}/pids.max > {seen}"]}]}
    bundle = make_bundle(tmp_path / "b", ["true"], mutate=hooked)
    pyoci.create(pyoci.new_id(), bundle)
    assert seen.read_text() == "42\n"


def test_pids_limit_stops_a_fork_bomb(pyoci, tmp_path):
    container_id = start(pyoci, tmp_path, ["sh", "-c", "for i in $(seq 60); do sleep 30 & done; wait"],
                         {"pids": {"limit": 20}})
    wait_until(lambda: "max 0" not in read(pyoci, container_id, "pids", "pids.events"),
               "a fork refused at the limit")
    assert int(read(pyoci, container_id, "pids", "pids.current")) <= 20


def test_memory_limit_oom_kills_and_events_report_it(pyoci, tmp_path):
    container_id = start(pyoci, tmp_path, ["sleep", "100"],
                         {"memory": {"limit": 16 << 20, "swap": 16 << 20}})
    events = subprocess.Popen(pyoci.argv + ["events", "--interval", "100ms", container_id],
                              stdout=subprocess.PIPE, text=True)
    hog = subprocess.run(pyoci.argv + ["exec", container_id, "sh", "-c",
                                       "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"],
                         capture_output=True, text=True, timeout=60)
    assert "survived" not in hog.stdout and hog.returncode != 0
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = events.stdout.readline()
        seen.append(json.loads(line))
        if seen[-1]["type"] == "oom":
            break
    events.kill()
    events.wait()
    assert seen[-1] == {"type": "oom", "id": container_id}
    stats = [event for event in seen if event["type"] == "stats"]
    assert stats and stats[0]["data"]["memory"]["usage"]["limit"] == 16 << 20


def test_the_shims_oom_watch_hears_each_oom_kill(pyoci, tmp_path):
    """pyoci.shim.oom on the kernel: v1's eventfd, v2's memory.events flag."""
    from pyoci.shim.loop import Loop
    from pyoci.shim.oom import OomWatch
    container_id = start(pyoci, tmp_path, ["sleep", "100"],
                         {"memory": {"limit": 16 << 20, "swap": 16 << 20}})
    paths = json.loads((pyoci.root / container_id / "state.json").read_text())["cgroup_paths"]
    loop = Loop()
    heard = []
    watch = OomWatch(loop, paths, lambda: heard.append("oom"))
    try:
        loop.turn(0.2)
        assert heard == []  # nothing before an OOM
        for _ in range(2):
            subprocess.run(pyoci.argv + ["exec", container_id, "sh", "-c",
                                         "x=$(head -c 100000000 /dev/zero | tr '\\0' a)"],
                           capture_output=True, timeout=60)
            deadline = time.monotonic() + 10
            count = len(heard)
            while len(heard) == count and time.monotonic() < deadline:
                loop.turn(0.2)
        assert len(heard) >= 2
    finally:
        watch.close()


def test_pause_freezes_and_resume_thaws(pyoci, tmp_path):
    container_id = start(pyoci, tmp_path, ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i >/tmp/count; done"])
    count = tmp_path / "b" / "rootfs" / "tmp" / "count"
    wait_until(count.exists, "the counter to start")
    pyoci.run("pause", container_id)
    assert pyoci.state(container_id)["status"] == "paused"
    assert read(pyoci, container_id, "freezer", "freezer.state", "cgroup.freeze") == \
        ("1" if UNIFIED else "FROZEN")
    frozen_at = count.read_text()
    time.sleep(0.2)
    assert count.read_text() == frozen_at
    pyoci.run("resume", container_id)
    assert pyoci.state(container_id)["status"] == "running"
    wait_until(lambda: count.read_text() != frozen_at, "the counter to move again")
    assert pyoci.run("resume", container_id, check=False).stderr == "container not paused\n"


def test_ps_lists_the_containers_processes(pyoci, tmp_path):
    container_id = start(pyoci, tmp_path, ["sh", "-c", "sleep 100 & sleep 100 & wait"])
    init_pid = pyoci.state(container_id)["pid"]
    def three_pids():
        listed = json.loads(pyoci.run("ps", "--format", "json", container_id).stdout)
        return listed if len(listed) == 3 else None
    pids = wait_until(three_pids, "three processes")
    assert init_pid in pids
    table = pyoci.run("ps", container_id).stdout.splitlines()
    assert table[0].split()[:2] == ["UID", "PID"] and len(table) == 4
    # ps's own arguments: ps(1) runs, and its lines of the container's pids are kept.
    custom = pyoci.run("ps", container_id, "-e", "-o", "pid,comm").stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert sorted(int(line.split()[0]) for line in custom[1:]) == sorted(pids)
    assert pyoci.run("ps", "--format", "json", container_id).stdout.count(" ") == 0


@pytest.mark.parametrize("uid", [0, 54321])  # a user the host has no name for
def test_ps_prints_ps_ef_lines_of_the_containers_processes_as_runc(tmp_path, uid):
    """runc runs ps -ef and keeps the container's lines; pyoci makes that
    table from /proc. Each runtime's table is ps -ef's, taken around it (C,
    the CPU share, may change meanwhile: where it did, the rest must match)."""
    def as_uid(config):
        config["process"]["user"] = {"uid": uid, "gid": uid}
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            bundle = make_bundle(tmp_path / runtime.name, ["sh", "-c", "sleep 100 & sleep 100 & wait"],
                                 mutate=as_uid)
            container_id = runtime.new_id()
            runtime.run("run", "--detach", "--bundle", bundle, container_id)

            def three_pids():
                pids = json.loads(runtime.run("ps", "--format", "json", container_id).stdout)
                return pids if len(pids) == 3 else None
            pids = wait_until(three_pids, "three processes")

            def ps_ef():
                # os.environ, not the inherited one: readline (which pytest loads)
                # exports COLUMNS there, and ps would cut its lines to it.
                lines = subprocess.run(["ps", "-ef"], capture_output=True, text=True,
                                       check=True, env=dict(os.environ)).stdout.splitlines()
                return [lines[0]] + [line for line in lines[1:] if int(line.split()[1]) in pids]
            before = ps_ef()
            # pyoci's table is its own: no ps(1) on its PATH. (An env, even
            # empty, is os.environ's, as ps_ef's.)
            table = runtime.run("ps", container_id, env={"PATH": "/nonexistent"}
                                if runtime.name == "pyoci" else {}).stdout.splitlines()
            after = ps_ef()
            assert len(table) == len(before) == len(after) == 4, (runtime.name, table, before)
            for ours, first, last in zip(table, before, after):
                if first == last:
                    assert ours == first, runtime.name
                else:
                    assert ours.split()[:3] + ours.split()[4:] == first.split()[:3] + first.split()[4:]


def test_update_with_flags_and_resources_json(pyoci, tmp_path):
    container_id = start(pyoci, tmp_path, ["sleep", "100"], {"memory": {"limit": 64 << 20}})
    pyoci.run("update", "--memory", "128m", "--memory-swap", "256m", "--pids-limit", "30",
              "--cpu-share", "300", container_id)
    assert read(pyoci, container_id, "memory", "memory.limit_in_bytes", "memory.max") == str(128 << 20)
    assert read(pyoci, container_id, "memory", "memory.memsw.limit_in_bytes", "memory.swap.max") == \
        str((128 if UNIFIED else 256) << 20)
    assert read(pyoci, container_id, "pids", "pids.max") == "30"
    assert read(pyoci, container_id, "cpu", "cpu.shares", "cpu.weight") == ("12" if UNIFIED else "300")
    pyoci.run("update", "--cpu-idle", "1", container_id)  # the kernel then drops the weight
    assert read(pyoci, container_id, "cpu", "cpu.idle") == "1"
    pyoci.run("update", "--resources", "-", container_id,
              input=json.dumps({"memory": {"limit": 32 << 20, "swap": 32 << 20}}))
    assert read(pyoci, container_id, "memory", "memory.limit_in_bytes", "memory.max") == str(32 << 20)
    bad = pyoci.run("update", "--resources", "-", container_id, input='{"pids": {"limit": "x"}}',
                    check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("resources.pids.limit: ")


def test_events_stats_shape(pyoci, tmp_path):
    container_id = start(pyoci, tmp_path, ["sleep", "100"])
    line = pyoci.run("events", "--stats", container_id).stdout
    event = json.loads(line)
    assert line.count("\n") == 1 and " " not in line.strip()
    assert event["type"] == "stats" and event["id"] == container_id
    assert set(event["data"]) == {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb",
                                  "intel_rdt", "network_interfaces"}
    assert event["data"]["pids"] == {"current": 1}  # no limit: left out, as Go's omitempty does


# Every name in runc's types.Stats as Go encodes it (types/events.go), down
# to the maps and lists whose keys are data.
MEMORY_ENTRY = ("limit", "usage", "max", "failcnt")
RUNC_STATS_NAMES = {
    "cpu", "cpu.usage", *(f"cpu.usage.{name}" for name in (
        "total", "percpu", "percpu_kernel", "percpu_user", "kernel", "user")),
    "cpu.throttling", *(f"cpu.throttling.{name}" for name in (
        "periods", "throttledPeriods", "throttledTime")),
    "cpuset", *(f"cpuset.{name}" for name in (
        "cpus", "cpu_exclusive", "mems", "mem_hardwall", "mem_exclusive", "memory_migrate",
        "memory_spread_page", "memory_spread_slab", "memory_pressure", "sched_load_balance",
        "sched_relax_domain_level")),
    "memory", "memory.cache", "memory.raw",
    *(f"memory.{entry}{name}" for entry in ("usage", "swap", "kernel", "kernelTCP")
      for name in ("", *(f".{key}" for key in MEMORY_ENTRY))),
    "pids", "pids.current", "pids.limit", "blkio", "hugetlb", "intel_rdt", "network_interfaces"}
# What a throttled busy container always has (non-zero, so never left out).
ALWAYS_THERE = {"cpu.usage.total", "cpu.usage.kernel", "cpu.usage.user",
                "cpu.throttling.periods", "cpu.throttling.throttledPeriods",
                "cpu.throttling.throttledTime", "memory.usage.limit", "memory.usage.usage",
                "memory.usage.failcnt", "memory.swap.limit", "memory.swap.failcnt",
                "pids.current"}


def test_events_stats_names_what_runc_names(tmp_path):
    """The same throttled container on pyoci and on runc: both use only
    runc's names, and both have the figures such a container always has."""
    def names(value, prefix=""):
        result = set()
        for key, item in value.items():
            result.add(prefix + key)
            if isinstance(item, dict) and key not in ("raw", "blkio", "hugetlb"):
                result |= names(item, f"{prefix}{key}.")
        return result
    for runtime_command in (PYOCI, RUNC):
        with private_runtime(runtime_command) as runtime:
            container_id = start(runtime, tmp_path, ["sh", "-c", "while :; do :; done"],
                                 {"cpu": {"quota": 10000, "period": 100000}}, name=runtime.name)

            def throttled():
                data = json.loads(runtime.run("events", "--stats", container_id).stdout)["data"]
                # throttledTime grows when a throttled period ends: after throttledPeriods.
                return data if data["cpu"]["throttling"].get("throttledTime") else None
            seen = names(wait_until(throttled, f"{runtime.name}'s container throttled"))
            assert seen - RUNC_STATS_NAMES == set(), runtime.name
            assert ALWAYS_THERE - seen == set(), runtime.name


def cgroup2_mount():
    for candidate in (V1, V1 / "unified"):
        if (candidate / "cgroup.controllers").exists() or \
                (candidate / "cgroup.subtree_control").exists():
            return candidate
    return None


@pytest.mark.skipif(cgroup2_mount() is None, reason="no cgroup2 hierarchy mounted")
def test_v2_device_program_enforces_the_rules(tmp_path):
    """The eBPF device program the v2 manager attaches, judged by the kernel
    (on a hybrid host, in the unified hierarchy beside v1)."""
    from pyoci.linux import syscalls
    from pyoci.linux.cgroups import devices_bpf
    directory = cgroup2_mount() / f"pyoci-test-{tmp_path.name}"
    directory.mkdir()
    try:
        devices_bpf.attach(syscalls.syscalls(), str(directory), [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}])
        script = (f"echo $$ > {directory}/cgroup.procs; "
                  "echo x > /dev/null && echo null-ok; "
                  "echo x > /dev/kmsg 2>/dev/null || echo kmsg-write-denied; "
                  "dd if=/dev/mem of=/dev/null count=1 2>/dev/null || echo mem-denied")
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
        assert result.stdout.split() == ["null-ok", "kmsg-write-denied", "mem-denied"]
    finally:
        wait_until(lambda: not (directory / "cgroup.procs").read_text().strip(), "the shell to leave")
        directory.rmdir()


@pytest.mark.skipif(cgroup2_mount() is None, reason="no cgroup2 hierarchy mounted")
def test_v2_device_program_is_replaced_by_update(tmp_path):
    """A second attach (update) replaces pyoci's program, so rules can widen
    as well as narrow; the kernel judges each step."""
    from pyoci.linux import syscalls
    from pyoci.linux.cgroups import devices_bpf
    sys = syscalls.syscalls()
    directory = cgroup2_mount() / f"pyoci-test-{tmp_path.name}"
    directory.mkdir()
    kmsg = {"allow": True, "type": "c", "major": 1, "minor": 11}
    script = (f"echo $$ > {directory}/cgroup.procs; "
              "echo pyoci-test > /dev/kmsg 2>/dev/null && echo write-ok || echo write-denied")
    try:
        outcomes = []
        for access in ("r", "rw", "r"):
            devices_bpf.attach(sys, str(directory), [{"allow": False, "access": "rwm"},
                                                     {**kmsg, "access": access}])
            result = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                                    timeout=10)
            outcomes.append(result.stdout.strip())
            wait_until(lambda: not (directory / "cgroup.procs").read_text().strip(),
                       "the shell to leave")
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert [name for _, name in sys.bpf_device_programs(fd)] == ["pyoci_devices"]
            finally:
                os.close(fd)
        assert outcomes == ["write-denied", "write-ok", "write-denied"]
    finally:
        wait_until(lambda: not (directory / "cgroup.procs").read_text().strip(), "the shell to leave")
        directory.rmdir()


def test_update_check_before_update_refuses_a_limit_below_usage(pyoci, tmp_path):
    container_id = start(pyoci, tmp_path, ["sleep", "100"], {"memory": {"limit": 64 << 20}})
    result = pyoci.run("update", "--resources", "-", container_id, check=False,
                       input=json.dumps({"memory": {"limit": 4096, "checkBeforeUpdate": True}}))
    assert result.returncode == 1 and "below the current usage" in result.stderr
    assert read(pyoci, container_id, "memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)


def test_update_of_device_rules_widens_them_and_leaves_it_running(pyoci, tmp_path):
    def kmsg(config):
        config["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
        config["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"], mutate=kmsg)
    container_id = pyoci.new_id()
    pyoci.run("run", "--detach", "--bundle", bundle, container_id)
    write = ["exec", container_id, "sh", "-c",
             "echo pyoci-test > /dev/kmsg 2>/dev/null && echo write-ok || echo write-denied"]
    assert pyoci.run(*write).stdout == "write-denied\n"
    pyoci.run("update", "--resources", "-", container_id, input=json.dumps({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"}]}))
    assert pyoci.state(container_id)["status"] == "running"
    assert pyoci.run(*write).stdout == "write-ok\n"


def test_update_zero_memory_values_are_unset_like_docker_sends_them(pyoci, tmp_path):
    container_id = start(pyoci, tmp_path, ["sleep", "100"], {"memory": {"limit": 64 << 20}})
    docker_update = {"memory": {"limit": 0, "reservation": 0, "kernel": 0},
                     "cpu": {"shares": 0, "quota": 0, "period": 0}, "pids": {"limit": 77},
                     "blockIO": {"weight": 0}}
    pyoci.run("update", "--resources", "-", container_id, input=json.dumps(docker_update))
    assert read(pyoci, container_id, "pids", "pids.max") == "77"
    assert read(pyoci, container_id, "memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)


def test_delete_leaves_what_the_container_did_not_create(pyoci, tmp_path):
    """cgroupsPath naming a cgroup that already exists, empty; a process of
    the host joins it later: delete kills only the container's processes,
    and removes only the cgroup directories create made."""
    name = f"/pyoci-shared-{tmp_path.name}"
    existing = (V1 if UNIFIED else V1 / "memory") / name.lstrip("/")
    existing.mkdir()
    host_process = subprocess.Popen(["sleep", "100"])
    try:
        bundle = make_bundle(tmp_path / "b", ["sleep", "100"],
                             mutate=lambda c: c["linux"].update(cgroupsPath=name))
        container_id = pyoci.new_id()
        pyoci.run("run", "--detach", "--bundle", bundle, container_id)
        (existing / "cgroup.procs").write_text(str(host_process.pid))
        paths = json.loads((pyoci.root / container_id / "state.json").read_text())["cgroup_paths"]
        pyoci.run("delete", "--force", container_id)
        assert host_process.poll() is None, "a process the container did not start was killed"
        assert existing.is_dir()
        made = [Path(d) for d in paths.values() if Path(d) != existing]
        assert not any(directory.exists() for directory in made)
    finally:
        host_process.kill()
        host_process.wait()
        wait_until(lambda: not (existing / "cgroup.procs").read_text().strip(),
                   "the host process to leave")
        existing.rmdir()


def _hierarchies(*v1_names):
    return [V1] if UNIFIED else [V1 / name for name in v1_names]


def test_a_mount_failing_while_init_is_placed_in_its_cgroups_is_the_error(tmp_path):
    """pyoci's init makes its mounts that need no cgroup (a tmpfs) while the
    runtime places it in its cgroups: held before the placement until init
    has failed such a mount, pyoci reports that mount's error (not the
    placement's), and leaves nothing, as runc does unheld."""
    name = f"pyoci-early-{tmp_path.name}"

    def mutate(config):
        config["linux"]["cgroupsPath"] = "/" + name
        config["process"]["oomScoreAdj"] = 100  # written once init is placed: to a dead one, too
        config["mounts"].insert(0, {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["size=abc"]})
    bundle = make_bundle(tmp_path / "b", ["true"], mutate=mutate)
    with private_runtime(RUNC) as runtime:
        done = runtime.run("create", "--bundle", bundle, runtime.new_id(), check=False)
        assert done.returncode == 1 and "invalid argument" in done.stderr, done.stderr
    with private_runtime(PYOCI) as runtime:
        def until_init_has_failed(_, paused):
            wait_until(lambda: not living_descendants(paused), "init to fail its mount")
        code, errors, pauses = create_paused(runtime, bundle, runtime.new_id(),
                                             ["create:placing"], until_init_has_failed,
                                             tmp_path / "pause")
        assert (code, errors, pauses) == (1, ["mount tmpfs to /mnt: invalid argument"], 1)
        assert runtime.listed_ids() == []
    assert not any((hierarchy / name).exists()
                   for hierarchy in _hierarchies("pids", "memory", "devices"))


def _mounted_or_gone(pid, mount_point):
    try:
        return mount_point in mount_points(pid)
    except OSError:
        return True  # exited: create says why


@pytest.mark.skipif(UNIFIED, reason="v1's device lists (v2's are BPF programs of a cgroup)")
def test_devices_are_made_in_the_containers_cgroups_not_the_runtimes(tmp_path):
    """The runtime runs in a devices cgroup that refuses mknod; the
    container's, below the root, allows it. pyoci's init makes its first
    mounts while the runtime places it (here held there until they are
    made), but the device nodes only once in its cgroups, as runc's init."""
    restricted = V1 / "devices" / f"pyoci-nomknod-{tmp_path.name}"
    restricted.mkdir()
    bundle = make_bundle(
        tmp_path / "b", ["sh", "-c", "test -c /dev/null && test -c /dev/zero"],  # for runc run
        mutate=lambda c: (c["linux"].update(cgroupsPath=f"/pyoci-devices-{tmp_path.name}"),
                          c.update(mounts=[m for m in c["mounts"] if m["type"] != "cgroup"])))
    in_restricted = ["sh", "-c", f'echo $$ > {restricted}/cgroup.procs && exec "$@"', "sh"]
    try:
        (restricted / "devices.deny").write_text("a *:* m")
        with private_runtime(RUNC) as runtime:
            runtime.argv[:0] = in_restricted
            runtime.run("run", "--bundle", bundle, runtime.new_id())
        with private_runtime(PYOCI) as runtime:
            runtime.argv[:0] = in_restricted
            container_id = runtime.new_id()

            def until_mounted(_, paused):
                init = wait_until(lambda: container_init_below(paused), "init")
                wait_until(lambda: _mounted_or_gone(init, f"{bundle}/rootfs/sys"),
                           "init's mounts")
                time.sleep(0.2)  # what init would do next, were it not waiting
            code, errors, pauses = create_paused(runtime, bundle, container_id,
                                                 ["create:placing"], until_mounted,
                                                 tmp_path / "pause")
            assert (code, errors, pauses) == (0, [], 1)
            init = runtime.state(container_id)["pid"]
            for device in ("null", "zero"):
                assert stat.S_ISCHR(os.stat(f"/proc/{init}/root/dev/{device}").st_mode)
    finally:
        wait_until(lambda: not (restricted / "cgroup.procs").read_text().strip(),
                   "the runtimes to leave the restricted cgroup")
        restricted.rmdir()


@pytest.mark.parametrize("in_use", ["a process", "frozen"])
def test_create_refuses_a_cgroup_in_use_and_leaves_it_as_it_was(tmp_path, in_use):
    """As runc: a cgroupsPath that has processes, or is frozen, is refused,
    and nothing of it is touched (the process lives, the cgroup stays)."""
    name = f"pyoci-busy-{tmp_path.name}"
    # runc looks in the devices hierarchy, pyoci in the pids one; v1's freezer
    kinds = ("devices", "pids") if in_use == "a process" else ("freezer",)
    directories = [hierarchy / name for hierarchy in _hierarchies(*kinds)]
    host_process = subprocess.Popen(["sleep", "100"])
    try:
        for directory in directories:
            directory.mkdir()
            if in_use == "a process":
                (directory / "cgroup.procs").write_text(str(host_process.pid))
            elif UNIFIED:
                (directory / "cgroup.freeze").write_text("1")
            else:
                (directory / "freezer.state").write_text("FROZEN")
        bundle = make_bundle(tmp_path / "b", ["true"],
                             mutate=lambda c: c["linux"].update(cgroupsPath="/" + name))
        words = ("container's cgroup is not empty: 1 process(es) found" if in_use == "a process"
                 else "container's cgroup unexpectedly frozen")
        # runc 1.1.5 only warns of a cgroup with processes (1.2 refuses it,
        # as pyoci does), then its delete kills them: pyoci's result alone.
        runtimes = (PYOCI, RUNC) if in_use == "frozen" else (PYOCI,)
        for command in runtimes:
            with private_runtime(command) as runtime:
                done = runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
                assert done.returncode == 1 and words in done.stderr, (runtime.name, done.stderr)
                assert runtime.listed_ids() == []
            assert host_process.poll() is None and all(d.is_dir() for d in directories)
    finally:
        host_process.kill()
        host_process.wait()
        for directory in directories:
            if (directory / "freezer.state").exists():
                (directory / "freezer.state").write_text("THAWED")
            if (directory / "cgroup.freeze").exists():
                (directory / "cgroup.freeze").write_text("0")
            wait_until(lambda: not (directory / "cgroup.procs").read_text().strip(),
                       "the host process to leave")
        for directory in directories:
            directory.rmdir()


@pytest.mark.skipif(not UNIFIED, reason="cgroup v2: controllers are enabled per subtree")
def test_v2_container_gets_every_controller_without_limits(pyoci, tmp_path):
    """As runc: stats (pids, memory) and OOM events need the controllers even
    when the config sets no limit."""
    container_id = start(pyoci, tmp_path, ["sleep", "100"])
    controllers = read(pyoci, container_id, "", "cgroup.controllers").split()
    assert {"pids", "memory", "cpu"} <= set(controllers)


def test_pids_limit_0_is_a_limit_of_its_own(pyoci, tmp_path):
    """The spec: 0 is a valid pids limit and SHOULD be treated as such (runc
    1.1.5 ignores it; 1.4 writes 1, the same for a container): init runs,
    nothing forks."""
    container_id = start(pyoci, tmp_path, ["sleep", "100"], {"pids": {"limit": 0}})
    assert read(pyoci, container_id, "pids", "pids.max") == "1"
    done = pyoci.run("exec", container_id, "true", check=False)
    assert done.returncode != 0


def test_update_memory_minus_1_is_unlimited_as_runc(tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"],
                         mutate=lambda c: c["linux"].update(resources={"memory": {"limit": 64 << 20}}))
    seen = {}
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            container_id = runtime.new_id()
            runtime.run("run", "--detach", "--bundle", bundle, container_id)
            runtime.run("update", "--memory", "-1", container_id)
            pid = runtime.state(container_id)["pid"]
            seen[runtime.name] = _memory_limit_of(pid)
    assert seen["pyoci"] == seen["runc"] and seen["pyoci"] in ("max", str((1 << 63) - 4096))


def _memory_limit_of(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    if UNIFIED:
        return (V1 / lines[0][2].lstrip("/") / "memory.max").read_text().strip()
    path = next(path for _, controllers, path in lines if controllers == "memory")
    return (V1 / "memory" / path.lstrip("/") / "memory.limit_in_bytes").read_text().strip()


@pytest.mark.skipif(UNIFIED, reason="v1's period and quota are two files; v2 writes cpu.max at once")
def test_update_cpu_period_below_a_parents_limit_succeeds_in_runcs_order(tmp_path):
    """The parent allows half a CPU, as does the container; the new period
    over the old quota would exceed it: runc writes the quota, then the
    period again."""
    parent = V1 / "cpu" / f"pyoci-parent-{tmp_path.name}"
    parent.mkdir()
    try:
        (parent / "cpu.cfs_quota_us").write_text("50000")
        resources = {"cpu": {"quota": 50000, "period": 100000}}
        bundle = make_bundle(tmp_path / "b", ["sleep", "100"], mutate=lambda c: c["linux"].update(
            resources=resources, cgroupsPath=f"/{parent.name}/ctr"))
        for command in (PYOCI, RUNC):
            with private_runtime(command) as runtime:
                container_id = runtime.new_id()
                runtime.run("run", "--detach", "--bundle", bundle, container_id)
                runtime.run("update", "--cpu-period", "50000", "--cpu-quota", "25000", container_id)
                child = parent / "ctr"
                assert ((child / "cpu.cfs_period_us").read_text(),
                        (child / "cpu.cfs_quota_us").read_text()) == ("50000\n", "25000\n"), \
                    runtime.name
    finally:
        parent.rmdir()


@pytest.mark.skipif(UNIFIED, reason="v1's device lists; v2 replaces one BPF program")
def test_update_of_device_rules_changes_only_what_differs(tmp_path):
    """As runc's device emulator: an update that keeps the default deny
    writes only the changed rules, so a sub-cgroup's rules (the kernel drops
    them on a deny-all above) are kept. (runc 1.1.5's update leaves device
    rules alone: there is nothing to compare.)"""
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"], mutate=lambda c: c["linux"].update(
        resources={"devices": [{"allow": False, "access": "rwm"}]}))
    wider = {"devices": [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"}]}
    with private_runtime(PYOCI) as runtime:
        container_id = runtime.new_id()
        runtime.run("run", "--detach", "--bundle", bundle, container_id)
        pid = runtime.state(container_id)["pid"]
        with open(f"/proc/{pid}/cgroup") as f:
            path = next(line.split(":", 2)[2].strip() for line in f
                        if line.split(":")[1] == "devices")
        sub = V1 / "devices" / path.lstrip("/") / "sub"
        sub.mkdir()
        before = (sub / "devices.list").read_text()
        assert "c 1:3 rwm" in before
        runtime.run("update", "--resources", "-", container_id, input=json.dumps(wider))
        assert (sub / "devices.list").read_text() == before
        assert "c 1:11 w" in (sub.parent / "devices.list").read_text()


def test_early_migration_leaves_the_runtime_where_it_was(monkeypatch):
    """cgroups.start_migrations_early's no-op: our own process, into the
    cgroup it is in, by a write the kernel accepts; then the interpreter's
    switch interval is the one it had."""
    from pyoci.linux import cgroups
    before = Path("/proc/self/cgroup").read_text()
    writes = []
    real_write = cgroups.os.write
    monkeypatch.setattr(cgroups.os, "write", lambda fd, data: writes.append(
        (os.readlink(f"/proc/self/fd/{fd}"), real_write(fd, data))))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    cgroups._migrate_into_own_cgroup(cgroups._own_cgroup_procs_files(), interval)
    assert sys.getswitchinterval() == interval
    assert Path("/proc/self/cgroup").read_text() == before
    [(procs_file, written)] = writes
    assert procs_file.endswith("/cgroup.procs") and written == 1
