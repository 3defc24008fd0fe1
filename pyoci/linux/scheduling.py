"""Where and how a container's processes run: process.scheduler
(sched_setattr), process.ioPriority (ioprio_set), process.execCPUAffinity
(sched_setaffinity around an exec's move into the cgroups) and
linux.memoryPolicy (set_mempolicy).

Each is parsed and checked at create (or exec) into a small object, so a
bad value is one line before anything exists; init and exec processes
apply them while still privileged, before the user switch.
"""
import errno
import os
import struct

from pyoci.errors import ConfigError, ExecError, errno_text

POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
            "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
# struct sched_attr as of Linux 5.3 (SCHED_ATTR_SIZE_VER1): size, policy,
# flags, nice, priority, runtime, deadline, period, util_min, util_max.
_SCHED_ATTR = struct.Struct("=IIQiIQQQII")
_REALTIME = ("SCHED_FIFO", "SCHED_RR")

IO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
_IOPRIO_CLASS_SHIFT = 13

MEMORY_POLICY_MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2,
                       "MPOL_INTERLEAVE": 3, "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5,
                       "MPOL_WEIGHTED_INTERLEAVE": 6}
MEMORY_POLICY_FLAGS = {"MPOL_F_NUMA_BALANCING": 1 << 13, "MPOL_F_RELATIVE_NODES": 1 << 14,
                       "MPOL_F_STATIC_NODES": 1 << 15}
_MODES_WITHOUT_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL")


def parse_list(text, where):
    """A kernel list ("0-3,7") as a set of numbers; empty text is none."""
    numbers = set()
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not a list like 0-3,7") from None
        if first < 0 or last < first:
            raise ConfigError(f"{where}: {text!r}: bad range {part!r}")
        numbers.update(range(first, last + 1))
    return numbers


def _host_list(path):
    """A kernel list file of the host (/sys/devices/system/cpu/online)."""
    try:
        with open(path) as f:
            return parse_list(f.read().strip(), path)
    except OSError:
        return None


class Scheduler:
    """process.scheduler as one sched_setattr call."""

    def __init__(self, raw, cgroup_cpus=None):
        where = "config.json: process.scheduler"
        self.policy = raw["policy"]
        if self.policy not in POLICIES:
            raise ConfigError(f"{where}.policy: unknown policy {self.policy!r}")
        if self.policy == "SCHED_ISO":
            raise ConfigError(f"{where}.policy: SCHED_ISO is reserved: Linux does not implement it")
        self.flags = 0
        for name in raw.get("flags") or ():
            if name not in SCHED_FLAGS:
                raise ConfigError(f"{where}.flags: unknown flag {name!r}")
            self.flags |= SCHED_FLAGS[name]
        self.nice = raw.get("nice", 0)
        self.priority = raw.get("priority", 0)
        self.runtime, self.deadline, self.period = (raw.get(key, 0) for key in
                                                    ("runtime", "deadline", "period"))
        if not -20 <= self.nice <= 19:
            raise ConfigError(f"{where}.nice: {self.nice} is not within -20..19")
        if self.policy in _REALTIME and not 1 <= self.priority <= 99:
            raise ConfigError(f"{where}.priority: {self.policy} needs a priority within 1..99, "
                              f"not {self.priority}")
        if self.policy not in _REALTIME and self.priority != 0:
            raise ConfigError(f"{where}.priority: {self.policy} takes priority 0, "
                              f"not {self.priority}")
        if self.policy == "SCHED_DEADLINE":
            self._check_deadline(where, cgroup_cpus)

    def _check_deadline(self, where, cgroup_cpus):
        period = self.period or self.deadline
        if not (self.deadline and 1024 <= self.runtime <= self.deadline <= period):
            raise ConfigError(f"{where}: SCHED_DEADLINE needs 1024 <= runtime <= deadline <= "
                              f"period (ns), not {self.runtime}, {self.deadline}, {self.period}")
        online = _host_list("/sys/devices/system/cpu/online")
        if cgroup_cpus is not None and online is not None and not online <= cgroup_cpus:
            # The kernel admits a deadline task only where it may run on
            # every CPU of its root domain.
            raise ConfigError(f"{where}: SCHED_DEADLINE needs every CPU, and "
                              f"linux.resources.cpu.cpus allows only {sorted(cgroup_cpus)}")

    def apply(self, syscalls):
        attr = _SCHED_ATTR.pack(_SCHED_ATTR.size, POLICIES[self.policy], self.flags, self.nice,
                                self.priority, self.runtime, self.deadline, self.period, 0, 0)
        try:
            syscalls.sched_setattr(attr)
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EPERM and self.policy in _REALTIME:
                hint = (" (with real-time group scheduling, a cgroup gives real-time tasks "
                        "no time unless linux.resources.cpu.realtimeRuntime says so)")
            raise ExecError(f"process.scheduler: set {self.policy}: "
                            f"{errno_text(exc.errno)}{hint}") from None


class IoPriority:
    """process.ioPriority: the I/O class and level of the process (and so of
    every process it starts, which inherit it)."""

    def __init__(self, raw):
        where = "config.json: process.ioPriority"
        if raw["class"] not in IO_CLASSES:
            raise ConfigError(f"{where}.class: unknown class {raw['class']!r}")
        if not 0 <= raw["priority"] <= 7:
            raise ConfigError(f"{where}.priority: {raw['priority']} is not within 0..7")
        self.value = IO_CLASSES[raw["class"]] << _IOPRIO_CLASS_SHIFT | raw["priority"]
        self.name = f"{raw['class']} {raw['priority']}"

    def apply(self, syscalls):
        try:
            syscalls.ioprio_set_process(self.value)
        except OSError as exc:
            raise ExecError(f"process.ioPriority: set {self.name}: "
                            f"{errno_text(exc.errno)}") from None


class CpuAffinity:
    """process.execCPUAffinity: the CPUs of an exec process before it joins
    the container's cgroups (initial) and after (final)."""

    def __init__(self, raw):
        online = _host_list("/sys/devices/system/cpu/online")
        self.initial = self._cpus(raw.get("initial") or "", "initial", online)
        self.final = self._cpus(raw.get("final") or "", "final", online)

    @staticmethod
    def _cpus(text, key, online):
        where = f"config.json: process.execCPUAffinity.{key}"
        cpus = parse_list(text, where)
        if cpus and online is not None and not cpus <= online:
            raise ConfigError(f"{where}: CPUs {sorted(cpus - online)} are not online "
                              f"(online: {sorted(online)})")
        return cpus

    @staticmethod
    def set(pid, cpus, key):
        if cpus:
            try:
                os.sched_setaffinity(pid, cpus)
            except OSError as exc:
                raise ExecError(f"process.execCPUAffinity.{key}: set CPUs {sorted(cpus)}: "
                                f"{errno_text(exc.errno)}") from None


class MemoryPolicy:
    """linux.memoryPolicy: one set_mempolicy for every process of the container."""

    def __init__(self, raw):
        where = "config.json: linux.memoryPolicy"
        self.mode_name = raw["mode"]
        if self.mode_name not in MEMORY_POLICY_MODES:
            raise ConfigError(f"{where}.mode: unknown mode {self.mode_name!r}")
        self.mode = MEMORY_POLICY_MODES[self.mode_name]
        for name in raw.get("flags") or ():
            if name not in MEMORY_POLICY_FLAGS:
                raise ConfigError(f"{where}.flags: unknown flag {name!r}")
            self.mode |= MEMORY_POLICY_FLAGS[name]
        self.nodes = parse_list(raw.get("nodes") or "", f"{where}.nodes")
        if self.mode_name in _MODES_WITHOUT_NODES and self.nodes:
            raise ConfigError(f"{where}.nodes: {self.mode_name} takes no nodes")
        if self.mode_name not in _MODES_WITHOUT_NODES + ("MPOL_PREFERRED",) and not self.nodes:
            raise ConfigError(f"{where}.nodes: {self.mode_name} needs at least one node")

    def apply(self, syscalls):
        try:
            syscalls.set_mempolicy(self.mode, self.nodes)
        except OSError as exc:
            present = _host_list("/sys/devices/system/node/has_memory")
            known = f" (this host's memory nodes: {sorted(present)})" if present else ""
            raise ExecError(f"linux.memoryPolicy: set_mempolicy {self.mode_name} nodes "
                            f"{sorted(self.nodes)}: {errno_text(exc.errno)}{known}") from None


class ProcessPlacement:
    """Everything of this module one process applies, checked up front."""

    def __init__(self, process, linux):
        """PROCESS and LINUX: pyoci.spec's Process and Linux."""
        cpus_text = (linux.resources.get("cpu") or {}).get("cpus")
        cgroup_cpus = parse_list(cpus_text, "config.json: linux.resources.cpu.cpus") \
            if cpus_text else None
        self.scheduler = Scheduler(process.scheduler, cgroup_cpus) if process.scheduler else None
        self.io_priority = IoPriority(process.io_priority) if process.io_priority else None
        self.cpu_affinity = (CpuAffinity(process.exec_cpu_affinity)
                             if process.exec_cpu_affinity else None)
        self.memory_policy = MemoryPolicy(linux.memory_policy) if linux.memory_policy else None

    def apply(self, syscalls):
        """In the process, still privileged: a real-time policy and class
        need CAP_SYS_NICE or CAP_SYS_ADMIN, which the user may not keep."""
        for setting in (self.memory_policy, self.io_priority, self.scheduler):
            if setting is not None:
                setting.apply(syscalls)
