"""Speed and memory of pyoci beside runc and crun, measured in one run, with
pass/fail against each target of pyoci's speed work.

    python bench/lifecycle.py [--runs N] [--waiting N] [--sequential N]
                              [--parallel N] [--engines] [--pyoci PATH]

On one busybox bundle, interleaved (each sample runs every runtime in turn,
so drift hits them alike): `run` of `true`; create, state, start, ps, list,
pause, resume, `exec true`, kill and delete of a `sleep` container; `run`,
create and `exec` again, each after 0.2 s without a cgroup migration (see
IDLE: back to back, a runtime whose previous command ended sooner skips
the kernel's wait that the others pay); the
engine sequence create → start → state → kill → delete (the sum of those
steps of one container); N sequential `run true`; N parallel creates of
distinct ids, then their starts and deletes; the PSS of N created containers
waiting for `start`; the peak RSS of `create` itself. --engines adds what
users feel through podman, ctr and docker, and a Kubernetes pod's start and
teardown through containerd's CRI (bench/engines.py); containerd's rows
twice for pyoci: under containerd's Go shim, and under pyoci's own.

Everything runs in a private mount namespace without /sys/fs/cgroup/unified:
crun refuses this hybrid host's empty cgroup2 mount. Run as root.
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conformance.bundle import make_bundle  # noqa: E402
from conformance.harness import PYOCI, RUNC  # noqa: E402

CRUN = shutil.which("crun") or "/usr/bin/crun"
HIDDEN_MOUNT = "/sys/fs/cgroup/unified"
SHORT = ("state", "start", "ps", "list", "pause", "resume", "kill", "delete")
SEQUENCE = ("create", "start", "state", "kill", "delete")


def timed(argv):
    """Wall seconds of ARGV, which must succeed. Its stderr goes to a file:
    a created container's process keeps it open."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        status = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=errors)
        elapsed = time.perf_counter() - started
        if status != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(argv)} exited {status}: "
                             f"{errors.read().decode(errors='replace').strip()}")
    return elapsed


def peak_rss(argv):
    """ARGV's peak RSS in KiB, as GNU time sees it (a child of ours would
    inherit our own high-water mark)."""
    with tempfile.NamedTemporaryFile("r") as out:
        timed(["/usr/bin/time", "-f", "%M", "-o", out.name, *argv])
        return int(out.read().split()[-1])


class Runtime:
    def __init__(self, name, binary):
        self.name = name
        self.root = tempfile.mkdtemp(prefix=f"bench-{name}-")
        self.argv = [binary, "--root", self.root]
        self.samples = {}

    def time(self, row, *args):
        self.samples.setdefault(row, []).append(timed(self.argv + list(args)))

    def quiet(self, *args):
        subprocess.run(self.argv + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def status(self, container_id):
        out = subprocess.run(self.argv + ["state", container_id], capture_output=True,
                             text=True).stdout
        return out.split('"status": "')[1].split('"')[0] if '"status"' in out else "gone"

    def wait_stopped(self, container_id):
        while self.status(container_id) != "stopped":
            time.sleep(0.001)

    def median(self, row):
        return statistics.median(self.samples[row])

    def clean(self):
        for container_id in os.listdir(self.root):
            self.quiet("delete", "--force", container_id)
        shutil.rmtree(self.root, ignore_errors=True)


def lifecycle_sample(runtime, bundles, index):
    container_id = f"c{index}"
    runtime.time("run true", "run", "--bundle", bundles["true"], f"r{index}")
    runtime.time("create", "create", "--bundle", bundles["sleep"], container_id)
    runtime.time("state", "state", container_id)
    runtime.time("start", "start", container_id)
    runtime.time("ps", "ps", container_id)
    runtime.time("list", "list")
    runtime.time("pause", "pause", container_id)
    runtime.time("resume", "resume", container_id)
    runtime.time("exec true", "exec", container_id, "true")
    runtime.time("kill", "kill", container_id, "KILL")
    runtime.wait_stopped(container_id)
    runtime.time("delete", "delete", container_id)
    runtime.samples.setdefault("sequence", []).append(
        sum(runtime.samples[step][-1] for step in SEQUENCE))


# A cgroup migration soon after another skips the kernel's RCU grace period
# (6-25 ms here) that one on an idle host waits for, so back to back the
# runtime whose previous command ended sooner is measured with the wait
# skipped. After this long without a migration, every runtime pays it.
IDLE = 0.2


def idle_host_sample(runtime, bundles, index):
    """run, create and exec, each after IDLE seconds without a migration:
    one container started on a quiet host, alike for every runtime."""
    container_id = f"i{index}"
    time.sleep(IDLE)
    runtime.time("run true, idle host", "run", "--bundle", bundles["true"], f"ir{index}")
    time.sleep(IDLE)
    runtime.time("create, idle host", "create", "--bundle", bundles["sleep"], container_id)
    runtime.quiet("start", container_id)
    time.sleep(IDLE)
    runtime.time("exec true, idle host", "exec", container_id, "true")
    runtime.quiet("delete", "--force", container_id)


def sequential_runs(runtime, bundle, count):
    runtime.samples["sequential"] = [sum(timed(runtime.argv + ["run", "--bundle", bundle,
                                                               f"s{index}"])
                                         for index in range(count))]


def parallel_creates(runtime, bundle, count):
    """Wall time of COUNT creates at once, then their starts, then their
    deletes; and how many of the 3 × COUNT calls failed."""
    ids = [f"p{index}" for index in range(count)]
    failures = 0
    started = time.perf_counter()
    for args in (["create", "--bundle", bundle], ["start"], ["delete", "--force"]):
        children = [subprocess.Popen(runtime.argv + args + [container_id],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL) for container_id in ids]
        failures += sum(1 for child in children if child.wait() != 0)
    runtime.samples["parallel"] = [time.perf_counter() - started]
    return failures


def waiting_pss(runtime, bundle, count):
    """Mean PSS (KiB) of the processes of COUNT created containers, all
    waiting at once; and the median peak RSS (KiB) of their creates."""
    ids = [f"w{index}" for index in range(count)]
    rss = [peak_rss(runtime.argv + ["create", "--bundle", bundle, container_id])
           for container_id in ids]
    total = 0
    for container_id in ids:
        out = subprocess.run(runtime.argv + ["state", container_id], capture_output=True,
                             text=True).stdout
        pid = int(out.split('"pid":')[1].split(",")[0])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    for container_id in ids:
        runtime.quiet("delete", "--force", container_id)
    return total / count, statistics.median(rss)


def bare_interpreter(pyoci):
    """argv of pyoci's interpreter doing nothing, with the launcher's flags."""
    with open(pyoci) as f:
        shebang = f.readline()[2:].split()
    return [*shebang, "-c", "pass"]


def ms(seconds):
    return f"{seconds * 1000:.1f}ms"


def report(runtimes, bare, bare_argv, args, memory, failures, engines):
    runc, crun, pyoci = (runtimes[name] for name in ("runc", "crun", "pyoci"))
    budget = bare + 0.003
    rows = []

    def row(name, target_text, passed, values=None):
        values = values or [r.median(name) if name in r.samples else None
                            for r in (runc, crun, pyoci)]
        ratio = values[2] / values[0]
        rows.append((name, *[ms(v) if v is not None else "-" for v in values],
                     f"{ratio:.2f}", target_text, "pass" if passed(values[2], ratio) else "FAIL"))

    for suffix in ("", ", idle host"):
        row("run true" + suffix, "<= 1.00x (aim 0.75x)", lambda _, ratio: ratio <= 1.0)
        row("create" + suffix, "<= 1.00x", lambda _, ratio: ratio <= 1.0)
        row("exec true" + suffix, "<= 1.00x", lambda _, ratio: ratio <= 1.0)
    for name in SHORT:
        row(name, f"<= bare+3ms ({ms(budget)})", lambda value, _: value <= budget)
    row("sequence", "<= 1.30x", lambda _, ratio: ratio <= 1.3)
    row("sequential", "<= 1.00x", lambda _, ratio: ratio <= 1.0)
    row("parallel", f"<= 1.50x, all ok ({failures['pyoci']} failed)",
        lambda _, ratio: ratio <= 1.5 and failures["pyoci"] == 0)
    if engines:
        from bench.engines import CRI_POD_START, CRI_POD_TEARDOWN, PYOCI_SHIM, SHIM_MEMORY
    for name, by_runtime in engines.items():
        if name == SHIM_MEMORY:
            continue
        limit = 1.10 if name in (CRI_POD_START, CRI_POD_TEARDOWN) else 1.05
        # pyoci under the engine's own shim, and (containerd) under pyoci's shim.
        for label, column in ((name, "pyoci"), (f"{name}, pyoci's shim", PYOCI_SHIM)):
            values = [by_runtime.get(runtime) for runtime in ("runc", "crun", column)]
            if values[0] and values[2]:
                row(label, f"<= {limit:.2f}x", lambda _, ratio, limit=limit: ratio <= limit,
                    values)
    labels = {"sequence": "create→start→state→kill→delete",
              "sequential": f"{args.sequential} sequential run true",
              "parallel": f"{args.parallel} parallel create+start+delete"}
    header = ("median of " + str(args.runs), "runc", "crun", "pyoci", "pyoci/runc", "target", "")
    table = [header] + [(labels.get(r[0], r[0]), *r[1:]) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) if i in (0, 5) else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(line, widths))).rstrip())
    print(f"bare interpreter ({' '.join(bare_argv)}): {ms(bare)}")
    print("peak RSS of create: " + ", ".join(f"{name} {rss / 1024:.1f} MiB"
                                             for name, (_, rss) in memory.items()))
    print("PSS per created container waiting (" + str(args.waiting) + " at once): "
          + ", ".join(f"{name} {value / 1024:.2f} MiB" for name, (value, _) in memory.items())
          + "  target pyoci <= 0.10 MiB: "
          + ("pass" if memory["pyoci"][0] <= 0.1 * 1024 else "FAIL"))
    if any(failures.values()):
        print("failed calls in the parallel run: " + ", ".join(
            f"{name} {count}" for name, count in failures.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=20)
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=50)
    parser.add_argument("--engines", action="store_true",
                        help="also podman, ctr, docker and CRI pods with each runtime "
                             "(bench/engines.py)")
    parser.add_argument("--pyoci", default=PYOCI)
    args = parser.parse_args()
    # A SIGTERM (timeout, kill) unwinds as ^C does: containers and daemons are torn down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if os.environ.get("BENCH_PRIVATE_MOUNTS") != "1":
        os.environ["BENCH_PRIVATE_MOUNTS"] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c",
                              f"umount {HIDDEN_MOUNT} 2>/dev/null; exec \"$@\"", "sh",
                              sys.executable, *sys.argv])
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    bundles = {"true": str(make_bundle(workdir / "true", ["true"])),
               "sleep": str(make_bundle(workdir / "sleep", ["sleep", "1000"]))}
    runtimes = {"runc": Runtime("runc", RUNC), "crun": Runtime("crun", CRUN),
                "pyoci": Runtime("pyoci", args.pyoci)}
    bare_argv = bare_interpreter(args.pyoci)
    bare_samples = []
    try:
        for runtime in runtimes.values():  # warm every cache once
            lifecycle_sample(runtime, bundles, "warm")
            runtime.samples.clear()
        for index in range(args.runs):
            for runtime in runtimes.values():
                lifecycle_sample(runtime, bundles, index)
                idle_host_sample(runtime, bundles, index)
            bare_samples.append(timed(bare_argv))
        failures = {}
        for runtime in runtimes.values():
            sequential_runs(runtime, bundles["true"], args.sequential)
            failures[runtime.name] = parallel_creates(runtime, bundles["sleep"], args.parallel)
        memory = {name: waiting_pss(runtime, bundles["sleep"], args.waiting)
                  for name, runtime in runtimes.items()}
        engines = {}
        if args.engines:
            from bench.engines import measure_engines
            engines = measure_engines({name: runtime.argv[0]
                                       for name, runtime in runtimes.items()}, args.runs)
    finally:
        for runtime in runtimes.values():
            runtime.clean()
        shutil.rmtree(workdir, ignore_errors=True)
    report(runtimes, statistics.median(bare_samples), bare_argv, args, memory, failures, engines)


if __name__ == "__main__":
    main()
