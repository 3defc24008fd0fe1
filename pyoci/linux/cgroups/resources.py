"""linux.resources as the cgroup file writes that apply it, for v1 and v2.

Pure functions: they turn the config's LinuxResources object into an ordered
list of ``(controller, file, value)`` (v1) or ``(file, value)`` (v2), so the
translation is testable without a cgroup tree. Zero values that runc treats
as "unset" (cpu shares, blkio weight) write nothing.
"""
from pyoci.errors import ConfigError

# What every container may always use, whatever its device rules say, as
# runc allows them: the runtime-spec's default devices plus the pty devices,
# and mknod of any device (access to a node is still checked by the rules).
DEFAULT_ALLOWED_DEVICES = (
    ("c", "*", "*", "m"), ("b", "*", "*", "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"),
    ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"),
    ("c", 136, "*", "rwm"), ("c", 10, 200, "rwm"),
)
# (section, key, controller, file, whether 0/false means "unset"), in write order:
# cpu period before quota, realtime period before runtime, memory limit before
# memsw (which _memory_order in v1.py reverses when the limit grows past it).
V1_FIELDS = (
    ("memory", "limit", "memory", "memory.limit_in_bytes", True),
    ("memory", "swap", "memory", "memory.memsw.limit_in_bytes", True),
    ("memory", "reservation", "memory", "memory.soft_limit_in_bytes", True),
    ("memory", "kernel", "memory", "memory.kmem.limit_in_bytes", True),
    ("memory", "kernelTCP", "memory", "memory.kmem.tcp.limit_in_bytes", True),
    ("memory", "swappiness", "memory", "memory.swappiness", False),
    ("memory", "disableOOMKiller", "memory", "memory.oom_control", True),
    ("memory", "useHierarchy", "memory", "memory.use_hierarchy", False),
    ("cpu", "shares", "cpu", "cpu.shares", True),
    ("cpu", "period", "cpu", "cpu.cfs_period_us", True),
    ("cpu", "quota", "cpu", "cpu.cfs_quota_us", True),
    ("cpu", "burst", "cpu", "cpu.cfs_burst_us", False),
    ("cpu", "realtimePeriod", "cpu", "cpu.rt_period_us", True),
    ("cpu", "realtimeRuntime", "cpu", "cpu.rt_runtime_us", True),
    ("cpu", "idle", "cpu", "cpu.idle", False),
    ("cpu", "cpus", "cpuset", "cpuset.cpus", True),
    ("cpu", "mems", "cpuset", "cpuset.mems", True),
)
V1_OPTIONAL = frozenset({"memory.kmem.limit_in_bytes", "memory.kmem.tcp.limit_in_bytes"})


def _device(entry):
    return f"{entry['major']}:{entry['minor']}"


def v1_writes(resources, available_files=None, devices_list=None):
    """[(controller, file, value)] in the order they must be written.
    AVAILABLE_FILES (the blkio directory's), when given, decides between
    CFQ's blkio.weight files and BFQ's blkio.bfq.weight like runc; with
    DEVICES_LIST (the cgroup's devices.list), device rules are written as
    the fewest changes from it."""
    if resources.get("unified"):
        raise ConfigError("config.json: linux.resources.unified: invalid configuration: "
                          "cannot use unified on cgroup v1")
    writes = []
    bfq = available_files is not None and "blkio.weight" not in available_files and \
        "blkio.bfq.weight" in available_files
    weight_file = "blkio.bfq.weight" if bfq else "blkio.weight"

    def add(controller, name, value):
        writes.append((controller, name, str(value)))

    for section, key, controller, name, zero_is_unset in V1_FIELDS:
        value = (resources.get(section) or {}).get(key)
        if value is None or (zero_is_unset and not value):
            continue
        if key == "swappiness" and not 0 <= value <= 100:
            raise ConfigError(f"config.json: linux.resources.memory.swappiness: {value} "
                              "is not within 0-100")
        if key in ("disableOOMKiller", "useHierarchy"):
            value = int(value)
        add(controller, name, value)

    pids = resources.get("pids") or {}
    if pids.get("limit") is not None:
        add("pids", "pids.max", _pids_max(pids["limit"]))

    block_io = resources.get("blockIO") or {}
    if block_io.get("weight"):
        add("blkio", weight_file, block_io["weight"])
    if block_io.get("leafWeight"):
        add("blkio", "blkio.leaf_weight", block_io["leafWeight"])
    for entry in block_io.get("weightDevice") or ():
        if entry.get("weight"):
            add("blkio", f"{weight_file}_device", f"{_device(entry)} {entry['weight']}")
        if entry.get("leafWeight"):
            add("blkio", "blkio.leaf_weight_device", f"{_device(entry)} {entry['leafWeight']}")
    for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                      ("throttleWriteBpsDevice", "write_bps_device"),
                      ("throttleReadIOPSDevice", "read_iops_device"),
                      ("throttleWriteIOPSDevice", "write_iops_device")):
        for entry in block_io.get(key) or ():
            add("blkio", f"blkio.throttle.{name}", f"{_device(entry)} {entry['rate']}")

    for entry in resources.get("hugepageLimits") or ():
        add("hugetlb", f"hugetlb.{entry['pageSize']}.limit_in_bytes", entry["limit"])

    network = resources.get("network") or {}
    if network.get("classID") is not None:
        add("net_cls", "net_cls.classid", network["classID"])
    for entry in network.get("priorities") or ():
        add("net_prio", "net_prio.ifpriomap", f"{entry['name']} {entry['priority']}")

    for device, limits in (resources.get("rdma") or {}).items():
        add("rdma", "rdma.max", _rdma_line(device, limits))

    if resources.get("devices") is not None:
        rules = device_rules(resources["devices"])
        if devices_list is not None:
            rules = device_transition(devices_list, rules)
        for rule in rules:
            add("devices", *rule)
    return writes


def device_rules(devices):
    """v1 devices.allow/deny writes: deny everything, the config's rules in
    order, then the devices every container needs."""
    rules = [("devices.deny", "a")]
    for entry in devices:
        line = (f"{entry.get('type') or 'a'} {_number(entry.get('major'))}:"
                f"{_number(entry.get('minor'))} {entry.get('access') or 'rwm'}")
        if entry.get("type", "a") == "a" and entry.get("major") is None and entry.get("minor") is None:
            line = "a"
        rules.append(("devices.allow" if entry["allow"] else "devices.deny", line))
    for dev_type, major, minor, access in DEFAULT_ALLOWED_DEVICES:
        rules.append(("devices.allow", f"{dev_type} {major}:{minor} {access}"))
    return rules


class DeviceState:
    """What a v1 devices cgroup allows, as the kernel keeps it: a default
    (allow or deny everything) and exceptions {(type, major, minor): access}."""

    def __init__(self, allow_by_default, exceptions):
        self.allow_by_default = allow_by_default
        self.exceptions = exceptions

    @classmethod
    def from_list(cls, text):
        """devices.list: "a *:* rwm" alone is allow-by-default (whose deny
        exceptions the kernel does not show); anything else lists the allowed."""
        lines = text.split()
        if lines == ["a", "*:*", "rwm"]:
            return cls(True, None)
        exceptions = {}
        for line in text.splitlines():
            dev_type, numbers, access = line.split()
            exceptions[(dev_type, numbers)] = set(access)
        return cls(False, exceptions)

    @classmethod
    def after(cls, rules):
        """The state that RULES (devices.allow/deny writes) lead to, from a reset."""
        state = cls(True, {})
        for name, line in rules:
            allow = name == "devices.allow"
            if line == "a":
                state = cls(allow, {})
                continue
            dev_type, numbers, access = line.split()
            key = (dev_type, numbers)
            held = state.exceptions.setdefault(key, set())
            if allow != state.allow_by_default:
                held.update(access)  # an exception to the default
            else:
                held.difference_update(access)
                if not held:
                    del state.exceptions[key]
        return state


def device_transition(devices_list, rules):
    """The fewest writes from the cgroup's DEVICES_LIST to what RULES make, as
    runc does it: with the same deny-by-default, only the exceptions that
    change (removals first), so no moment denies what stays allowed, and a
    sub-cgroup keeps its own rules. Otherwise, RULES from their reset."""
    current, target = DeviceState.from_list(devices_list), DeviceState.after(rules)
    if current.allow_by_default or target.allow_by_default:
        return rules
    removals, additions = [], []
    for key in sorted(set(current.exceptions) | set(target.exceptions)):
        held, wanted = current.exceptions.get(key, set()), target.exceptions.get(key, set())
        line = f"{key[0]} {key[1]} "
        if held - wanted:
            removals.append(("devices.deny", line + "".join(sorted(held - wanted))))
        if wanted - held:
            additions.append(("devices.allow", line + "".join(sorted(wanted - held))))
    return removals + additions


def _number(value):
    return "*" if value is None or value < 0 else value


def _rdma_line(device, limits):
    parts = [device]
    if limits.get("hcaHandles") is not None:
        parts.append(f"hca_handle={limits['hcaHandles']}")
    if limits.get("hcaObjects") is not None:
        parts.append(f"hca_object={limits['hcaObjects']}")
    return " ".join(parts)


def cpu_weight_from_shares(shares):
    """cgroup v1 cpu.shares (2-262144) to v2 cpu.weight (1-10000), as runc converts."""
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight_from_blkio(weight):
    """blkio weight (10-1000) to io.weight (1-10000), as runc converts."""
    return 1 + (weight - 10) * 9999 // 990


def v2_writes(resources, available_files=None):
    """[(file, value)] for the unified hierarchy. AVAILABLE_FILES, when given,
    decides between io.bfq.weight and io.weight like runc."""
    writes = []

    def unsupported(field):
        raise ConfigError(f"config.json: linux.resources.{field}: not supported on cgroup v2")

    memory = resources.get("memory") or {}
    # As runc: 0 for a memory value means "not set" (Docker sends zeros).
    limit, swap = memory.get("limit") or None, memory.get("swap") or None
    if limit is not None:
        writes.append(("memory.max", "max" if limit == -1 else str(limit)))
    if swap is not None:
        if swap == -1:
            writes.append(("memory.swap.max", "max"))
        elif limit is None or limit <= 0:
            raise ConfigError("config.json: linux.resources.memory.swap: "
                              "a swap limit needs a memory limit on cgroup v2")
        elif swap < limit:
            raise ConfigError("config.json: linux.resources.memory.swap: must be at least the "
                              "memory limit (it counts memory plus swap)")
        else:
            writes.append(("memory.swap.max", str(swap - limit)))
    if memory.get("reservation"):
        writes.append(("memory.low", str(memory["reservation"])))
    if memory.get("swappiness") is not None:
        unsupported("memory.swappiness")
    if memory.get("disableOOMKiller"):
        unsupported("memory.disableOOMKiller")

    cpu = resources.get("cpu") or {}
    if cpu.get("shares"):
        writes.append(("cpu.weight", str(cpu_weight_from_shares(cpu["shares"]))))
    if cpu.get("quota") or cpu.get("period"):
        quota = cpu.get("quota")
        quota_text = "max" if not quota or quota < 0 else str(quota)
        writes.append(("cpu.max", f"{quota_text} {cpu.get('period') or 100000}"))
    if cpu.get("burst") is not None:
        writes.append(("cpu.max.burst", str(cpu["burst"])))
    if cpu.get("idle") is not None:
        writes.append(("cpu.idle", str(cpu["idle"])))
    if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
        unsupported("cpu.realtimeRuntime")
    if cpu.get("cpus"):
        writes.append(("cpuset.cpus", cpu["cpus"]))
    if cpu.get("mems"):
        writes.append(("cpuset.mems", cpu["mems"]))

    pids = resources.get("pids") or {}
    if pids.get("limit") is not None:
        writes.append(("pids.max", str(_pids_max(pids["limit"]))))

    block_io = resources.get("blockIO") or {}
    bfq = available_files is None or "io.bfq.weight" in available_files
    if block_io.get("weight"):
        if bfq:
            writes.append(("io.bfq.weight", str(block_io["weight"])))
        else:
            writes.append(("io.weight", str(io_weight_from_blkio(block_io["weight"]))))
    for entry in block_io.get("weightDevice") or ():
        if entry.get("weight"):
            if bfq:
                writes.append(("io.bfq.weight", f"{_device(entry)} {entry['weight']}"))
            else:
                writes.append(("io.weight", f"{_device(entry)} {io_weight_from_blkio(entry['weight'])}"))
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for entry in block_io.get(key) or ():
            writes.append(("io.max", f"{_device(entry)} {name}={entry['rate']}"))

    for entry in resources.get("hugepageLimits") or ():
        writes.append((f"hugetlb.{entry['pageSize']}.max", str(entry["limit"])))
    for device, limits in (resources.get("rdma") or {}).items():
        writes.append(("rdma.max", _rdma_line(device, limits)))
    network = resources.get("network") or {}
    if network.get("classID") is not None or network.get("priorities"):
        unsupported("network")
    for key, value in (resources.get("unified") or {}).items():
        if "/" in key or key.startswith("."):
            raise ConfigError(f"config.json: linux.resources.unified: bad key {key!r}")
        writes.append((key, value))
    return writes


def v2_controllers(writes):
    """The controllers a list of v2 writes needs enabled: the part before the dot."""
    return sorted({name.split(".", 1)[0] for name, _ in writes} - {"cgroup"})


def _pids_max(limit):
    """-1 (any negative) is no limit. 0 is a limit, as the spec says it
    SHOULD be: written as 1, as runc 1.4 writes it (systemd takes no
    TasksMax=0), which for a container is the same (init is in the cgroup
    already; only forks count). runc 1.1.5 left 0 unset."""
    if limit < 0:
        return "max"
    return max(limit, 1)
