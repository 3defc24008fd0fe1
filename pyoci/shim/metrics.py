"""runc's stats (pyoci.linux.cgroups.stats) as containerd's cgroup Metrics
messages, v1 or v2 by the container's hierarchy: CRI and `ctr task
metrics` tell them apart by the Any's type_url."""
from pyoci.shim import messages as m


def metrics_any(stats, unified):
    """An Any of io.containerd.cgroups.v1.Metrics, or .v2 where UNIFIED."""
    from pyoci import wire
    message_type, message = (m.V2_METRICS, _v2(stats)) if unified else (m.V1_METRICS, _v1(stats))
    return m.ANY.new(type_url=message_type.name, value=wire.encode(message_type, message))


# memory.stat's names of the counters containerd/cgroups names otherwise
_V1_STAT_NAMES = {f"{total}{name}": f"{total}{stat}" for total in ("", "total_")
                  for name, stat in (("pg_pg_in", "pgpgin"), ("pg_pg_out", "pgpgout"),
                                     ("pg_fault", "pgfault"), ("pg_maj_fault", "pgmajfault"))}


def _v1(stats):
    cpu, memory, pids = stats.get("cpu", {}), stats.get("memory", {}), stats.get("pids", {})
    usage, throttling = cpu.get("usage", {}), cpu.get("throttling", {})
    raw = memory.get("raw", {})

    def entry(name):
        values = memory.get(name, {})
        return m.V1_MEMORY_ENTRY.new(limit=values.get("limit", 0), usage=values.get("usage", 0),
                                     max=values.get("max", 0), failcnt=values.get("failcnt", 0))
    blkio = stats.get("blkio", {})
    return m.V1_METRICS.new(
        hugetlb=[m.V1_HUGETLB.new(pagesize=size, usage=values.get("usage", 0),
                                  max=values.get("max", 0), failcnt=values.get("failcnt", 0))
                 for size, values in stats.get("hugetlb", {}).items()],
        pids=m.V1_PIDS.new(current=pids.get("current", 0), limit=pids.get("limit", 0)),
        cpu=m.V1_CPU.new(
            usage=m.V1_CPU_USAGE.new(total=usage.get("total", 0), kernel=usage.get("kernel", 0),
                                     user=usage.get("user", 0), per_cpu=usage.get("percpu", [])),
            throttling=m.V1_THROTTLE.new(periods=throttling.get("periods", 0),
                                         throttled_periods=throttling.get("throttledPeriods", 0),
                                         throttled_time=throttling.get("throttledTime", 0))),
        memory=m.V1_MEMORY.new(
            **{name: raw.get(_V1_STAT_NAMES.get(name, name), 0) for name in m.V1_MEMORY_COUNTERS},
            usage=entry("usage"), swap=entry("swap"), kernel=entry("kernel"),
            kernel_tcp=entry("kernelTCP")),
        blkio=m.V1_BLKIO.new(
            io_service_bytes_recursive=_blkio(blkio.get("ioServiceBytesRecursive", [])),
            io_serviced_recursive=_blkio(blkio.get("ioServicedRecursive", []))))


def _blkio(entries):
    return [m.V1_BLKIO_ENTRY.new(op=e.get("op", ""), major=e.get("major", 0),
                                 minor=e.get("minor", 0), value=e.get("value", 0))
            for e in entries]


def _v2(stats):
    cpu, memory, pids = stats.get("cpu", {}), stats.get("memory", {}), stats.get("pids", {})
    usage, throttling = cpu.get("usage", {}), cpu.get("throttling", {})
    raw = memory.get("raw", {})
    memory_usage = memory.get("usage", {})
    swap = memory.get("swap", {})
    io = {}
    for key, names in (("ioServiceBytesRecursive", ("rbytes", "wbytes")),
                       ("ioServicedRecursive", ("rios", "wios"))):
        for e in stats.get("blkio", {}).get(key, []):
            device = io.setdefault((e["major"], e["minor"]), m.V2_IO_ENTRY.new(
                major=e["major"], minor=e["minor"]))
            device[names[e.get("op") == "Write"]] = e.get("value", 0)
    return m.V2_METRICS.new(
        pids=m.V2_PIDS.new(current=pids.get("current", 0), limit=pids.get("limit", 0)),
        cpu=m.V2_CPU.new(usage_usec=usage.get("total", 0) // 1000,
                         user_usec=usage.get("user", 0) // 1000,
                         system_usec=usage.get("kernel", 0) // 1000,
                         nr_periods=throttling.get("periods", 0),
                         nr_throttled=throttling.get("throttledPeriods", 0),
                         throttled_usec=throttling.get("throttledTime", 0) // 1000),
        memory=m.V2_MEMORY.new(
            **{name: raw.get(name, 0) for name in m.V2_MEMORY_COUNTERS
               if name not in ("usage", "usage_limit", "swap_usage", "swap_limit")},
            usage=memory_usage.get("usage", 0), usage_limit=memory_usage.get("limit", 0),
            swap_usage=max(swap.get("usage", 0) - memory_usage.get("usage", 0), 0),
            swap_limit=swap.get("limit", 0)),
        io=m.V2_IO.new(usage=list(io.values())),
        hugetlb=[m.V2_HUGETLB.new(pagesize=size, current=values.get("usage", 0),
                                  max=values.get("max", 0))
                 for size, values in stats.get("hugetlb", {}).items()])
