"""runc's `events` stats shape, read from cgroup files (v1 and v2)."""
import os


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _int(path):
    text = _read(path)
    if text is None or text == "max":
        return 0 if text is None else 2**64 - 1
    return int(text)


def _flat_keyed(path):
    """A 'key value' per line file as a dict of ints."""
    result = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            result[key] = int(value)
    return result


def v1_stats(paths):
    cpuacct = paths.get("cpuacct") or paths.get("cpu")
    cpu_dir = paths.get("cpu")
    memory = paths.get("memory")
    pids = paths.get("pids")
    data = {}
    if cpuacct:
        percpu = [int(v) for v in (_read(f"{cpuacct}/cpuacct.usage_percpu") or "").split()]
        ticks = os.sysconf("SC_CLK_TCK")
        times = _flat_keyed(f"{cpuacct}/cpuacct.stat")
        data["cpu"] = {"usage": {"total": _int(f"{cpuacct}/cpuacct.usage"), "percpu": percpu,
                                 "kernel": times.get("system", 0) * 10**9 // ticks,
                                 "user": times.get("user", 0) * 10**9 // ticks}}
    if cpu_dir:
        throttling = _flat_keyed(f"{cpu_dir}/cpu.stat")
        data.setdefault("cpu", {"usage": {}})["throttling"] = {
            "periods": throttling.get("nr_periods", 0),
            "throttled_periods": throttling.get("nr_throttled", 0),
            "throttled_time": throttling.get("throttled_time", 0)}
    if memory:
        def usage(prefix):
            return {"limit": _int(f"{memory}/{prefix}.limit_in_bytes"),
                    "usage": _int(f"{memory}/{prefix}.usage_in_bytes"),
                    "max": _int(f"{memory}/{prefix}.max_usage_in_bytes"),
                    "failcnt": _int(f"{memory}/{prefix}.failcnt")}
        raw = _flat_keyed(f"{memory}/memory.stat")
        data["memory"] = {"cache": raw.get("cache", 0), "usage": usage("memory"),
                          "swap": usage("memory.memsw"), "kernel": usage("memory.kmem"),
                          "kernelTCP": usage("memory.kmem.tcp"), "raw": raw}
    if pids:
        data["pids"] = {"current": _int(f"{pids}/pids.current"),
                        "limit": _int(f"{pids}/pids.max")}
    blkio = paths.get("blkio")
    if blkio:
        data["blkio"] = {
            "ioServiceBytesRecursive": _blkio_entries(f"{blkio}/blkio.throttle.io_service_bytes_recursive"),
            "ioServicedRecursive": _blkio_entries(f"{blkio}/blkio.throttle.io_serviced_recursive")}
    hugetlb = paths.get("hugetlb")
    if hugetlb:
        data["hugetlb"] = {
            name.split(".")[1]: {"usage": _int(f"{hugetlb}/{name}"),
                                 "max": _int(f"{hugetlb}/{name.replace('usage', 'max_usage')}"),
                                 "failcnt": _int(f"{hugetlb}/{name.replace('usage_in_bytes', 'failcnt')}")}
            for name in sorted(os.listdir(hugetlb))
            if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes")
            and not name.startswith("hugetlb.rsvd")}
    return data


def _blkio_entries(path):
    entries = []
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":")
            entries.append({"major": int(major), "minor": int(minor), "op": parts[1],
                            "value": int(parts[2])})
    return entries


def v2_stats(directory):
    data = {}
    cpu = _flat_keyed(f"{directory}/cpu.stat")
    data["cpu"] = {"usage": {"total": cpu.get("usage_usec", 0) * 1000,
                             "kernel": cpu.get("system_usec", 0) * 1000,
                             "user": cpu.get("user_usec", 0) * 1000},
                   "throttling": {"periods": cpu.get("nr_periods", 0),
                                  "throttled_periods": cpu.get("nr_throttled", 0),
                                  "throttled_time": cpu.get("throttled_usec", 0) * 1000}}
    raw = _flat_keyed(f"{directory}/memory.stat")
    data["memory"] = {"cache": raw.get("file", 0),
                      "usage": {"limit": _int(f"{directory}/memory.max"),
                                "usage": _int(f"{directory}/memory.current"),
                                "max": _int(f"{directory}/memory.peak"),
                                "failcnt": _flat_keyed(f"{directory}/memory.events").get("max", 0)},
                      "swap": {"limit": _int(f"{directory}/memory.swap.max"),
                               "usage": _int(f"{directory}/memory.swap.current")},
                      "raw": raw}
    data["pids"] = {"current": _int(f"{directory}/pids.current"),
                    "limit": _int(f"{directory}/pids.max")}
    return data


def oom_kills(paths):
    """How many times the OOM killer acted in the container's cgroup."""
    memory = paths.get("memory")
    if memory:
        return _flat_keyed(f"{memory}/memory.oom_control").get("oom_kill", 0)
    unified = paths.get("")
    if unified:
        return _flat_keyed(f"{unified}/memory.events").get("oom_kill", 0)
    return 0
