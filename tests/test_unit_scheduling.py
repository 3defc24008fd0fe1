"""pyoci/linux/scheduling.py and personality.py without a kernel: parsing
and checking, and the values handed to the syscalls."""
import struct

import pytest

from pyoci.errors import ConfigError
from pyoci.linux import personality, scheduling


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


@pytest.mark.parametrize("text, numbers", [("", set()), ("0-3,7", {0, 1, 2, 3, 7}),
                                           ("5", {5}), (" 1 , 2-2 ", {1, 2})])
def test_parse_list(text, numbers):
    assert scheduling.parse_list(text, "x") == numbers


@pytest.mark.parametrize("text", ["a", "3-1", "1-", "-1"])
def test_parse_list_refuses_what_is_not_a_list(text):
    with pytest.raises(ConfigError, match="^x: "):
        scheduling.parse_list(text, "x")


def test_scheduler_packs_a_sched_attr_of_its_policy_flags_and_values():
    raw = {"policy": "SCHED_DEADLINE", "runtime": 2000, "deadline": 5000, "period": 9000,
           "flags": ["SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN"]}
    recorder = Recorder()
    scheduling.Scheduler(raw).apply(recorder)
    (name, attr), = recorder.calls
    assert name == "sched_setattr"
    assert struct.unpack("=IIQiIQQQII", attr) == (56, 6, 0x06, 0, 0, 2000, 5000, 9000, 0, 0)


@pytest.mark.parametrize("raw, words", [
    ({"policy": "SCHED_RR", "priority": 100}, "within 1..99"),
    ({"policy": "SCHED_BATCH", "priority": 1}, "takes priority 0"),
    ({"policy": "SCHED_DEADLINE", "runtime": 2000}, "deadline <= period"),
    ({"policy": "SCHED_DEADLINE", "runtime": 5000, "deadline": 2000}, "deadline <= period"),
])
def test_scheduler_values_the_kernel_would_refuse(raw, words):
    with pytest.raises(ConfigError, match=words):
        scheduling.Scheduler(raw)


def test_deadline_needs_every_online_cpu(monkeypatch):
    monkeypatch.setattr(scheduling, "_host_list", lambda path: {0, 1})
    raw = {"policy": "SCHED_DEADLINE", "runtime": 2000, "deadline": 5000}
    scheduling.Scheduler(raw, cgroup_cpus={0, 1})
    with pytest.raises(ConfigError, match="needs every CPU"):
        scheduling.Scheduler(raw, cgroup_cpus={1})


def test_io_priority_value_is_class_and_level():
    assert scheduling.IoPriority({"class": "IOPRIO_CLASS_IDLE", "priority": 7}).value == 3 << 13 | 7


def test_memory_policy_mode_carries_its_flags_and_nodes():
    policy = scheduling.MemoryPolicy({"mode": "MPOL_INTERLEAVE", "nodes": "0,2",
                                      "flags": ["MPOL_F_STATIC_NODES"]})
    recorder = Recorder()
    policy.apply(recorder)
    assert recorder.calls == [("set_mempolicy", 3 | 1 << 15, {0, 2})]


def test_memory_policy_preferred_without_nodes_is_local_allocation():
    assert scheduling.MemoryPolicy({"mode": "MPOL_PREFERRED"}).nodes == set()


def test_cpu_affinity_refuses_cpus_that_are_not_online(monkeypatch):
    monkeypatch.setattr(scheduling, "_host_list", lambda path: {0, 1})
    assert scheduling.CpuAffinity({"initial": "0", "final": "1"}).final == {1}
    with pytest.raises(ConfigError, match=r"execCPUAffinity.initial: CPUs \[2\] are not online"):
        scheduling.CpuAffinity({"initial": "0-2"})


def test_persona_is_domain_and_flags():
    assert personality.persona(None) is None
    assert personality.persona({"domain": "LINUX32", "flags": ["UNAME26", "ADDR_LIMIT_3GB"]}) == \
        0x0008 | 0x0020000 | 0x8000000
    with pytest.raises(ConfigError, match="unknown flag 'X'"):
        personality.persona({"domain": "LINUX", "flags": ["X"]})
