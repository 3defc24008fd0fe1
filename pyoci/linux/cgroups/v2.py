"""cgroup v2 placement: one directory in the unified hierarchy."""
import os

from pyoci.linux.cgroups import UNIFIED_KEY, read_pids, remove_dir, write_file


class Manager:
    def __init__(self, directory):
        self.directory = directory
        self.paths = {UNIFIED_KEY: directory}

    @classmethod
    def for_path(cls, root, path):
        return cls(root + path)

    def create(self):
        os.makedirs(self.directory, exist_ok=True)

    def add(self, pid):
        write_file(self.directory, "cgroup.procs", str(pid))

    def pids(self):
        return read_pids(os.path.join(self.directory, "cgroup.procs"))

    def frozen(self):
        try:
            with open(os.path.join(self.directory, "cgroup.freeze")) as f:
                return f.read().strip() == "1"
        except OSError:
            return False

    def destroy(self):
        remove_dir(self.directory)
