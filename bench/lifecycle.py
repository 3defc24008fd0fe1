"""Lifecycle speed and memory of pyoci next to runc, measured in one run.

    python bench/lifecycle.py [--runs N] [--waiting N]

For each runtime: wall time of `run true` (foreground), of create, start,
state, kill and delete on a busybox bundle, and the PSS of N created
containers waiting for `start`. Prints medians and the pyoci/runc ratio.
Run as root; both runtimes use the same bundle and a private --root.
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conformance.bundle import make_bundle  # noqa: E402
from conformance.harness import PYOCI, RUNC  # noqa: E402

STEPS = ("create", "start", "state", "kill", "delete")


def timed(argv):
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def wait_stopped(argv, container_id):
    while b'"stopped"' not in subprocess.run(argv + ["state", container_id],
                                             capture_output=True).stdout:
        time.sleep(0.001)


def measure(binary, bundles, runs, waiting):
    root = tempfile.mkdtemp(prefix="bench-state-")
    argv = [binary, "--root", root]
    samples = {name: [] for name in ("run true", *STEPS)}
    for index in range(runs):
        samples["run true"].append(timed(argv + ["run", "--bundle", bundles["true"], f"r{index}"]))
    for index in range(runs):
        container_id = f"c{index}"
        samples["create"].append(timed(argv + ["create", "--bundle", bundles["sleep"], container_id]))
        samples["start"].append(timed(argv + ["start", container_id]))
        samples["state"].append(timed(argv + ["state", container_id]))
        samples["kill"].append(timed(argv + ["kill", container_id, "KILL"]))
        wait_stopped(argv, container_id)
        samples["delete"].append(timed(argv + ["delete", container_id]))
    pss = waiting_pss(argv, bundles["sleep"], waiting)
    shutil.rmtree(root, ignore_errors=True)
    return {name: statistics.median(values) for name, values in samples.items()}, pss


def waiting_pss(argv, bundle, count):
    """Mean PSS (KiB) of the processes of COUNT created containers, all waiting at once."""
    ids = [f"w{index}" for index in range(count)]
    for container_id in ids:
        subprocess.run(argv + ["create", "--bundle", bundle, container_id], check=True,
                       stdin=subprocess.DEVNULL)
    total = 0
    for container_id in ids:
        state = subprocess.run(argv + ["state", container_id], capture_output=True, text=True).stdout
        pid = int(state.split('"pid":')[1].split(",")[0])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    for container_id in ids:
        subprocess.run(argv + ["delete", "--force", container_id], check=True)
    return total / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=20)
    parser.add_argument("--runc", default=RUNC)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    bundles = {"true": str(make_bundle(workdir / "true", ["true"])),
               "sleep": str(make_bundle(workdir / "sleep", ["sleep", "1000"]))}
    results = {}
    for name, binary in (("runc", args.runc), ("pyoci", PYOCI)):
        results[name] = measure(binary, bundles, args.runs, args.waiting)
    shutil.rmtree(workdir)
    print(f"{'median of ' + str(args.runs):<22}{'runc':>10}{'pyoci':>10}{'pyoci/runc':>12}")
    for step in ("run true", *STEPS):
        runc_ms, pyoci_ms = (results[name][0][step] * 1000 for name in ("runc", "pyoci"))
        print(f"{step:<22}{runc_ms:>8.1f}ms{pyoci_ms:>8.1f}ms{pyoci_ms / runc_ms:>12.2f}")
    runc_pss, pyoci_pss = results["runc"][1], results["pyoci"][1]
    print(f"{'PSS per created':<22}{runc_pss / 1024:>7.2f}MiB{pyoci_pss / 1024:>7.2f}MiB"
          f"{pyoci_pss / runc_pss:>12.2f}")
    print(f"({args.waiting} containers waiting at once)")


if __name__ == "__main__":
    main()
