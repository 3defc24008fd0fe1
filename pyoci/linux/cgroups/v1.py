"""cgroup v1 (and hybrid) placement: one directory per mounted hierarchy."""
import os

from pyoci.linux.cgroups import (UNIFIED_KEY, container_cgroup, own_cgroups,
                                 read_pids, remove_dir, write_file)

CONTROLLERS = frozenset({
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory",
    "misc", "net_cls", "net_prio", "perf_event", "pids", "rdma"})


def hierarchies(root):
    """{key: mount point} for every cgroup hierarchy mounted under ROOT.

    The key is the first controller of a v1 mount (e.g. 'cpu' for
    cpu,cpuacct, 'name=systemd' for a named one) or '' for the v2 mount.
    """
    result = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            mount_point, fs_type = fields[4], fields[separator + 1]
            if not mount_point.startswith(root + "/"):
                continue
            if fs_type == "cgroup2":
                result[UNIFIED_KEY] = mount_point
            elif fs_type == "cgroup":
                options = fields[separator + 3].split(",")
                controllers = [o for o in options
                               if o in CONTROLLERS or o.startswith("name=")]
                if controllers:
                    result[controllers[0]] = mount_point
    return result


class Manager:
    def __init__(self, paths):
        self.paths = dict(paths)

    @classmethod
    def for_path(cls, root, cgroups_path, container_id, hybrid):
        own = own_cgroups("1")
        paths = {}
        for key, mount_point in hierarchies(root).items():
            if key == UNIFIED_KEY and not hybrid:
                continue
            # A mount of 'cpu,cpuacct' shows in /proc/1/cgroup under 'cpu' too.
            base = own.get(key, "/")
            paths[key] = mount_point + container_cgroup(cgroups_path, container_id, base)
        return cls(paths)

    def create(self):
        for key, directory in self.paths.items():
            if key == "cpuset":
                _make_cpuset(directory)
            else:
                os.makedirs(directory, exist_ok=True)

    def add(self, pid):
        for directory in self.paths.values():
            write_file(directory, "cgroup.procs", str(pid))

    def pids(self):
        """Every process in the container's cgroup."""
        key = "pids" if "pids" in self.paths else next(iter(self.paths), None)
        return read_pids(os.path.join(self.paths[key], "cgroup.procs")) if key is not None else []

    def frozen(self):
        freezer = self.paths.get("freezer")
        if not freezer:
            return False
        try:
            with open(os.path.join(freezer, "freezer.state")) as f:
                return f.read().strip() == "FROZEN"
        except OSError:
            return False

    def destroy(self):
        for directory in self.paths.values():
            remove_dir(directory)


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
