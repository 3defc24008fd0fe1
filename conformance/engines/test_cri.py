"""Kubernetes' path: a CRI client doing what kubelet does for pods, against
containerd 1.6's CRI plugin, on three runtime handlers side by side:

- ``runc``: the Go shim (io.containerd.runc.v2) running runc, the reference;
- ``pyoci``: the Go shim with ``BinaryName`` = pyoci;
- ``pyoci-shim``: pyoci's own shim (io.containerd.pyoci.v2).

Pods get CNI's bridge (a bridge and subnet of the test's own, no default
route), a pause image built here from busybox (there is no registry), and
the image is present in containerd's store, so PullImage is asked only
where it is not (kubelet's IfNotPresent). After each test nothing of its
containers is left on the host.
"""
import os
import time

import pytest

from conformance.engines import helpers
from conformance.harness import RUNC

helpers.require_engine("containerd", "ctr", "containerd-shim-runc-v2")
cri = pytest.importorskip("conformance.engines.cri")

pytestmark = pytest.mark.engine

HANDLERS = ("runc", "pyoci", helpers.PYOCI_SHIM_HANDLER)


@pytest.fixture(scope="session")
def cri_node(engine_tmp, podman_store, image_archive):
    """containerd with CRI, its images imported, and the state roots of each handler."""
    node, roots = helpers.start_cri_node(engine_tmp / "cri", podman_store, image_archive,
                                         {"runc": RUNC, "pyoci": helpers.default_pyoci()})
    try:
        client = cri.Client(node.socket)
        yield node, client, roots
        client.close()
    finally:
        node.stop()


@pytest.fixture(params=HANDLERS)
def pods(request, cri_node, engine_tmp):
    node, client, roots = cri_node
    made = cri.Pods(client, request.param, engine_tmp / "cri-logs", roots[request.param])
    yield made
    made.remove_all()
    created = [(container_id, made.root) for container_id in made.ids]
    deadline = time.monotonic() + helpers.LEAK_TIMEOUT
    while (found := helpers.leftovers(created)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not found, f"left behind on {request.param}: {found}"


def read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def test_version(cri_node):
    _, client, _ = cri_node
    version = client.Version(version="v1")
    assert (version["runtime_name"], version["runtime_api_version"]) == ("containerd", "v1")


def test_a_pod_through_its_life(pods):
    sandbox, config = pods.run_pod("life")
    status = pods.client.PodSandboxStatus(pod_sandbox_id=sandbox)["status"]
    assert status["state"] == cri.SANDBOX_READY
    ip = status["network"]["ip"]
    assert ip.startswith(helpers.CriContainerd.SUBNET.rsplit(".", 1)[0] + "."), ip
    container = pods.start_container(sandbox, config, "main")
    assert pods.status(container)["state"] == cri.CONTAINER_RUNNING
    assert pods.exec_sync(container, "sh", "-c", "echo out; echo err >&2; exit 3") == \
        (3, "out\n", "err\n")
    assert pods.exec_sync(container, "hostname") == (0, "life\n", "")
    # Its own network namespace, its address, its gateway on the test's bridge; no default route.
    code, out, _ = pods.exec_sync(container, "sh", "-c", "ip -4 addr show eth0; ip route")
    assert code == 0 and f"inet {ip}/" in out and "default" not in out, out
    assert pods.exec_sync(container, "ping", "-c", "1", "-W", "5",
                          helpers.CriContainerd.GATEWAY)[0] == 0
    for _ in range(10):  # a liveness probe's loop, bounded
        assert pods.exec_sync(container, "true", timeout=10)[0] == 0
    stats = pods.client.ContainerStats(container_id=container)["stats"]
    assert stats["attributes"]["id"] == container
    assert stats["memory"]["working_set_bytes"]["value"] > 0
    assert stats["cpu"]["usage_core_nano_seconds"]["value"] > 0
    pods.client.UpdateContainerResources(container_id=container, linux=cri.LINUX_CONTAINER_RESOURCES.new(
        memory_limit_in_bytes=96 << 20, cpu_period=100000, cpu_quota=30000))
    pid = pods.pid(container)
    assert read_int(helpers.cgroup_file(pid, "memory", "memory.limit_in_bytes")) == 96 << 20
    assert read_int(helpers.cgroup_file(pid, "cpu", "cpu.cfs_quota_us")) == 30000
    pods.client.StopContainer(container_id=container, timeout=2)
    stopped = pods.status(container)
    assert stopped["state"] == cri.CONTAINER_EXITED and stopped["exit_code"] == 137
    pods.client.RemoveContainer(container_id=container)
    with open(pods.log_root / config["metadata"]["uid"] / "main.log") as log:
        assert log.read() == ""  # `sleep` wrote nothing: a log, and nothing else in it


def test_a_container_that_exits_and_its_log(pods):
    sandbox, config = pods.run_pod("exits")
    container = pods.start_container(sandbox, config, "once",
                                     ["sh", "-c", "echo to stdout; echo to stderr >&2; exit 4"])
    helpers.wait_until(lambda: pods.status(container)["state"] == cri.CONTAINER_EXITED,
                       "the container to exit")
    status = pods.status(container)
    assert (status["exit_code"], status["reason"]) == (4, "Error")
    with open(pods.log_root / config["metadata"]["uid"] / "once.log") as log:
        lines = [line.split(" ", 3)[1:] for line in log.read().splitlines()]
    assert sorted(lines) == [["stderr", "F", "to stderr"], ["stdout", "F", "to stdout"]]


def test_two_containers_of_a_pod_share_its_network_and_ipc(pods):
    sandbox, config = pods.run_pod("shared")
    first = pods.start_container(sandbox, config, "first")
    second = pods.start_container(sandbox, config, "second")

    def namespaces(container):
        code, out, _ = pods.exec_sync(container, "sh", "-c",
                                      "for n in net ipc mnt; do readlink /proc/self/ns/$n; done")
        assert code == 0
        return out.split()
    net_1, ipc_1, mnt_1 = namespaces(first)
    net_2, ipc_2, mnt_2 = namespaces(second)
    assert (net_1, ipc_1) == (net_2, ipc_2) and mnt_1 != mnt_2
    # The pod's /dev/shm (POSIX shared memory) is one for both.
    assert pods.exec_sync(first, "sh", "-c", "echo shared > /dev/shm/note")[0] == 0
    assert pods.exec_sync(second, "cat", "/dev/shm/note") == (0, "shared\n", "")


def test_a_pod_with_limits(pods):
    sandbox, config = pods.run_pod("limits")
    container = pods.start_container(sandbox, config, "limited", resources=cri.LINUX_CONTAINER_RESOURCES.new(
        cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory_limit_in_bytes=64 << 20))
    pid = pods.pid(container)
    assert read_int(helpers.cgroup_file(pid, "memory", "memory.limit_in_bytes")) == 64 << 20
    assert (read_int(helpers.cgroup_file(pid, "cpu", "cpu.cfs_quota_us")),
            read_int(helpers.cgroup_file(pid, "cpu", "cpu.cfs_period_us")),
            read_int(helpers.cgroup_file(pid, "cpu", "cpu.shares"))) == (50000, 100000, 512)



def test_a_container_killed_for_memory_is_oomkilled(pods):
    """Over its memory limit the kernel kills it; CRI says why from the
    shim's TaskOOM event."""
    sandbox, config = pods.run_pod("oom")
    container = pods.start_container(
        sandbox, config, "hog", ["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
        resources=cri.LINUX_CONTAINER_RESOURCES.new(memory_limit_in_bytes=32 << 20))
    helpers.wait_until(lambda: pods.status(container)["state"] == cri.CONTAINER_EXITED,
                       "the container to be killed")
    status = pods.status(container)
    assert (status["exit_code"], status["reason"]) == (137, "OOMKilled")


def test_exec_with_a_terminal_through_the_streaming_server(pods):
    """kubectl exec -it: Exec's URL, a websocket, a resize, keystrokes, the exit status."""
    sandbox, config = pods.run_pod("tty")
    container = pods.start_container(sandbox, config, "main")
    url = pods.client.Exec(container_id=container, tty=True, stdin=True, stdout=True,
                           cmd=["sh", "-c", f"tty; {helpers.STTY_SIZE_WHEN_SET}; read line; "
                                "echo got $line; exit 5"])["url"]
    code, output = cri.stream_exec(url, stdin=b"typed\r", size=(101, 33))
    assert code == 5, output
    assert "/dev/pts/" in output and "33 101" in output and "got typed" in output, output


def test_a_host_network_pod(pods):
    """namespace_options.network = NODE: the host's network namespace, no CNI;
    such a pod sets no hostname (the host's is kept)."""
    sandbox, config = pods.run_pod("hostnet", security_context=cri.LINUX_SANDBOX_SECURITY_CONTEXT.new(
        namespace_options=cri.NAMESPACE_OPTION.new(network=cri.NODE)), hostname="")
    container = pods.start_container(sandbox, config, "main")
    code, out, _ = pods.exec_sync(container, "readlink", "/proc/self/ns/net")
    assert (code, out.strip()) == (0, os.readlink("/proc/self/ns/net"))
    assert pods.exec_sync(container, "hostname")[1].strip() == os.uname().nodename
