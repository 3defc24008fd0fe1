"""Every linux.resources field on the kernel: written and read back where
this host has its cgroup file, one clear line (exit 1, nothing left) where
it does not, and the v1-only or v2-only fields refused or ignored as runc.

On a v1/hybrid host pyoci runs in a mount namespace where every v1
controller the kernel has is mounted (tests/cgroups/with_every_v1_controller.sh),
so hugetlb, net_cls and net_prio, which this host leaves unmounted, are
tested too. On a v2 host (the VM of `make test-v2`) it runs as it is.
Whether the host has a file is judged apart from pyoci, in a throwaway
cgroup, so a wrong refusal fails as surely as a wrong value.
"""
import json
import os
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from conformance.bundle import make_bundle
from conformance.harness import PYOCI, LeakCheck, Probe, private_runtime, wait_until

pytestmark = pytest.mark.root

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = (CGROUP_ROOT / "cgroup.controllers").exists()
EVERY_V1_CONTROLLER = str(Path(__file__).parent / "cgroups" / "with_every_v1_controller.sh")

# Does a new cgroup get file $2 (v1: in controller $1's hierarchy)?
HAS_FILE_V1 = """
mount_point=$(awk -v c="$1" '$3 == "cgroup" { n = split($4, o, ","); for (i = 1; i <= n; i++) if (o[i] == c) print $2 }' /proc/self/mounts | tail -n 1)
[ -n "$mount_point" ] || exit 1
probe=$mount_point/pyoci-probe-$$
mkdir "$probe"
test -e "$probe/$2"; found=$?
rmdir "$probe"
exit $found
"""
HAS_FILE_V2 = """
grep -qw "$1" /sys/fs/cgroup/cgroup.controllers || exit 1
echo "+$1" > /sys/fs/cgroup/cgroup.subtree_control
probe=/sys/fs/cgroup/pyoci-probe-$$
mkdir "$probe"
test -e "$probe/$2"; found=$?
rmdir "$probe"
exit $found
"""


def rdma_device():
    devices = sorted(os.listdir("/sys/class/infiniband")) if os.path.isdir("/sys/class/infiniband") else []
    return devices[0] if devices else None


RDMA = rdma_device()


class Field(NamedTuple):
    """RESOURCES, and what each kind of host makes of them: a list of
    (controller, file, line) to read back on v1 and (file, line) on v2
    (empty: accepted with nothing to write, as runc), or the error that
    refuses them."""
    resources: dict
    v1: object
    v2: object


ONLY_V1 = "not supported on cgroup v2"
# v1's weight files: CFQ's, or BFQ's where CFQ is gone (as runc picks them).
WEIGHT, WEIGHT_DEVICE = "blkio.weight|blkio.bfq.weight", "blkio.weight_device|blkio.bfq.weight_device"


def fields(disk):
    """{name: Field}; DISK is the major:minor the per-device settings name."""
    major, minor = map(int, disk.split(":"))

    def device(**values):
        return {"major": major, "minor": minor, **values}

    return {
        # Kernels since 6.1 take kmem.limit_in_bytes and ignore it; runc writes it all the same.
        "memory.kernel": Field({"memory": {"kernel": 16 << 20}}, [], []),
        "memory.kernelTCP": Field({"memory": {"kernelTCP": 16 << 20}},
                                  [("memory", "memory.kmem.tcp.limit_in_bytes", str(16 << 20))], []),
        "memory.disableOOMKiller": Field({"memory": {"disableOOMKiller": True}},
                                         [("memory", "memory.oom_control", "oom_kill_disable 1")],
                                         ONLY_V1),
        "memory.swappiness": Field({"memory": {"swappiness": 7}},
                                   [("memory", "memory.swappiness", "7")], ONLY_V1),
        "memory.useHierarchy": Field({"memory": {"useHierarchy": True}},
                                     [("memory", "memory.use_hierarchy", "1")], []),
        "cpu.burst": Field({"cpu": {"quota": 20000, "period": 100000, "burst": 5000}},
                           [("cpu", "cpu.cfs_burst_us", "5000")], [("cpu.max.burst", "5000")]),
        "cpu.realtime": Field({"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 10000}},
                              [("cpu", "cpu.rt_period_us", "1000000"),
                               ("cpu", "cpu.rt_runtime_us", "10000")], ONLY_V1),
        "cpu.idle": Field({"cpu": {"idle": 1}}, [("cpu", "cpu.idle", "1")], [("cpu.idle", "1")]),
        "pids.unlimited": Field({"pids": {"limit": -1}}, [("pids", "pids.max", "max")],
                                [("pids.max", "max")]),
        # On v2 runc's conversion to io.weight (1-10000), where BFQ has no file.
        "blockIO.weight": Field({"blockIO": {"weight": 500}}, [("blkio", WEIGHT, "500")],
                                [("io.weight", "default 4950")]),
        "blockIO.leafWeight": Field({"blockIO": {"leafWeight": 500}},
                                    [("blkio", "blkio.leaf_weight", "500")], []),
        "blockIO.weightDevice.leafWeight": Field(
            {"blockIO": {"weightDevice": [device(leafWeight=500)]}},
            [("blkio", "blkio.leaf_weight_device", f"{disk} 500")], []),
        "blockIO.weightDevice": Field({"blockIO": {"weightDevice": [device(weight=500)]}},
                                      [("blkio", WEIGHT_DEVICE, f"{disk} 500")],
                                      [("io.weight", f"{disk} 4950")]),
        "blockIO.throttle": Field(
            {"blockIO": {"throttleReadBpsDevice": [device(rate=1 << 20)],
                         "throttleWriteBpsDevice": [device(rate=2 << 20)],
                         "throttleReadIOPSDevice": [device(rate=100)],
                         "throttleWriteIOPSDevice": [device(rate=200)]}},
            [("blkio", "blkio.throttle.read_bps_device", f"{disk} {1 << 20}"),
             ("blkio", "blkio.throttle.write_bps_device", f"{disk} {2 << 20}"),
             ("blkio", "blkio.throttle.read_iops_device", f"{disk} 100"),
             ("blkio", "blkio.throttle.write_iops_device", f"{disk} 200")],
            [("io.max", f"{disk} rbps={1 << 20} wbps={2 << 20} riops=100 wiops=200")]),
        "hugepageLimits": Field({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]},
                                [("hugetlb", "hugetlb.2MB.limit_in_bytes", str(4 << 20))],
                                [("hugetlb.2MB.max", str(4 << 20))]),
        "network": Field({"network": {"classID": 0x100001,
                                      "priorities": [{"name": "lo", "priority": 5}]}},
                         [("net_cls", "net_cls.classid", str(0x100001)),
                          ("net_prio", "net_prio.ifpriomap", "lo 5")], ONLY_V1),
        "rdma": Field({"rdma": {RDMA or "mlx4_0": {"hcaHandles": 2, "hcaObjects": 100}}},
                      [("rdma", "rdma.max", f"{RDMA} hca_handle=2 hca_object=100")],
                      [("rdma.max", f"{RDMA} hca_handle=2 hca_object=100")]),
        "unified": Field({"unified": {"memory.high": str(32 << 20)}},
                         "invalid configuration: cannot use unified on cgroup v1",
                         [("memory.high", str(32 << 20))]),
    }


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """A loop device of the tests' own, a whole disk (the throttles and
    weights take no partition) set up for per-device weights: BFQ as its
    scheduler on v1 (where the kernel has it), iocost on v2."""
    subprocess.run(["modprobe", "loop"], capture_output=True)
    backing = tmp_path_factory.mktemp("disk") / "backing"
    backing.write_bytes(bytes(1 << 20))
    loop = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                          capture_output=True, text=True).stdout.strip()
    block = Path("/sys/block") / os.path.basename(loop)
    major_minor = (block / "dev").read_text().strip()
    try:
        if UNIFIED:
            (CGROUP_ROOT / "io.cost.qos").write_text(f"{major_minor} enable=1")
        elif "bfq" in (block / "queue" / "scheduler").read_text():
            (block / "queue" / "scheduler").write_text("bfq")
        yield major_minor
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)


class CgroupHost:
    """pyoci, and commands beside it, where every controller is mounted."""

    def __init__(self, runtime):
        self.runtime = runtime

    def run(self, *argv):
        prefix = [] if UNIFIED else [EVERY_V1_CONTROLLER]
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60)

    def has_file(self, controller, name):
        script = HAS_FILE_V2 if UNIFIED else HAS_FILE_V1
        return self.run("sh", "-c", script, "has-file", controller, name).returncode == 0

    def read_lines(self, directory, name):
        completed = self.run("cat", f"{directory}/{name}")
        assert completed.returncode == 0, completed.stderr
        return completed.stdout.splitlines()

    def cgroups_of(self, container_id):
        completed = self.run("find", str(CGROUP_ROOT), "-name", f"*{container_id}*")
        return completed.stdout.split()


# Names the hierarchies the script added, then the cgroups below them.
IN_ADDED_HIERARCHIES = """
echo "$ADDED_HIERARCHIES" | tr ' ,' '\n\n'
echo --
for hierarchy in $ADDED_HIERARCHIES; do
    find "/sys/fs/cgroup/$hierarchy" -mindepth 1 -type d
done
"""


def in_added_hierarchies():
    """(controllers of the hierarchies the script adds, the cgroups in them)."""
    output = subprocess.run([EVERY_V1_CONTROLLER, "sh", "-c", IN_ADDED_HIERARCHIES],
                            capture_output=True, text=True, check=True).stdout.split()
    return output[:output.index("--")], output[output.index("--") + 1:]


def v1_hierarchies():
    """{controller: (hierarchy id, cgroups in it)} from /proc/cgroups."""
    with open("/proc/cgroups") as f:
        return {fields[0]: (int(fields[1]), int(fields[2]))
                for fields in map(str.split, f) if fields[0] != "#subsys_name"}


@pytest.fixture(scope="module", autouse=True)
def controllers_given_back():
    """After the last container is gone, one more run frees the hierarchies
    the script made (hugetlb goes back to the hybrid host's cgroup2). A
    cgroup these tests left in them would keep them, and every process on
    the host would then show hierarchies that no mount point has
    (containerd's metrics fail on that): it is removed and the module fails.
    Cgroups that were there before the tests are someone else's: they stay,
    and so do the hierarchies that hold them."""
    if UNIFIED:
        yield
        return
    _, before = in_added_hierarchies()
    yield
    added, now = in_added_hierarchies()
    left = [path for path in now if path not in before]
    if left:  # deepest first
        subprocess.run([EVERY_V1_CONTROLLER, "rmdir", *sorted(left, reverse=True)], check=True)
    # Only an unmount that finds a hierarchy without cgroups frees it, and a
    # removed cgroup takes a moment to be gone for good.
    held = {c for path in before for c in path.split("/")[4].split(",")}
    freed = [c for c in added if c not in held]
    wait_until(lambda: all(v1_hierarchies()[c][1] == 1 for c in freed),
               "the removed cgroups to be gone")
    subprocess.run([EVERY_V1_CONTROLLER, "true"], check=True)
    wait_until(lambda: all(v1_hierarchies()[c][0] == 0 for c in freed),
               f"the kernel to free the {freed} hierarchies")
    assert left == [], f"cgroups left in the added hierarchies: {left}"


@pytest.fixture
def host(tmp_path):
    command = PYOCI
    if not UNIFIED:
        command = tmp_path / "pyoci"
        command.write_text(f'#!/bin/sh\nexec {EVERY_V1_CONTROLLER} {PYOCI} "$@"\n')
        command.chmod(0o755)
    with private_runtime(str(command)) as runtime:
        yield CgroupHost(runtime)


@pytest.fixture
def host_leak_check(host, tmp_path):
    check = LeakCheck(host.runtime, tmp_path)
    yield check
    check.close()


def on_this_host(host, expected):
    """EXPECTED as [(controller or None, file, line)], each 'a|b' file the
    first this host has, and what it lacks of them: (controller, file) or None."""
    resolved, missing = [], None
    for where in expected:
        controller, names, line = (None, *where) if UNIFIED else where
        kind = controller or names.split(".")[0]
        name = next((n for n in names.split("|") if host.has_file(kind, n)), None)
        if name is None or (kind == "rdma" and RDMA is None):
            missing = missing or (kind, names.split("|")[0])
        resolved.append((controller, name, line))
    return resolved, missing


@pytest.mark.parametrize("field", sorted(fields("0:0")))
def test_each_field_is_written_or_refused_in_one_line(host, disk, tmp_path, host_leak_check,
                                                      field):
    resources, v1, v2 = fields(disk)[field]
    expected = v2 if UNIFIED else v1
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"],
                         mutate=lambda config: config["linux"].update(resources=resources))
    container_id = host.runtime.new_id()
    result = host.runtime.run("run", "--detach", "--bundle", bundle, container_id, check=False)

    refusal, missing = (expected, None) if isinstance(expected, str) else (None, None)
    if refusal is None:
        expected, missing = on_this_host(host, expected)
    if refusal or missing:
        assert result.returncode == 1, f"{field}: accepted, though {refusal or missing}"
        assert result.stderr.count("\n") == 1, result.stderr
        if refusal:
            assert refusal in result.stderr
        else:  # the controller, or the file, or the RDMA device that is not there
            assert any(word in result.stderr for word in missing), result.stderr
        assert host.cgroups_of(container_id) == []
        assert host_leak_check.leftovers() == {}
        return

    assert result.returncode == 0, result.stderr
    paths = json.loads((host.runtime.root / container_id / "state.json").read_text())["cgroup_paths"]
    for controller, name, line in expected:
        directory = paths[""] if controller is None else paths[controller]
        assert line in host.read_lines(directory, name), f"{name} in {directory}"


@pytest.mark.skipif(UNIFIED, reason="hierarchies of several controllers are v1's")
@pytest.mark.parametrize("cgroup_namespace", [False, True])
def test_cgroup_mount_links_each_controller_of_a_shared_hierarchy(host, tmp_path,
                                                                  cgroup_namespace):
    def with_cgroup_mount(config):
        config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                                 "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]})
        config["linux"]["resources"] = {"network": {"classID": 0x100002}}
        if cgroup_namespace:
            config["linux"]["namespaces"].append({"type": "cgroup"})
    output = Probe(host.runtime, tmp_path).run(
        "readlink /sys/fs/cgroup/net_cls; readlink /sys/fs/cgroup/net_prio; "
        "cat /sys/fs/cgroup/net_prio/net_cls.classid", mutate=with_cgroup_mount)
    assert output.split() == ["net_cls,net_prio", "net_cls,net_prio", str(0x100002)]
