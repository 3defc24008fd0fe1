"""cgroup v2 placement: one directory in the unified hierarchy."""
import os

from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux.cgroups import (UNIFIED_KEY, add_process, make_dir, pids_below, remove_dir,
                                 wait_for, write_file)
from pyoci.linux.cgroups.resources import v2_controllers, v2_writes


class Manager:
    def __init__(self, directory, root="/sys/fs/cgroup"):
        self.directory = directory
        self.root = root
        self.paths = {UNIFIED_KEY: directory}

    @classmethod
    def for_path(cls, root, path):
        return cls(root + path, root)

    def create(self):
        """Make the directory, with every controller the host has enabled on
        the way down (as runc: stats and OOM events need them even without
        limits); return it if it did not exist."""
        made = [self.directory] if make_dir(self.directory) else []
        with open(os.path.join(self.root, "cgroup.controllers")) as f:
            available = f.read().split()
        for directory in self._ancestors():
            for controller in available:
                try:
                    write_file(directory, "cgroup.subtree_control", f"+{controller}")
                except OSError:
                    pass  # best effort; a limit that needs it fails clearly in apply()
        return made

    def _ancestors(self):
        """From the root down to the container's parent."""
        chain = []
        parent = self.directory
        while os.path.dirname(parent) != parent and parent != self.root:
            parent = os.path.dirname(parent)
            chain.append(parent)
        return list(reversed(chain))

    def apply(self, resources):
        """Enable the controllers the limits need on the way down, then write them."""
        writes = v2_writes(resources, set(os.listdir(self.directory)))
        self._enable(v2_controllers(writes))
        for name, value in writes:
            try:
                write_file(self.directory, name, value)
            except OSError as exc:
                if not os.path.exists(os.path.join(self.directory, name)):
                    raise ConfigError(f"config.json: linux.resources: {name} is not available "
                                      "on this host") from None
                raise ExecError(f"write {value!r} to {name}: {errno_text(exc.errno)}") from None
        if resources.get("devices") is not None:
            from pyoci.linux import syscalls
            from pyoci.linux.cgroups import devices_bpf
            try:
                devices_bpf.attach(syscalls.syscalls(), self.directory, resources["devices"])
            except OSError as exc:
                raise ExecError(f"device rules for {self.directory}: {exc.strerror}") from None

    def _enable(self, controllers):
        if not controllers:
            return
        root = self.root
        with open(os.path.join(root, "cgroup.controllers")) as f:
            available = set(f.read().split())
        missing = [c for c in controllers if c not in available]
        if missing:
            raise ConfigError(f"config.json: linux.resources: the {missing[0]} cgroup "
                              "controller is not available on this host")
        request = " ".join(f"+{c}" for c in controllers)
        for directory in self._ancestors():
            try:
                write_file(directory, "cgroup.subtree_control", request)
            except OSError as exc:
                raise ExecError(f"enable {request} in {directory}: {errno_text(exc.errno)}") from None

    def add(self, pid):
        add_process(self.directory, pid)

    def pids(self):
        return pids_below(self.directory)

    def freeze(self, frozen):
        """cgroup.freeze, then wait for cgroup.events to say it is done."""
        write_file(self.directory, "cgroup.freeze", "1" if frozen else "0")
        wanted = f"frozen {int(frozen)}"
        wait_for(lambda: wanted in _read(os.path.join(self.directory, "cgroup.events")).splitlines(),
                 wanted)

    def stats(self):
        from pyoci.linux.cgroups.stats import v2_stats
        return v2_stats(self.directory)

    def frozen(self):
        try:
            with open(os.path.join(self.directory, "cgroup.freeze")) as f:
                return f.read().strip() == "1"
        except OSError:
            return False

    def destroy(self, owned=None):
        if owned is None or self.directory in owned:
            remove_dir(self.directory)


def _read(path):
    with open(path) as f:
        return f.read()
