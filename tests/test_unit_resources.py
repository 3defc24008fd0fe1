"""linux.resources -> cgroup file writes (no cgroups needed)."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyoci.errors import ConfigError
from pyoci.linux.cgroups import resources as r


def test_v1_memory_cpu_pids():
    writes = r.v1_writes({"memory": {"limit": 100, "swap": 200, "reservation": 50, "swappiness": 5,
                                     "disableOOMKiller": True, "useHierarchy": True},
                          "cpu": {"shares": 512, "period": 1000, "quota": 500, "cpus": "0-1",
                                  "mems": "0", "realtimePeriod": 10, "realtimeRuntime": 5},
                          "pids": {"limit": -1}})
    assert writes == [
        ("memory", "memory.limit_in_bytes", "100"), ("memory", "memory.memsw.limit_in_bytes", "200"),
        ("memory", "memory.soft_limit_in_bytes", "50"), ("memory", "memory.swappiness", "5"),
        ("memory", "memory.oom_control", "1"), ("memory", "memory.use_hierarchy", "1"),
        ("cpu", "cpu.shares", "512"), ("cpu", "cpu.cfs_period_us", "1000"),
        ("cpu", "cpu.cfs_quota_us", "500"), ("cpu", "cpu.rt_period_us", "10"),
        ("cpu", "cpu.rt_runtime_us", "5"), ("cpuset", "cpuset.cpus", "0-1"),
        ("cpuset", "cpuset.mems", "0"), ("pids", "pids.max", "max")]


def test_zero_values_runc_treats_as_unset_write_nothing():
    """Docker sends shares 0, weight 0, disableOOMKiller false."""
    assert r.v1_writes({"memory": {"disableOOMKiller": False}, "cpu": {"shares": 0},
                        "blockIO": {"weight": 0}}) == []


def test_pids_limit_0_is_a_limit_of_1_as_runc_1_4_writes_it():
    assert r.v1_writes({"pids": {"limit": 0}}) == [("pids", "pids.max", "1")]
    assert r.v2_writes({"pids": {"limit": 0}}) == [("pids.max", "1")]
    assert r.v2_writes({"pids": {"limit": -1}}) == [("pids.max", "max")]
    assert r.v2_writes({"pids": {}}) == []


def test_v1_block_io_hugetlb_network_rdma():
    writes = r.v1_writes({
        "blockIO": {"weight": 500, "leafWeight": 300,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 400}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 20}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}}})
    assert writes == [
        ("blkio", "blkio.weight", "500"), ("blkio", "blkio.leaf_weight", "300"),
        ("blkio", "blkio.weight_device", "8:0 400"),
        ("blkio", "blkio.throttle.read_bps_device", "8:0 1000"),
        ("blkio", "blkio.throttle.write_iops_device", "8:16 20"),
        ("hugetlb", "hugetlb.2MB.limit_in_bytes", "4194304"),
        ("net_cls", "net_cls.classid", "1048577"), ("net_prio", "net_prio.ifpriomap", "eth0 5"),
        ("rdma", "rdma.max", "mlx5_1 hca_handle=3 hca_object=10000")]


def test_v1_block_io_weight_goes_to_bfq_where_cfq_files_are_absent():
    block_io = {"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 400}]}}
    assert r.v1_writes(block_io, available_files={"blkio.bfq.weight", "blkio.bfq.weight_device"}) == [
        ("blkio", "blkio.bfq.weight", "500"), ("blkio", "blkio.bfq.weight_device", "8:0 400")]
    assert [name for _, name, _ in r.v1_writes(block_io, available_files={"blkio.weight"})] == [
        "blkio.weight", "blkio.weight_device"]
    # Neither: the CFQ name, which apply() reports as unsupported by the kernel.
    assert r.v1_writes(block_io, available_files=set())[0][1] == "blkio.weight"


def test_unified_is_refused_on_v1_like_runc():
    with pytest.raises(ConfigError, match="cannot use unified on cgroup v1"):
        r.v1_writes({"unified": {"memory.high": "90"}})
    assert r.v1_writes({"unified": {}}) == []


def test_device_rules_keep_order_and_end_with_the_defaults():
    rules = r.device_rules([{"allow": False, "access": "rwm"},
                            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
                            {"allow": False, "type": "b", "major": 8, "access": "w"}])
    assert rules[:4] == [("devices.deny", "a"), ("devices.deny", "a"),
                         ("devices.allow", "c 10:229 rwm"), ("devices.deny", "b 8:* w")]
    assert ("devices.allow", "c 1:3 rwm") in rules[4:]


def test_swappiness_out_of_range():
    with pytest.raises(ConfigError, match="swappiness"):
        r.v1_writes({"memory": {"swappiness": 101}})


def test_v2_translation():
    writes = r.v2_writes({"memory": {"limit": 100, "swap": 300, "reservation": 10},
                          "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "1"},
                          "pids": {"limit": 9}, "blockIO": {"weight": 100},
                          "unified": {"memory.high": "90"}}, available_files={"io.weight"})
    assert writes == [("memory.max", "100"), ("memory.swap.max", "200"), ("memory.low", "10"),
                      ("cpu.weight", "39"), ("cpu.max", "50000 100000"), ("cpuset.cpus", "1"),
                      ("pids.max", "9"), ("io.weight", str(r.io_weight_from_blkio(100))),
                      ("memory.high", "90")]
    assert r.v2_controllers(writes) == ["cpu", "cpuset", "io", "memory", "pids"]


@pytest.mark.parametrize("resources, field", [
    ({"memory": {"swappiness": 10}}, "swappiness"),
    ({"memory": {"swap": 100}}, "swap"),
    ({"cpu": {"realtimeRuntime": 5}}, "realtimeRuntime"),
    ({"network": {"classID": 1}}, "network"),
    ({"unified": {"../escape": "1"}}, "unified")])
def test_v2_refuses_what_it_cannot_express(resources, field):
    with pytest.raises(ConfigError, match=field):
        r.v2_writes(resources)


@given(st.integers(min_value=2, max_value=262144))
def test_cpu_weight_conversion_stays_in_range(shares):
    assert 1 <= r.cpu_weight_from_shares(shares) <= 10000


@given(st.integers(min_value=10, max_value=1000))
def test_io_weight_conversion_stays_in_range(weight):
    assert 1 <= r.io_weight_from_blkio(weight) <= 10000


BASE_RULES = r.device_rules([{"allow": False, "access": "rwm"}])


def _list_of(rules):
    state = r.DeviceState.after(rules)
    return "".join(f"{t} {n} {''.join(sorted(a))}\n" for (t, n), a in state.exceptions.items())


def test_device_transition_from_allow_all_writes_every_rule():
    assert r.device_transition("a *:* rwm\n", BASE_RULES) == BASE_RULES


def test_device_transition_to_the_same_rules_writes_nothing():
    assert r.device_transition(_list_of(BASE_RULES), BASE_RULES) == []


def test_device_transition_removes_then_adds_only_what_changes():
    current = _list_of(BASE_RULES + [("devices.allow", "c 10:229 rwm"),
                                     ("devices.allow", "b 8:0 rwm")])
    target = BASE_RULES + [("devices.allow", "c 10:229 r"), ("devices.allow", "c 4:1 rw")]
    assert r.device_transition(current, target) == [
        ("devices.deny", "b 8:0 mrw"), ("devices.deny", "c 10:229 mw"),
        ("devices.allow", "c 4:1 rw")]


def test_device_transition_to_allow_by_default_resets():
    rules = [("devices.allow", "a"), ("devices.deny", "c 1:9 rwm")]
    assert r.device_transition(_list_of(BASE_RULES), rules) == rules
