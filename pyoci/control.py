"""Commands on a container's cgroups: pause, resume, ps, update, events."""
import os
import sys

from pyoci import jsontext, state
from pyoci.errors import ConfigError, ContainerError
from pyoci.linux import cgroups
from pyoci.linux.procfs import read_all
from pyoci.state import Container


def _manager(container, limits=False):
    paths = container.record.get("cgroup_paths")
    if not paths:
        raise ContainerError(f"container {container.id} has no cgroups")
    return cgroups.from_record(container.record, limits)


def pause(root, container_id):
    container = Container(root, container_id).lock_existing()
    status = container.status()
    if status == state.PAUSED:
        raise ContainerError("container already paused")
    if status != state.RUNNING:
        raise ContainerError("container not running")
    _manager(container).freeze(True)


def resume(root, container_id):
    container = Container(root, container_id).lock_existing()
    if container.status() != state.PAUSED:
        raise ContainerError("container not paused")
    _manager(container).freeze(False)


def pids(root, container_id):
    """The container's processes: none once it has stopped (ps then prints
    only its header, as runc)."""
    container = Container(root, container_id).load()
    if container.status() == state.STOPPED:
        return []
    return sorted(_manager(container).pids())


def ps_table(container_pids, ps_args):
    """The host's ps's header and the container's lines, as runc prints them:
    `ps -ef`'s table made from /proc where it can be, else ps run."""
    ps_args = ps_args or ["-ef"]
    if ps_args == ["-ef"]:
        from pyoci.linux import pstable
        table = pstable.full_format(container_pids)
        if table is not None:
            return table
    status, out, errors = _run(["ps", *ps_args])
    if status != 0:
        raise ContainerError(f"ps: {errors.strip()}")
    lines = out.splitlines()
    header = lines[0].split()
    if "PID" not in header:
        raise ContainerError("ps: no PID column in its output")
    column = header.index("PID")
    wanted = {str(pid) for pid in container_pids}
    return "\n".join([lines[0], *(line for line in lines[1:]
                                  if line.split()[column:column + 1] and
                                  line.split()[column] in wanted)]) + "\n"


def _run(argv):
    """(exit status, stdout, stderr) of ARGV, spawned without subprocess,
    whose import would cost `ps` more than ps(1) itself."""
    out_read, out_write = os.pipe()
    errors_read, errors_write = os.pipe()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, out_write, 1), (os.POSIX_SPAWN_DUP2, errors_write, 2)])
    finally:
        os.close(out_write)
        os.close(errors_write)
    try:
        out, errors = (read_all(fd).decode(errors="replace") for fd in (out_read, errors_read))
    finally:
        os.close(out_read)
        os.close(errors_read)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out, errors


# runc's update flags: flag -> (section, key, parse)
SIZE_SUFFIXES = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text):
    """runc's units.RAMInBytes: '100m', '1g', '4096', '-1'."""
    text = text.strip().lower()
    if text == "-1":
        return -1
    number = text.rstrip("bkmgt")
    suffix = text[len(number):].rstrip("b") or "b"
    if not number or suffix not in SIZE_SUFFIXES:
        raise ConfigError(f"invalid size: {text!r}")
    return int(float(number) * SIZE_SUFFIXES[suffix])


# runc's update flags: name -> (section, key, parser of the flag's text).
UPDATE_FLAGS = {
    "memory": ("memory", "limit", parse_size),
    "memory_swap": ("memory", "swap", parse_size),
    "memory_reservation": ("memory", "reservation", parse_size),
    "kernel_memory": ("memory", "kernel", parse_size),
    "kernel_memory_tcp": ("memory", "kernelTCP", parse_size),
    "cpu_share": ("cpu", "shares", int),
    "cpu_quota": ("cpu", "quota", int),
    "cpu_period": ("cpu", "period", int),
    "cpu_burst": ("cpu", "burst", int),
    "cpu_idle": ("cpu", "idle", int),
    "cpu_rt_period": ("cpu", "realtimePeriod", int),
    "cpu_rt_runtime": ("cpu", "realtimeRuntime", int),
    "cpuset_cpus": ("cpu", "cpus", str),
    "cpuset_mems": ("cpu", "mems", str),
    "pids_limit": ("pids", "limit", int),
    "blkio_weight": ("blockIO", "weight", int),
}


def resources_from(resources_source, flags):
    """The LinuxResources `update` is given: RESOURCES_SOURCE is a JSON file,
    '-' for stdin, or None; FLAGS maps UPDATE_FLAGS names to their text."""
    resources = {}
    if resources_source:
        try:
            if resources_source == "-":
                resources = jsontext.loads(sys.stdin.read())
            else:
                with open(resources_source) as f:
                    resources = jsontext.loads(f.read())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--resources {resources_source}: {exc}") from None
    for name, text in flags.items():
        if text is not None:
            section, key, parse = UPDATE_FLAGS[name]
            try:
                resources.setdefault(section, {})[key] = parse(text)
            except ValueError:
                raise ConfigError(f"--{name.replace('_', '-')}: invalid value {text!r}") from None
    return resources


def update(root, container_id, resources):
    """Apply new limits, RESOURCES (a LinuxResources object), to a running container."""
    container = Container(root, container_id).lock_existing()
    if container.status() == state.STOPPED:
        raise ContainerError("container not running")
    from pyoci.validate import validate_config
    try:
        validate_config({"ociVersion": "1.0.0", "linux": {"resources": resources}})
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("config.json: linux.", "", 1)) from None
    manager = _manager(container, limits=True)
    memory = resources.get("memory") or {}
    if memory.get("checkBeforeUpdate") and memory.get("limit", -1) > 0:
        usage = manager.stats().get("memory", {}).get("usage", {}).get("usage", 0)
        if memory["limit"] < usage:
            raise ContainerError(f"memory limit {memory['limit']} is below the current "
                                 f"usage {usage} (checkBeforeUpdate)")
    # v1 rewrites the device list from deny-all up (and so does systemd):
    # frozen, the container never runs in between.
    freeze = resources.get("devices") is not None and "devices" in manager.paths and \
        not manager.frozen()
    if freeze:
        manager.freeze(True)
    try:
        manager.apply(resources)
    finally:
        if freeze:
            manager.freeze(False)
    _remember(container, resources)


def _remember(container, resources):
    """Keep the stored config's resources current (the limits now in force)."""
    _, raw = container.load_config()
    current = raw.setdefault("linux", {}).setdefault("resources", {})
    for section, values in resources.items():
        if isinstance(values, dict) and isinstance(current.get(section), dict):
            current[section].update(values)
        else:
            current[section] = values
    state.write_atomic(container.config_file, jsontext.dumps(raw).encode(), 0o600)


def stats_event(container):
    return {"type": "stats", "id": container.id, "data": _manager(container, limits=True).stats()}


def events(root, container_id, interval, stats_only, out=sys.stdout):
    """Print runc's event lines: stats every INTERVAL seconds and OOM kills,
    until the container stops; or one stats line with --stats."""
    import time
    from pyoci.linux.cgroups.stats import oom_kills
    container = Container(root, container_id).load()
    if container.status() == state.STOPPED:
        raise ContainerError("container not running")
    if stats_only:
        _write_event(out, stats_event(container))
        return
    paths = container.record["cgroup_paths"]
    seen_ooms = oom_kills(paths)
    while container.status() != state.STOPPED:
        ooms = oom_kills(paths)
        if ooms > seen_ooms:
            _write_event(out, {"type": "oom", "id": container.id})
            seen_ooms = ooms
        _write_event(out, stats_event(container))
        out.flush()
        time.sleep(interval)


def _write_event(out, event):
    """One line of compact JSON, as Go's encoder writes it: engines parse it line by line."""
    out.write(jsontext.dumps(event) + "\n")


def parse_interval(text):
    """Go durations as runc takes them: '5s', '500ms', '1m'."""
    for suffix, scale in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(suffix) and text[:-len(suffix)].replace(".", "", 1).isdigit():
            return float(text[:-len(suffix)]) * scale
    raise ConfigError(f"invalid interval {text!r}")
