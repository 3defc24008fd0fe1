"""What users feel: wall time of `run --rm true` through real engines, per OCI runtime.

    python bench/engines.py [--runs N] [--runtime PATH ...]

Rows: podman (--runtime PATH), ctr (containerd's io.containerd.runc.v2 shim
with --runc-binary PATH; and, as the column pyoci-shim, pyoci's own shim
io.containerd.pyoci.v2), docker (dockerd with the runtime added by
--add-runtime), and a Kubernetes pod through containerd's CRI as kubelet
asks for one (conformance/engines/cri.py; a runtime handler per runtime,
and pyoci-shim): its start (RunPodSandbox, then ImageStatus, CreateContainer
and StartContainer of a `sleep` container) and its teardown
(StopPodSandbox, RemovePodSandbox), timed apart on each pod. All on a local
busybox image, in private stores and daemons set up by
conformance/engines/helpers.py and torn down at the end.  Engines call each
runtime binary directly (not through the tests' logging shim).
Prints medians and each runtime's ratio to the first; then the memory of
one pod's shim, the Go shim's (running the first runtime) and pyoci's.
Run as root.
"""
import argparse
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conformance.engines import helpers  # noqa: E402

PODMAN, CTR, DOCKER = "podman run --rm true", "ctr run --rm true", "docker run --rm true"
CRI_POD_START, CRI_POD_TEARDOWN = "CRI pod start", "CRI pod teardown"
PYOCI_SHIM = helpers.PYOCI_SHIM_HANDLER
SHIM_MEMORY = "shim memory"
ENGINE_BINARIES = {
    PODMAN: ("podman",),
    CTR: ("containerd", "ctr"),
    DOCKER: ("containerd", "ctr", "dockerd", "docker"),
    CRI_POD_START: ("containerd", "ctr", "containerd-shim-runc-v2"),
}


def measure_engines(runtimes: dict[str, str], runs: int) -> dict[str, dict[str, float]]:
    """{row: {runtime name: median seconds}} for ``runtimes`` {name: binary path}.

    Rows whose engine is not installed are left out (with a line on stderr).
    """
    with contextlib.ExitStack() as teardown:
        commands = start_engines(teardown, runtimes)
        memory = commands.pop(SHIM_MEMORY, {})
        results = {}
        for row, by_runtime in commands.items():
            results.update(median_times(row, by_runtime, runs))
        results[SHIM_MEMORY] = {name: measure() for name, measure in memory.items()}
        return results


def shim_memory(ctr, container_id):
    """{Rss, Pss, Private_Dirty: MiB} of the shim serving a detached `sleep`
    container (a pod of one): the parent of its init."""
    ctr("run", "-d", *ctr.runtime_args(), helpers.IMAGE, container_id, "sleep", "600")
    try:
        pid = next(int(line.split()[1]) for line in ctr("task", "ls").stdout.splitlines()[1:]
                   if line.split()[0] == container_id)
        with open(f"/proc/{pid}/stat") as f:
            shim = int(f.read().rpartition(")")[2].split()[1])
        time.sleep(1)  # settled after its first calls
        with open(f"/proc/{shim}/smaps_rollup") as f:
            fields = dict(line.split()[:2] for line in f if line.split()[0].endswith(":"))
        return {key: int(fields[key + ":"]) / 1024 for key in ("Rss", "Pss", "Private_Dirty")}
    finally:
        ctr("task", "kill", "--signal", "SIGKILL", container_id, check=False)
        helpers.wait_until(lambda: ctr.task_status(container_id) in ("STOPPED", None),
                           f"{container_id} to stop")
        ctr("task", "delete", container_id, check=False)
        ctr("container", "delete", container_id, check=False)


def median_times(row, commands, runs):
    """{row: {runtime: median seconds}} of ``commands`` {runtime: callable},
    after one warm-up each: the wall time of each call, in ROW; a callable
    that times its own parts returns {row: seconds} instead.

    A runtime whose warm-up fails is left out of the row (with a line on stderr).
    Runs are interleaved so that drift (caches, page cache, thermal) hits every runtime alike.
    """
    working = {}
    for name, command in commands.items():
        try:
            command()
        except helpers.CommandFailed as error:
            print(f"leaving {name} out of {row!r}:\n{error}", file=sys.stderr)
        else:
            working[name] = command
    samples = {}
    for _ in range(runs):
        for name, command in working.items():
            started = time.perf_counter()
            done = command()
            elapsed = time.perf_counter() - started
            parts = done if isinstance(done, dict) else {row: elapsed}
            for part, seconds in parts.items():
                samples.setdefault(part, {}).setdefault(name, []).append(seconds)
    return {part: {name: statistics.median(values) for name, values in by_runtime.items()}
            for part, by_runtime in samples.items()}


def pod_start_and_teardown(pods, rpc_error):
    """{CRI_POD_START: seconds, CRI_POD_TEARDOWN: seconds} of one pod of one
    container, on PODS' handler. A call's RPC_ERROR fails as a command would."""
    try:
        started = time.perf_counter()
        sandbox, config = pods.run_pod("bench")
        pods.start_container(sandbox, config, "main")
        running = time.perf_counter()
        pods.tear_down(sandbox)
    except rpc_error as error:
        raise helpers.CommandFailed(f"CRI on handler {pods.handler}: {error.details()}") from None
    return {CRI_POD_START: running - started, CRI_POD_TEARDOWN: time.perf_counter() - running}


def start_engines(teardown, runtimes):
    """{row: {runtime: callable running `true` once}}; registers every teardown on ``teardown``."""
    rows = []
    for row, binaries in ENGINE_BINARIES.items():
        missing = [binary for binary in binaries if helpers.find_binary(binary) is None]
        if missing:
            print(f"skipping {row!r}: not installed: {', '.join(missing)}", file=sys.stderr)
        else:
            rows.append(row)
    if PODMAN not in rows:
        # The image is built with podman: without it, no engine has anything to run.
        print("skipping every row: the busybox image is built with podman", file=sys.stderr)
        return {}

    session = helpers.new_session_dir()
    teardown.callback(shutil.rmtree, session, ignore_errors=True)
    teardown.callback(helpers.unmount_under, session)
    # What the engine helpers read of a runtime: its name and the binary to run.
    targets = {name: SimpleNamespace(name=name, path=path) for name, path in runtimes.items()}
    commands = {}

    store = helpers.PodmanStore(session / "podman")
    teardown.callback(store.close)
    store.import_image(session / "image")
    podmans = {name: helpers.Podman(store, target) for name, target in targets.items()}
    for podman in podmans.values():
        teardown.callback(podman.cleanup)
    commands[PODMAN] = {
        name: lambda podman=podman: podman("run", "--rm", "--network", "none",
                                           "--runtime", podman.shim.path, helpers.IMAGE, "true")
        for name, podman in podmans.items()}
    if rows == [PODMAN]:
        return commands

    archive = store.save_docker_archive(session / "image" / "busybox.docker.tar")
    containerd = helpers.ContainerdDaemon(session / "containerd")
    teardown.callback(containerd.stop)
    if CTR in rows:
        ctrs = {name: helpers.Ctr(containerd, target, session / "ctr-root" / name)
                for name, target in targets.items()}
        base = next(iter(targets.values()))
        ctrs[PYOCI_SHIM] = helpers.Ctr(containerd, base, session / "ctr-root" / PYOCI_SHIM,
                                       runtime=helpers.Ctr.PYOCI_SHIM)
        for ctr in ctrs.values():
            teardown.callback(ctr.cleanup)
        next(iter(ctrs.values()))("images", "import", archive)
        container_ids = (f"bench-{index}" for index in itertools.count())
        commands[CTR] = {
            name: lambda ctr=ctr: ctr("run", "--rm", *ctr.runtime_args(), helpers.IMAGE,
                                      next(container_ids), "true")
            for name, ctr in ctrs.items()}
        commands[SHIM_MEMORY] = {
            name: lambda ctr=ctrs[name]: shim_memory(ctr, next(container_ids))
            for name in (base.name, PYOCI_SHIM)}
    if DOCKER in rows:
        dockerd = helpers.DockerDaemon(session / "docker", containerd, list(targets.values()))
        teardown.callback(dockerd.stop)
        dockerd.docker("load", "-i", archive)
        dockers = {name: helpers.Docker(dockerd, target) for name, target in targets.items()}
        for docker in dockers.values():
            teardown.callback(docker.cleanup)
        commands[DOCKER] = {
            name: lambda docker=docker: docker.run("--rm", "--network", "none",
                                                   helpers.IMAGE, "true")
            for name, docker in dockers.items()}
    if CRI_POD_START in rows:
        try:
            from conformance.engines import cri
        except ImportError as error:
            print(f"skipping {CRI_POD_START!r}: {error}", file=sys.stderr)
        else:
            node, _ = helpers.start_cri_node(session / "cri", store, archive, runtimes)
            teardown.callback(node.stop)
            client = cri.Client(node.socket)
            teardown.callback(client.close)
            every_pod = {name: cri.Pods(client, name, session / "cri-logs")
                         for name in [*runtimes, PYOCI_SHIM]}
            for pods in every_pod.values():
                teardown.callback(pods.remove_all)
            commands[CRI_POD_START] = {
                name: lambda pods=pods: pod_start_and_teardown(pods, cri.grpc.RpcError)
                for name, pods in every_pod.items()}
    return commands


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--runtime", action="append", dest="runtimes", metavar="PATH",
                        type=os.path.abspath,
                        help="a runtime binary (repeatable; default: $OCI_ENGINE_RUNTIMES, "
                             "else runc and pyoci); the first is the ratios' base")
    args = parser.parse_args()
    # A SIGTERM (timeout, kill) unwinds as ^C does: containers and daemons are torn down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    paths = args.runtimes or helpers.runtimes_under_test()
    runtimes = {helpers.runtime_id(path): path for path in paths}
    results = measure_engines(runtimes, args.runs)

    memory = results.pop(SHIM_MEMORY, {})
    columns = list(runtimes) + ([PYOCI_SHIM] if {CTR, CRI_POD_START} & results.keys() else [])
    base, *others = columns
    print(f"{'median of ' + str(args.runs):<24}"
          + "".join(f"{name:>12}" for name in columns)
          + "".join(f"{name + '/' + base:>16}" for name in others))
    for row, medians in results.items():
        times = (f"{medians[name] * 1000:>10.0f}ms" if name in medians else f"{'-':>12}"
                 for name in columns)
        ratios = (f"{medians[name] / medians[base]:>16.2f}" if {name, base} <= medians.keys()
                  else f"{'-':>16}" for name in others)
        print(f"{row:<24}" + "".join(times) + "".join(ratios))
    if memory:
        print(f"\n{'one pod shim, MiB':<24}" + "".join(f"{key:>14}" for key in next(
            iter(memory.values()))))
        for name, values in memory.items():
            label = PYOCI_SHIM if name == PYOCI_SHIM else f"Go shim + {name}"
            print(f"{label:<24}" + "".join(f"{value:>14.1f}" for value in values.values()))


if __name__ == "__main__":
    main()
