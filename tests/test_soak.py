"""A soak: 1,000 container lifecycles, two at a time, mixed with exec, pause
and resume, kill --all and plain kill, bounded in count and in time. At the
end nothing is left (LeakCheck), and neither --root nor pyoci's own
processes grew: each command's peak RSS over the last hundred lifecycles is
that of the first hundred."""
import os
import statistics
import subprocess
import tempfile
import threading
import time

import pytest

from conformance.bundle import make_bundle
from conformance.harness import COMMAND_TIMEOUT, LeakCheck, wait_until

pytestmark = pytest.mark.root

LIFECYCLES = int(os.environ.get("PYOCI_SOAK_LIFECYCLES", "1000"))
WORKERS = 2
TIME_LIMIT = 15 * 60  # seconds; about 2 minutes here


class Soak:
    """Runs pyoci commands, keeping each one's peak RSS (KiB) by command."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.peaks = {}  # command -> [(lifecycle number, KiB)]
        self.lock = threading.Lock()

    def run(self, number, *args):
        argv = self.runtime.argv + [str(arg) for arg in args]
        with tempfile.TemporaryFile() as errors:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=errors)
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            errors.seek(0)
            assert child.returncode == 0, f"{' '.join(argv)}: {errors.read().decode()}"
        with self.lock:
            self.peaks.setdefault(args[0], []).append((number, usage.ru_maxrss))

    def status(self, container_id):
        return self.runtime.state(container_id)["status"]

    def lifecycle(self, number, bundle):
        container_id = f"soak-{number}"
        self.runtime.container_ids.add(container_id)
        self.run(number, "create", "--bundle", bundle, container_id)
        self.run(number, "start", container_id)
        if number % 5 == 0:
            self.run(number, "exec", container_id, "true")
        if number % 7 == 0:
            self.run(number, "pause", container_id)
            assert self.status(container_id) == "paused"
            self.run(number, "resume", container_id)
        if number % 3 == 0:
            self.run(number, "kill", *(("--all",) if number % 2 else ()), container_id, "KILL")
            wait_until(lambda: self.status(container_id) == "stopped",
                       f"{container_id} to stop")
            self.run(number, "delete", container_id)
        else:
            self.run(number, "delete", "--force", container_id)


def test_soak(pyoci, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "1000"])
    check = LeakCheck(pyoci, tmp_path)
    soak = Soak(pyoci)
    numbers = iter(range(LIFECYCLES))
    numbers_lock = threading.Lock()
    deadline = time.monotonic() + TIME_LIMIT
    failures = []

    def worker():
        while time.monotonic() < deadline and not failures:
            with numbers_lock:
                number = next(numbers, None)
            if number is None:
                return
            try:
                soak.lifecycle(number, bundle)
            except BaseException as exc:  # noqa: BLE001 - reported below, with the number
                failures.append(f"lifecycle {number}: {exc}")

    try:
        threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIME_LIMIT + COMMAND_TIMEOUT)
        assert failures == []
        done = len([n for n, _ in soak.peaks["delete"]])
        assert done == LIFECYCLES, f"{done} of {LIFECYCLES} lifecycles in {TIME_LIMIT}s"
        assert os.listdir(pyoci.root) == []
        assert check.leftovers() == {}
    finally:
        check.close()
    window = max(LIFECYCLES // 10, 1)
    for command, peaks in soak.peaks.items():
        first = [kib for number, kib in peaks if number < window]
        last = [kib for number, kib in peaks if number >= LIFECYCLES - window]
        if first and last:
            assert statistics.median(last) <= statistics.median(first) * 1.05 + 512, \
                f"{command}'s peak RSS grew: {statistics.median(first)} -> " \
                f"{statistics.median(last)} KiB"
