"""Driving pyoci through its pause points (log.pause_point; README: "Fault
points"): a test holds it still at one and changes the world, or waits
for a child to get somewhere, before letting it go on. runc has none."""
import errno
import os
import subprocess
import time
from pathlib import Path

from conformance.harness import wait_until


def create_paused(runtime, bundle, container_id, points, on_pause, fifo):
    """`create` with PAUSE points armed; ON_PAUSE(count, pid) runs at each,
    PID being the paused process. The CompletedProcess-like result."""
    os.mkfifo(fifo)
    env = {**os.environ, "PYOCI_PAUSE": ",".join(points), "PYOCI_PAUSE_FIFO": str(fifo)}
    runtime.container_ids.add(container_id)
    with open(fifo.with_suffix(".err"), "w+") as stderr:
        process = subprocess.Popen(runtime.argv + ["--debug", "create", "--bundle", bundle,
                                                   container_id],
                                   env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        count = 0
        while process.poll() is None:
            try:
                held = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO  # no one paused yet
                time.sleep(0.002)
                continue
            try:
                on_pause(count, _reader_of(fifo))
            finally:
                # A fresh FIFO for the next pause, so that the one just let
                # go (still open, until it reads EOF) is not taken for it.
                os.unlink(fifo)
                os.mkfifo(fifo)
                os.close(held)
            count += 1
        stderr.seek(0)
        errors = [line for line in stderr.read().splitlines() if "level=debug" not in line]
    return process.returncode, errors, count


def _reader_of(fifo):
    # Its open of the FIFO may still be returning when ours has.
    return wait_until(lambda: _find_reader(fifo), f"the process pausing on {fifo}")


def _find_reader(fifo):
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if fd_dir.parent.name == str(os.getpid()):
            continue  # the writer
        try:
            if any(os.readlink(fd) == str(fifo) for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:
            continue
    return None


def descendants(pid):
    """PID's descendants, children first, as /proc lists them (a child is
    listed by the thread that forked it: a Go runtime's may be any)."""
    pending = [pid]
    while pending:
        parent = pending.pop(0)
        children = []
        for listing in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children += listing.read_text().split()
            except OSError:
                pass
        for child in map(int, children):
            yield child
            pending.append(child)


def container_init_below(pid):
    """The pid of the container's init among PID's descendants (the first in
    a pid namespace other than ours), or None yet."""
    ours = os.readlink("/proc/self/ns/pid")
    for child in descendants(pid):
        try:
            if os.readlink(f"/proc/{child}/ns/pid") != ours:
                return child
        except OSError:
            continue  # gone, or a zombie: no namespaces to read
    return None


def living_descendants(pid):
    """PID's descendants that have not exited (zombies left out)."""
    living = []
    for child in descendants(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2:][:1] != b"Z":
            living.append(child)
    return living


def mount_points(pid):
    """Where the mounts of PID's mount namespace are, as it sees them."""
    return [line.split()[4] for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]
