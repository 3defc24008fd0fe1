"""cgroup v1 (and hybrid) placement: one directory per mounted hierarchy."""
import os

import errno

from pyoci import log
from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux.cgroups import (NOT_OURS, UNIFIED_KEY, Cgroups, container_cgroup, directories,
                                 make_dir, own_cgroups, remove_dir, unavailable_controller,
                                 write_file)
from pyoci.linux.cgroups.resources import V1_OPTIONAL, v1_writes
from pyoci.linux.procfs import mount_table

CONTROLLERS = frozenset({
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory",
    "misc", "net_cls", "net_prio", "perf_event", "pids", "rdma"})


def hierarchies(root):
    """{key: mount point} for every cgroup hierarchy mounted under ROOT.

    A key is a controller ('cpu' and 'cpuacct' both for a cpu,cpuacct
    mount, as runc records them), 'name=systemd' for a named hierarchy, or
    '' for the v2 mount.
    """
    result = {}
    for mount_point, fs_type, super_options in mount_table():
        if not mount_point.startswith(root + "/"):
            continue
        if fs_type == "cgroup2":
            result[UNIFIED_KEY] = mount_point
        elif fs_type == "cgroup":
            for option in super_options.split(","):
                if option in CONTROLLERS or option.startswith("name="):
                    result[option] = mount_point
    return result


class Manager(Cgroups):
    def __init__(self, paths):
        super().__init__(paths)
        self.rootless = False
        self.may_skip = False  # rootless without a cgroupsPath: see manager_for
        self.skipped = set()  # the keys of hierarchies left out
        self._made = []
        self._runtime_paths = {}

    @classmethod
    def for_path(cls, root, cgroups_path, container_id, hybrid):
        own = own_cgroups()
        paths, runtime_paths = {}, {}
        for key, mount_point in hierarchies(root).items():
            if key == UNIFIED_KEY and not hybrid:
                continue
            base = own.get(key, "/")
            paths[key] = mount_point + container_cgroup(cgroups_path, container_id, base)
            runtime_paths[key] = os.path.normpath(mount_point + base)
        manager = cls(paths)
        manager._runtime_paths = runtime_paths
        return manager

    def seen_paths(self):
        """Where the container's processes are: its cgroups, and the
        runtime's own in a hierarchy left out (rootless), as a cgroup mount
        shows them."""
        return {**{key: self._runtime_paths[key] for key in self.skipped}, **self.paths}

    def create(self):
        """Make the directories; return those that did not exist."""
        made = self._made
        for directory in directories(self.paths):
            try:
                if directory == self.paths.get("cpuset") and not os.path.isdir(directory):
                    _make_cpuset(directory)
                    made.append(directory)
                elif make_dir(directory):
                    made.append(directory)
            except OSError as exc:
                if not self._leave_out(directory, exc):
                    raise
        return list(made)

    def _leave_out(self, directory, exc):
        """Rootless: drop a hierarchy that refused us, and what we made of it."""
        if not (self.may_skip and exc.errno in NOT_OURS):
            return False
        for key in [key for key, path in self.paths.items() if path == directory]:
            del self.paths[key]
            self.skipped.add(key)
        if directory in self._made:
            self._made.remove(directory)
            remove_dir(directory)
        log.debug(f"rootless: cgroup {directory} left out: {errno_text(exc.errno)}")
        return True

    def apply(self, resources):
        """Write linux.resources into the controllers' files."""
        blkio = self.paths.get("blkio")
        blkio_files = set(os.listdir(blkio)) if blkio and os.path.isdir(blkio) else None
        devices = self.paths.get("devices")
        devices_list = None
        if devices and resources.get("devices") is not None:
            with open(os.path.join(devices, "devices.list")) as f:
                devices_list = f.read()
        writes = _memory_order(v1_writes(resources, blkio_files, devices_list),
                               self.paths.get("memory"))
        sets_quota = any(name == "cpu.cfs_quota_us" for _, name, _ in writes)
        retry_period = None
        for controller, name, value in writes:
            directory = self.paths.get(controller)
            # As runc: device rules are not expected to work rootless.
            refusal_is_fine = controller == "devices" and self.rootless
            if directory is None:
                if name in V1_OPTIONAL or refusal_is_fine:
                    continue
                if controller in self.skipped:
                    raise ExecError(f"cannot set {controller} limit: container could not "
                                    "join or create cgroup")
                raise unavailable_controller(controller, name)
            try:
                write_file(directory, name, value)
            except OSError as exc:
                if name in V1_OPTIONAL and exc.errno in (errno.ENOENT, errno.EOPNOTSUPP,
                                                         errno.EINVAL):
                    continue  # kernel memory limits: gone from newer kernels, and deprecated
                if name == "cpu.cfs_period_us" and exc.errno == errno.EINVAL and sets_quota:
                    # As runc: the old quota over the new period may exceed the
                    # parent's limit; the new quota comes next, then the period again.
                    retry_period = (directory, name, value)
                    continue
                if refusal_is_fine:
                    continue
                _refuse_write(directory, name, value, exc)
            if name == "cpu.cfs_quota_us" and retry_period is not None:
                try:
                    write_file(*retry_period)
                except OSError as exc:
                    _refuse_write(*retry_period, exc)
                retry_period = None

    def stats(self):
        from pyoci.linux.cgroups.stats import v1_stats
        return v1_stats(self.paths)


def _refuse_write(directory, name, value, exc):
    if not os.path.exists(os.path.join(directory, name)):
        raise ConfigError(f"config.json: linux.resources: {name} is not "
                          "supported by this kernel") from None
    raise ExecError(f"write {value!r} to {name}: {errno_text(exc.errno)}") from None


def _make_cpuset(directory):
    """A new cpuset is empty and refuses tasks: inherit cpus and mems downwards."""
    missing = []
    path = directory
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        os.mkdir(path)
        parent = os.path.dirname(path)
        for name in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(parent, name)) as f:
                value = f.read().strip()
            write_file(path, name, value)


def _memory_order(writes, memory_dir):
    """memory.memsw (memory + swap) may never be below memory.limit: when the
    new limit exceeds the current memsw, raise memsw first."""
    names = [name for _, name, _ in writes]
    if memory_dir is None or "memory.limit_in_bytes" not in names or \
            "memory.memsw.limit_in_bytes" not in names:
        return writes
    limit = next(w for w in writes if w[1] == "memory.limit_in_bytes")
    memsw = next(w for w in writes if w[1] == "memory.memsw.limit_in_bytes")
    try:
        with open(f"{memory_dir}/memory.memsw.limit_in_bytes") as f:
            current_memsw = int(f.read())
    except OSError:
        return writes
    if int(limit[2]) == -1 or int(limit[2]) > current_memsw:
        rest = [w for w in writes if w not in (limit, memsw)]
        return [memsw, limit, *rest]
    return writes
