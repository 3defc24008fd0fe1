"""Fixtures for the engine tests: the runtime under test, a local busybox image, engine daemons.

``runtime_binary`` is parametrised over the runtimes to test: runc and pyoci,
or the comma-separated paths in $OCI_ENGINE_RUNTIMES.  Engines reach each
runtime through a logging shim (helpers.RuntimeShim); a failing test's report
gets a "runtime calls" section listing what the engine asked of the runtime.

Session-wide, created on first use and torn down at the end: one temporary
directory holding everything, podman/buildah storage with the image imported,
a docker-archive of it, a containerd and a dockerd (stopped by pid).  After
every test, the engine removes what the test left, then the leak check looks
for state dirs, cgroups, processes and mounts of every container the runtime
was asked to create during the test.

$OCI_ENGINE_KEEP_LOGS=DIR copies the runtime call logs and daemon logs there
at the end of the session.
"""
import os
import shutil
from pathlib import Path

import pytest

from conformance.engines import helpers

RUNTIMES = helpers.runtimes_under_test()


@pytest.fixture(scope="session")
def engine_tmp():
    directory = helpers.new_session_dir()
    yield directory
    keep = os.environ.get("OCI_ENGINE_KEEP_LOGS")
    if keep:
        keep = Path(keep)
        keep.mkdir(parents=True, exist_ok=True)
        for pattern in ("shims/*/calls.jsonl", "*/*.log"):
            for log in directory.glob(pattern):
                shutil.copy(log, keep / f"{log.parent.name}-{log.name}")
    helpers.unmount_under(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def shims(engine_tmp):
    """A logging shim for every runtime under test that exists, keyed by the runtime's path."""
    return {path: helpers.RuntimeShim(path, engine_tmp / "shims" / helpers.runtime_id(path))
            for path in RUNTIMES if os.access(path, os.X_OK)}


@pytest.fixture(scope="session", params=RUNTIMES, ids=[helpers.runtime_id(p) for p in RUNTIMES])
def runtime_binary(request):
    """Path of the runtime under test."""
    if not os.access(request.param, os.X_OK):
        pytest.skip(f"runtime {request.param} is not installed")
    return request.param


@pytest.fixture
def runtime_shim(runtime_binary, shims, request):
    """The runtime under test as engines call it; notes where this test's calls start."""
    shim = shims[runtime_binary]
    request.node.engine_calls = (shim, shim.mark())
    return shim


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    entry = getattr(item, "engine_calls", None)
    if entry is None or not (report.failed or hasattr(report, "wasxfail")):
        return
    shim, start = entry
    calls = shim.calls(start)
    failed = shim.format_calls(calls, only_failed=True)
    report.sections.append((f"runtime calls that failed ({shim.name})", failed or "(none)"))
    report.sections.append((f"all runtime calls ({shim.name})",
                            shim.format_calls(calls) or "(none)"))


# ---------------------------------------------------------------- podman, buildah

@pytest.fixture(scope="session")
def podman_store(engine_tmp):
    store = helpers.PodmanStore(engine_tmp / "podman")
    store.import_image(engine_tmp / "image")
    yield store
    store.close()


@pytest.fixture(scope="session")
def image_archive(podman_store, engine_tmp):
    """The test image as a docker-archive, for ``ctr images import`` and ``docker load``."""
    return podman_store.save_docker_archive(engine_tmp / "image" / "busybox.docker.tar")


@pytest.fixture
def podman(podman_store, runtime_shim):
    engine = helpers.Podman(podman_store, runtime_shim)
    start = runtime_shim.mark()
    yield engine
    engine.cleanup()
    helpers.assert_nothing_left(runtime_shim, start)


@pytest.fixture
def buildah(podman_store, runtime_shim):
    engine = helpers.Buildah(podman_store, runtime_shim)
    start = runtime_shim.mark()
    yield engine
    engine.cleanup()
    helpers.assert_nothing_left(runtime_shim, start)


# ---------------------------------------------------------------- containerd

@pytest.fixture(scope="session")
def containerd_daemon(engine_tmp):
    daemon = helpers.ContainerdDaemon(engine_tmp / "containerd")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def ctr_image(containerd_daemon, image_archive, engine_tmp):
    helpers.run([helpers.tool("ctr"), "--address", containerd_daemon.socket, "--namespace",
                 helpers.Ctr.NAMESPACE, "images", "import", image_archive])
    return helpers.IMAGE


@pytest.fixture
def ctr(containerd_daemon, ctr_image, runtime_shim, engine_tmp):
    engine = helpers.Ctr(containerd_daemon, runtime_shim, engine_tmp / "ctr-runtime-root")
    start = runtime_shim.mark()
    yield engine
    engine.cleanup()
    helpers.assert_nothing_left(runtime_shim, start)


# ---------------------------------------------------------------- docker

@pytest.fixture(scope="session")
def docker_daemon(engine_tmp, containerd_daemon, shims, image_archive):
    daemon = helpers.DockerDaemon(engine_tmp / "docker", containerd_daemon, list(shims.values()))
    try:
        daemon.docker("load", "-i", image_archive)
    except Exception:
        daemon.stop()
        raise
    yield daemon
    daemon.stop()


@pytest.fixture
def docker(docker_daemon, runtime_shim):
    engine = helpers.Docker(docker_daemon, runtime_shim)
    start = runtime_shim.mark()
    yield engine
    engine.cleanup()
    helpers.assert_nothing_left(runtime_shim, start)
