"""OOM kills in a container's memory cgroup, as events in the shim's loop
(containerd's TaskOOM, which CRI reports as the reason "OOMKilled").

cgroup v1: an eventfd registered in cgroup.event_control for
memory.oom_control, readable at each OOM. v2: memory.events, which the
kernel flags (EPOLLPRI) when a count changes; an oom_kill count that grew
is an OOM kill.
"""
import os


class OomWatch:
    """Calls ON_OOM() for each OOM of the cgroup at PATHS (a container record's
    cgroup_paths), until close(). Nothing is watched where the memory
    controller is not there."""

    def __init__(self, loop, paths, on_oom):
        self._loop = loop
        self._on_oom = on_oom
        self._fds = []
        self.check = lambda: None  # what is ready, now (before an exit is told)
        memory, unified = paths.get("memory"), paths.get("")
        if memory:
            self._watch_v1(memory)
        elif unified and os.path.exists(os.path.join(unified, "memory.events")):
            self._watch_v2(unified)

    def _watch_v1(self, directory):
        event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._fds.append(event)
        control = os.open(os.path.join(directory, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        self._fds.append(control)
        with open(os.path.join(directory, "cgroup.event_control"), "w") as f:
            f.write(f"{event} {control}")

        def readable():
            try:
                os.eventfd_read(event)
            except BlockingIOError:
                return
            self._on_oom()
        self._loop.watch(event, readable)
        self.check = readable

    def _watch_v2(self, directory):
        events = os.open(os.path.join(directory, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        self._fds.append(events)
        seen = [_oom_kills(events)]

        def changed():
            now = _oom_kills(events)
            if now > seen[0]:
                seen[0] = now
                self._on_oom()
        self._loop.watch(events, changed, priority=True)
        self.check = changed

    def close(self):
        self.check = lambda: None
        for fd in self._fds:
            self._loop.unwatch(fd)
            os.close(fd)
        self._fds = []


def _oom_kills(fd):
    for line in os.pread(fd, 4096, 0).decode().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0
