"""The systemd cgroup driver (--systemd-cgroup): systemd makes the cgroup.

As runc's: linux.cgroupsPath is "slice:prefix:name" (absent: ":runc:<id>"),
and the container's cgroup is the transient scope `prefix-name.scope` in
the slice ("" means system.slice, "-" the root slice; a name ending in
.slice is a slice unit of its own). The scope is started over D-Bus with
the container's first process in it, Delegate=yes, accounting on for every
controller, and the limits systemd has properties for set as properties, so
that systemd keeps them across reloads. The cgroupfs manager of the same
directory then does the rest: every limit written to the files (those
systemd has no property for included), device rules, and on v1 the
hierarchies systemd does not manage (cpuset, freezer, ...).
"""
import os

from pyoci import log
from pyoci.errors import ConfigError, ExecError
from pyoci.linux import dbus
from pyoci.linux.cgroups import UNIFIED_KEY
from pyoci.linux.cgroups.resources import device_rules, v1_writes, v2_writes

RUNNING_MARKER = "/run/systemd/system"  # how sd_booted() and runc tell
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNLIMITED = 2**64 - 1  # systemd's "infinity"

# cgroup file (v1 or v2) -> the unit property systemd sets it from.
FILE_PROPERTIES = {
    "memory.limit_in_bytes": "MemoryLimit",
    "memory.max": "MemoryMax",
    "memory.low": "MemoryLow",
    "memory.high": "MemoryHigh",
    "memory.min": "MemoryMin",
    "memory.swap.max": "MemorySwapMax",
    "cpu.shares": "CPUShares",
    "cpu.weight": "CPUWeight",
    "blkio.weight": "BlockIOWeight",
    "pids.max": "TasksMax",
    "cpuset.cpus": "AllowedCPUs",
    "cpuset.mems": "AllowedMemoryNodes",
}


def check_running():
    if not os.path.isdir(RUNNING_MARKER):
        raise ConfigError("--systemd-cgroup: systemd is not running on this host "
                          "(no /run/systemd/system); drop the flag to use cgroupfs")


def parse_cgroups_path(cgroups_path, container_id):
    """(slice, unit) from "slice:prefix:name"; absent means ":runc:<id>"."""
    text = cgroups_path or f":runc:{container_id}"
    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigError('config.json: linux.cgroupsPath: expected "slice:prefix:name" for '
                          f'systemd cgroups, got {text!r}')
    slice_name, prefix, name = parts
    slice_name = slice_name or "system.slice"
    if slice_name == "-":
        slice_name = "-.slice"
    expand_slice(slice_name)
    if not name or "/" in name or "/" in prefix:
        raise ConfigError(f"config.json: linux.cgroupsPath: bad unit name in {text!r}")
    if name.endswith(".slice"):
        expand_slice(name)
        return slice_name, name
    return slice_name, f"{prefix}-{name}.scope" if prefix else f"{name}.scope"


def expand_slice(slice_name):
    """A slice's cgroup path: 'a-b.slice' -> '/a.slice/a-b.slice', '-.slice' -> '/'."""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise ConfigError(f"config.json: linux.cgroupsPath: invalid slice name {slice_name!r}")
    if slice_name == "-.slice":
        return "/"
    stem = slice_name[:-len(".slice")]
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise ConfigError(f"config.json: linux.cgroupsPath: invalid slice name {slice_name!r}")
    path, prefix = "", ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def unit_cgroup(slice_name, unit):
    """Where systemd puts UNIT: a slice by its own name, a scope in SLICE."""
    if unit.endswith(".slice"):
        return expand_slice(unit)
    return os.path.join(expand_slice(slice_name), unit)


class Manager:
    """A systemd unit in front of the cgroupfs manager FS of its directory."""

    def __init__(self, unit, slice_name, fs, container_id, extra_properties=(), started=False):
        self.unit = unit
        self.slice = slice_name
        self.fs = fs
        self.paths = fs.paths
        self.container_id = container_id
        self.started = started
        self.unified = list(fs.paths) == [UNIFIED_KEY]
        self.extra_properties = list(extra_properties)

    def seen_paths(self):
        return self.paths

    def create(self):
        """Nothing yet: a scope cannot exist without a process (see add)."""
        check_running()
        return []

    def apply(self, resources):
        """The unit's properties, then the files. A property an annotation
        set at the start is left as the annotation said, as with runc."""
        annotated = {name for name, _ in self.extra_properties}
        properties = [prop for prop in resource_properties(resources, self.unified)
                      if prop[0] not in annotated]
        if properties:
            self._call("SetUnitProperties", "sba(sv)", self.unit, True, properties)
        self.fs.apply(resources)

    def add(self, pid):
        if not self.started:
            self._start(pid)
            self.fs.create()
        self.fs.add(pid)

    def _start(self, pid):
        properties = [
            ("Description", ("s", f"pyoci container {self.container_id}")),
            ("DefaultDependencies", ("b", False)),
            ("MemoryAccounting", ("b", True)),
            ("CPUAccounting", ("b", True)),
            ("TasksAccounting", ("b", True)),
            ("IOAccounting" if self.unified else "BlockIOAccounting", ("b", True)),
        ]
        if self.unit.endswith(".slice"):
            properties.append(("Wants", ("as", [self.slice])))
        else:
            properties += [("Slice", ("s", self.slice)), ("Delegate", ("b", True)),
                           ("PIDs", ("au", [pid]))]
        properties += self.extra_properties  # annotations override, as with runc
        with _connect() as bus:
            (job,) = _call(bus, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                           self.unit, "replace", properties, [])
            self.started = True
            _wait_for_job(bus, job, f"start {self.unit}")

    def destroy(self, owned=None):
        """Stop the unit (systemd removes its cgroups), then remove what is
        left: the v1 hierarchies systemd does not manage. OWNED does not
        apply: everything below a unit create started is the container's."""
        if not self.started:
            return
        with _connect() as bus:
            try:
                (job,) = _call(bus, "StopUnit", "ss", self.unit, "replace")
                _wait_for_job(bus, job, f"stop {self.unit}")
            except ExecError as exc:
                if getattr(exc.__cause__, "name", None) != NO_SUCH_UNIT:
                    raise
        self.fs.destroy()

    def pids(self):
        """The unit's processes; none before create started it (a unit of
        the same name that was there already is another container's)."""
        return self.fs.pids() if self.started else []

    def freeze(self, frozen):
        self.fs.freeze(frozen)

    def frozen(self):
        return self.fs.frozen()

    def stats(self):
        return self.fs.stats()

    def _call(self, member, signature, *args):
        with _connect() as bus:
            return _call(bus, member, signature, *args)


def _connect():
    check_running()
    try:
        return dbus.Connection()
    except dbus.DBusError as exc:
        raise ExecError(f"systemd: {exc}") from None


def _call(bus, member, signature, *args):
    try:
        return bus.call(MANAGER_PATH, MANAGER, member, signature, *args)
    except dbus.DBusError as exc:
        raise ExecError(f"systemd: {member} {args[0]}: {exc}") from exc


def _wait_for_job(bus, job, what):
    """JobRemoved (id, job, unit, result) for JOB: 'done' or a failure."""
    try:
        result = bus.wait_for_signal("JobRemoved", lambda body: body[1] == job)[3]
    except dbus.DBusError as exc:
        raise ExecError(f"systemd: {what}: {exc}") from None
    if result != "done":
        raise ExecError(f"systemd: {what}: job {result}")


def resource_properties(resources, unified):
    """The unit properties for linux.resources, from the same cgroup file
    writes the cgroupfs manager makes (so both agree on every value)."""
    if unified:
        writes = dict(v2_writes(resources))
    else:
        writes = {name: value for _, name, value in v1_writes(resources)}
    properties = []
    for name, value in writes.items():
        prop = FILE_PROPERTIES.get(name)
        if prop in ("AllowedCPUs", "AllowedMemoryNodes"):
            properties.append((prop, ("ay", _cpu_mask(value))))
        elif prop is not None:
            properties.append((prop, ("t", _count(value))))
    quota, period = _cpu_quota(writes)
    if period:
        properties.append(("CPUQuotaPeriodUSec", ("t", period)))
    if quota is not None:
        per_second = UNLIMITED
        if quota != UNLIMITED:
            # systemd keeps whole percents of a CPU: round up to 10 ms per second.
            per_second = -(-quota * 1_000_000 // (period or 100_000))
            per_second = -(-per_second // 10_000) * 10_000
        properties.append(("CPUQuotaPerSecUSec", ("t", per_second)))
    if resources.get("devices") is not None:
        properties += device_properties(resources["devices"])
    return properties


def _count(text):
    return UNLIMITED if text in ("max", "-1") else int(text)


def _cpu_quota(writes):
    """(quota or None, period or None) in microseconds, from v2's cpu.max or
    v1's cfs files."""
    if "cpu.max" in writes:
        quota, period = writes["cpu.max"].split()
        return _count(quota), int(period)
    quota = writes.get("cpu.cfs_quota_us")
    period = writes.get("cpu.cfs_period_us")
    return (None if quota is None else _count(quota)), (None if period is None else int(period))


def _cpu_mask(text):
    """A cpuset list ('0-2,4') as systemd's bitmask bytes."""
    mask = bytearray()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        for cpu in range(int(low), int(high or low) + 1):
            while len(mask) <= cpu // 8:
                mask.append(0)
            mask[cpu // 8] |= 1 << (cpu % 8)
    return list(mask)


def device_properties(devices):
    """DevicePolicy and DeviceAllow for the device rules, where systemd can
    say them: an allow list is 'strict' plus its entries; allow-all is
    'auto'. A deny list after allow-all cannot be said, so systemd gets an
    empty strict list and the cgroupfs rules written after it decide."""
    allow_all, allowed = False, []
    for file, line in device_rules(devices):
        allow = file == "devices.allow"
        if line == "a":
            allow_all, allowed = allow, []
            continue
        dev_type, numbers, access = line.split()
        major, minor = numbers.split(":")
        types = ("c", "b") if dev_type == "a" else (dev_type,)
        if allow_all:
            if not allow:
                log.warning("systemd cannot express a device deny list: DevicePolicy=strict "
                            "with no entries, the cgroup's own rules apply")
                allow_all, allowed = False, []
            continue
        if allow:
            allowed += [[t, major, minor, access] for t in types]
            continue
        for entry in allowed:
            if entry[0] in types and major in ("*", entry[1]) and minor in ("*", entry[2]):
                entry[3] = "".join(c for c in entry[3] if c not in access)
        allowed = [entry for entry in allowed if entry[3]]
    if allow_all:
        return [("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]
    entries = []
    for dev_type, major, minor, access in allowed:
        node = _device_node(dev_type, major, minor)
        if node is not None:
            entries.append((node, access))
    return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", entries))]


def _device_node(dev_type, major, minor):
    """systemd's name for a device or a group of them: /dev/char/1:3,
    char-pts (a major by its /proc/devices name), char-* (every one)."""
    kind = "char" if dev_type == "c" else "block"
    if major == "*":
        return f"{kind}-*"
    if minor != "*":
        return f"/dev/{kind}/{major}:{minor}"
    name = _major_name(kind, int(major))
    if name is None:
        log.debug(f"no {kind} device major {major} in /proc/devices: left to the cgroup's rules")
    return None if name is None else f"{kind}-{name}"


def _major_name(kind, major):
    section = "Character devices:" if kind == "char" else "Block devices:"
    current = None
    with open("/proc/devices") as f:
        for line in f:
            line = line.strip()
            if line.endswith(":"):
                current = line
            elif current == section and line.split()[0] == str(major):
                return line.split()[1]
    return None


def unit_property_annotations(annotations):
    """org.systemd.property.NAME annotations (GVariant text) as properties:
    booleans, 'strings', integers typed as uint64/uint32/int64/int32 (or
    @t/@u/@x/@i), and arrays of strings."""
    properties = []
    for key, text in annotations.items():
        if key.startswith("org.systemd.property."):
            name = key[len("org.systemd.property."):]
            properties.append((name, _gvariant(key, text.strip())))
    return properties


_GVARIANT_INTEGERS = {"uint64": "t", "@t": "t", "uint32": "u", "@u": "u",
                      "int64": "x", "@x": "x", "int32": "i", "@i": "i"}


def _gvariant(key, text):
    import ast
    if text in ("true", "false"):
        return "b", text == "true"
    word, _, rest = text.partition(" ")
    try:
        if word in _GVARIANT_INTEGERS:
            return _GVARIANT_INTEGERS[word], int(rest.strip())
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, int) and not isinstance(value, bool):
        return "i", value
    if isinstance(value, str):
        return "s", value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "as", value
    raise ConfigError(f"config.json: annotations.{key}: unsupported GVariant value {text!r}")
