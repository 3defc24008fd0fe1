"""runc's `events` stats shape, read from cgroup files (v1 and v2).

The shape is runc's types.Stats as Go encodes it: every section present,
and within them the fields runc tags `omitempty` left out when zero.
"""
import os

HUGEPAGES = "/sys/kernel/mm/hugepages"
UNLIMITED = 2**64 - 1  # a "max" limit, as runc reports it


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _int(path, unlimited=UNLIMITED):
    """A number file; 'max' is UNLIMITED, a missing file 0."""
    text = _read(path)
    if text is None or text == "max":
        return 0 if text is None else unlimited
    return int(text)


def _flat_keyed(path):
    """A 'key value' per line file as a dict of ints."""
    result = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            result[key] = int(value)
    return result


def _omit_empty(values, *keys):
    """Go's omitempty: KEYS whose value is zero or empty are left out."""
    return {key: value for key, value in values.items() if key not in keys or value}


def _cpu(total=0, percpu=(), percpu_kernel=(), percpu_user=(), kernel=0, user=0,
         periods=0, throttled_periods=0, throttled_time=0):
    usage = _omit_empty({"total": total, "percpu": list(percpu),
                         "percpu_kernel": list(percpu_kernel), "percpu_user": list(percpu_user),
                         "kernel": kernel, "user": user},
                        "total", "percpu", "percpu_kernel", "percpu_user")
    throttling = _omit_empty({"periods": periods, "throttledPeriods": throttled_periods,
                              "throttledTime": throttled_time},
                             "periods", "throttledPeriods", "throttledTime")
    return {"usage": usage, "throttling": throttling}


def _memory_entry(limit=0, usage=0, max_usage=0, failcnt=0):
    return _omit_empty({"limit": limit, "usage": usage, "max": max_usage, "failcnt": failcnt},
                       "usage", "max")


def _pids(current, limit):
    return _omit_empty({"current": current, "limit": limit}, "current", "limit")


def _hugetlb_entry(usage, max_usage, failcnt):
    return _omit_empty({"usage": usage, "max": max_usage, "failcnt": failcnt}, "usage", "max")


def _blkio_entry(major, minor, op, value):
    return _omit_empty({"major": major, "minor": minor, "op": op, "value": value},
                       "major", "minor", "op", "value")


def _page_sizes():
    """The kernel's huge page sizes as cgroup files name them: 2MB, 1GB."""
    sizes = []
    for name in sorted(os.listdir(HUGEPAGES)) if os.path.isdir(HUGEPAGES) else ():
        kib = int(name[len("hugepages-"):-len("kB")])
        for unit, scale in (("GB", 1 << 20), ("MB", 1 << 10), ("KB", 1)):
            if kib % scale == 0:
                sizes.append(f"{kib // scale}{unit}")
                break
    return sizes


def _cpu_list(text):
    """'0-2,4' as [0, 1, 2, 4]."""
    cpus = []
    for part in (text or "").split(","):
        if part.strip():
            low, _, high = part.partition("-")
            cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


CPUSET_FLAGS = ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
                "memory_spread_page", "memory_spread_slab", "memory_pressure",
                "sched_load_balance", "sched_relax_domain_level")


def _cpuset(cpus=(), mems=(), **flags):
    """runc's CPUSet: the lists left out when empty, the flags always there."""
    return _omit_empty({"cpus": list(cpus), "mems": list(mems),
                        **{flag: flags.get(flag, 0) for flag in CPUSET_FLAGS}}, "cpus", "mems")


def _memory(cache=0, usage=None, swap=None, kernel=None, kernel_tcp=None, raw=None):
    return _omit_empty({"cache": cache, "usage": usage or _memory_entry(),
                        "swap": swap or _memory_entry(), "kernel": kernel or _memory_entry(),
                        "kernelTCP": kernel_tcp or _memory_entry(), "raw": raw or {}},
                       "cache", "raw")


def _sections(cpu=None, cpuset=None, memory=None, pids=None, blkio=None, hugetlb=None):
    """Every section of runc's Stats; those without a controller empty."""
    return {"cpu": cpu or _cpu(), "cpuset": cpuset or _cpuset(), "memory": memory or _memory(),
            "pids": pids or {}, "blkio": blkio or {}, "hugetlb": hugetlb or {},
            "intel_rdt": {}, "network_interfaces": None}


def v1_stats(paths):
    cpuacct = paths.get("cpuacct") or paths.get("cpu")
    cpu = None
    if cpuacct:
        ticks = os.sysconf("SC_CLK_TCK")
        times = _flat_keyed(f"{cpuacct}/cpuacct.stat")
        # cpuacct.usage_all: "cpu user system" per line, after a header.
        per_cpu = [line.split() for line in
                   (_read(f"{cpuacct}/cpuacct.usage_all") or "").splitlines()[1:]]
        throttling = _flat_keyed(f"{paths['cpu']}/cpu.stat") if paths.get("cpu") else {}
        cpu = _cpu(total=_int(f"{cpuacct}/cpuacct.usage"),
                   percpu=[int(v) for v in (_read(f"{cpuacct}/cpuacct.usage_percpu") or "").split()],
                   percpu_user=[int(fields[1]) for fields in per_cpu],
                   percpu_kernel=[int(fields[2]) for fields in per_cpu],
                   kernel=times.get("system", 0) * 10**9 // ticks,
                   user=times.get("user", 0) * 10**9 // ticks,
                   periods=throttling.get("nr_periods", 0),
                   throttled_periods=throttling.get("nr_throttled", 0),
                   throttled_time=throttling.get("throttled_time", 0))
    cpuset = None
    if paths.get("cpuset"):
        directory = paths["cpuset"]
        cpuset = _cpuset(_cpu_list(_read(f"{directory}/cpuset.cpus")),
                         _cpu_list(_read(f"{directory}/cpuset.mems")),
                         **{flag: _int(f"{directory}/cpuset.{flag}") for flag in CPUSET_FLAGS})
    memory = None
    if paths.get("memory"):
        directory = paths["memory"]

        def usage(prefix):
            return _memory_entry(_int(f"{directory}/{prefix}.limit_in_bytes"),
                                 _int(f"{directory}/{prefix}.usage_in_bytes"),
                                 _int(f"{directory}/{prefix}.max_usage_in_bytes"),
                                 _int(f"{directory}/{prefix}.failcnt"))
        raw = _flat_keyed(f"{directory}/memory.stat")
        memory = _memory(raw.get("cache", 0), usage("memory"), usage("memory.memsw"),
                         usage("memory.kmem"), usage("memory.kmem.tcp"), raw)
    pids = None
    if paths.get("pids"):
        pids = _pids(_int(f"{paths['pids']}/pids.current"),
                     _int(f"{paths['pids']}/pids.max", unlimited=0))
    hugetlb = None
    if paths.get("hugetlb"):
        directory = paths["hugetlb"]
        hugetlb = {size: _hugetlb_entry(_int(f"{directory}/hugetlb.{size}.usage_in_bytes"),
                                        _int(f"{directory}/hugetlb.{size}.max_usage_in_bytes"),
                                        _int(f"{directory}/hugetlb.{size}.failcnt"))
                   for size in _page_sizes()}
    return _sections(cpu, cpuset, memory, pids, _v1_blkio(paths.get("blkio")), hugetlb)


# runc's order: the first pair of files that are both there gives the stats.
V1_BLKIO_FILES = (
    ("blkio.bfq.io_service_bytes_recursive", "blkio.bfq.io_serviced_recursive"),
    ("blkio.io_service_bytes_recursive", "blkio.io_serviced_recursive"),
    ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"),
    ("blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced"),
)
BLKIO_KEYS = ("ioServiceBytesRecursive", "ioServicedRecursive")


def _v1_blkio(directory):
    if not directory:
        return None
    for names in V1_BLKIO_FILES:
        texts = [_read(f"{directory}/{name}") for name in names]
        if None in texts:
            continue
        result = {}
        for key, text in zip(BLKIO_KEYS, texts):
            entries = []
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 3 and ":" in parts[0]:
                    major, minor = parts[0].split(":")
                    entries.append(_blkio_entry(int(major), int(minor), parts[1], int(parts[2])))
            if entries:
                result[key] = entries
        return result
    return None


def v2_stats(directory):
    cpu_stat = _flat_keyed(f"{directory}/cpu.stat")
    cpu = _cpu(total=cpu_stat.get("usage_usec", 0) * 1000,
               kernel=cpu_stat.get("system_usec", 0) * 1000,
               user=cpu_stat.get("user_usec", 0) * 1000,
               periods=cpu_stat.get("nr_periods", 0),
               throttled_periods=cpu_stat.get("nr_throttled", 0),
               throttled_time=cpu_stat.get("throttled_usec", 0) * 1000)
    raw = _flat_keyed(f"{directory}/memory.stat")
    limit, usage = _int(f"{directory}/memory.max"), _int(f"{directory}/memory.current")
    swap_limit = _int(f"{directory}/memory.swap.max")
    # As runc: swap as v1 counts it, memory plus swap.
    if swap_limit != UNLIMITED:
        swap_limit += limit
    memory = _memory(
        raw.get("file", 0),
        _memory_entry(limit, usage, _int(f"{directory}/memory.peak"),
                      _flat_keyed(f"{directory}/memory.events").get("max", 0)),
        _memory_entry(swap_limit, usage + _int(f"{directory}/memory.swap.current")),
        raw=raw)
    pids = _pids(_int(f"{directory}/pids.current"), _int(f"{directory}/pids.max", unlimited=0))
    hugetlb = {}
    for size in _page_sizes():
        prefix = f"{directory}/hugetlb.{size}"
        if os.path.exists(f"{prefix}.current"):  # reservations count where the kernel has them
            current = f"{prefix}.rsvd.current" if os.path.exists(f"{prefix}.rsvd.current") \
                else f"{prefix}.current"
            hugetlb[size] = _hugetlb_entry(_int(current), 0,
                                           _flat_keyed(f"{prefix}.events").get("max", 0))
    return _sections(cpu, None, memory, pids, _v2_io(directory), hugetlb)


def _v2_io(directory):
    """io.stat ('MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=..') as runc's blkio entries."""
    service_bytes, serviced = [], []
    for line in (_read(f"{directory}/io.stat") or "").splitlines():
        device, *pairs = line.split()
        major, minor = map(int, device.split(":"))
        values = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        for key, op, entries in (("rbytes", "Read", service_bytes), ("wbytes", "Write", service_bytes),
                                 ("rios", "Read", serviced), ("wios", "Write", serviced)):
            if key in values:
                entries.append(_blkio_entry(major, minor, op, int(values[key])))
    return _omit_empty(dict(zip(BLKIO_KEYS, (service_bytes, serviced))), *BLKIO_KEYS)


def oom_kills(paths):
    """How many times the OOM killer acted in the container's cgroup."""
    memory = paths.get("memory")
    if memory:
        return _flat_keyed(f"{memory}/memory.oom_control").get("oom_kill", 0)
    unified = paths.get("")
    if unified:
        return _flat_keyed(f"{unified}/memory.events").get("oom_kill", 0)
    return 0
