"""cgroup v2 placement: one directory in the unified hierarchy."""
import os

from pyoci import log
from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux.cgroups import (NOT_OURS, UNIFIED_KEY, Cgroups, make_dir, own_cgroups, remove_dir,
                                 unavailable_controller, write_file)
from pyoci.linux.cgroups.resources import v2_controllers, v2_writes


class Manager(Cgroups):
    def __init__(self, directory, root="/sys/fs/cgroup"):
        super().__init__({UNIFIED_KEY: directory})
        self.directory = directory
        self.root = root
        self.rootless = False
        self.may_skip = False  # rootless without a cgroupsPath: see manager_for
        self.refusal = None  # why the cgroup was left out (rootless)
        self._made = False

    @classmethod
    def for_path(cls, root, path):
        return cls(root + path, root)

    def create(self):
        """Make the directory, with every controller the host has enabled on
        the way down (as runc: stats and OOM events need them even without
        limits); return it if it did not exist."""
        try:
            self._made = make_dir(self.directory)
        except OSError as exc:
            if self._leave_out(self.directory, exc):
                return []
            raise
        made = [self.directory] if self._made else []
        with open(os.path.join(self.root, "cgroup.controllers")) as f:
            available = f.read().split()
        for directory in self._ancestors():
            for controller in available:
                try:
                    write_file(directory, "cgroup.subtree_control", f"+{controller}")
                except OSError:
                    pass  # best effort; a limit that needs it fails clearly in apply()
        return made

    def seen_paths(self):
        """Where the container's processes are: its cgroup, or the
        runtime's own when it was left out (rootless)."""
        if self.paths:
            return self.paths
        return {UNIFIED_KEY: os.path.normpath(self.root + own_cgroups().get(UNIFIED_KEY, "/"))}

    def _leave_out(self, directory, exc):
        """Rootless: go without a cgroup that refused us (and undo ours)."""
        if not (self.may_skip and exc.errno in NOT_OURS):
            return False
        self.paths.clear()
        self.refusal = f"{directory}: {errno_text(exc.errno)}"
        if self._made:
            self._made = False
            remove_dir(directory)
        log.debug(f"rootless: cgroup {self.refusal}: left out")
        return True

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
        if not self.paths:
            if v2_writes(resources):
                raise ExecError("rootless needs no limits + no cgrouppath when no permission "
                                f"is granted for cgroups: {self.refusal}")
            return  # device rules, as runc, are not expected to work rootless
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
                if self.rootless:
                    return
                raise ExecError(f"device rules for {self.directory}: {exc.strerror}") from None

    def _enable(self, controllers):
        if not controllers:
            return
        root = self.root
        with open(os.path.join(root, "cgroup.controllers")) as f:
            available = set(f.read().split())
        missing = [c for c in controllers if c not in available]
        if missing:
            raise unavailable_controller(missing[0])
        for directory in self._ancestors():
            with open(os.path.join(directory, "cgroup.subtree_control")) as f:
                enabled = f.read().split()
            request = " ".join(f"+{c}" for c in controllers if c not in enabled)
            if not request:
                continue  # a delegated subtree's ancestors are not ours to write
            try:
                write_file(directory, "cgroup.subtree_control", request)
            except OSError as exc:
                raise ExecError(f"enable {request} in {directory}: {errno_text(exc.errno)}") from None

    def stats(self):
        from pyoci.linux.cgroups.stats import v2_stats
        return v2_stats(self.directory)
