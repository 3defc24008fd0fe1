"""linux.netDevices on the kernel (issue 9): a host interface (here one end
of a veth pair: this host has no dummy driver) moves into the container's
network namespace, renamed, with its permanent global addresses, and up.
runc 1.1.5 ignores the field: the spec's words are the check."""
import subprocess
import uuid

import pytest

from conformance.bundle import make_bundle, user_namespace
from conformance.harness import wait_until
from tests.pausing import create_paused, living_descendants

pytestmark = pytest.mark.root

SHOW = ["sh", "-c", "ip -o addr show; cat /sys/class/net/*/flags; ls /sys/class/net"]


@pytest.fixture
def veth():
    """(host end, peer) of a new veth pair; the host end has an IPv4 and an
    IPv6 address, both permanent and global."""
    tag = uuid.uuid4().hex[:6]
    end, peer = f"pv{tag}", f"pp{tag}"
    subprocess.run(["ip", "link", "add", end, "type", "veth", "peer", "name", peer], check=True)
    subprocess.run(["ip", "addr", "add", "10.213.7.1/24", "dev", end], check=True)
    subprocess.run(["ip", "addr", "add", "fd00:213::1/64", "dev", end, "nodad"], check=True)
    yield end, peer
    subprocess.run(["ip", "link", "del", peer], check=False, capture_output=True)


def exists(name):
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def with_devices(devices, userns=False):
    def mutate(config):
        config["linux"]["netDevices"] = devices
        if userns:
            user_namespace(config)
    return mutate


@pytest.mark.parametrize("userns", [False, True], ids=["root", "user-namespace"])
def test_a_host_device_moves_renamed_with_its_addresses_and_up(pyoci, scratch, veth, userns):
    end, peer = veth
    bundle = make_bundle(scratch / "b", ["sleep", "100"],
                         with_devices({end: {"name": "ctr0"}}, userns))
    container_id = pyoci.new_id()
    pyoci.run("run", "-d", "--bundle", bundle, container_id)
    assert not exists(end)
    seen = pyoci.run("exec", container_id, *SHOW).stdout
    assert "ctr0" in seen.split() and end not in seen
    addresses = [line for line in seen.splitlines() if " ctr0 " in line]
    assert any("inet 10.213.7.1/24" in line for line in addresses), seen
    assert any("inet6 fd00:213::1/64" in line for line in addresses), seen
    flags = pyoci.run("exec", container_id, "cat", "/sys/class/net/ctr0/flags").stdout
    assert int(flags, 16) & 0x1, "the spec: the device MUST be set up"
    pyoci.run("delete", "--force", container_id)
    # The spec: not moved back; the namespace's end takes a veth pair with it.
    wait_until(lambda: not exists(peer), "the veth pair to go with the namespace")


def test_without_a_name_the_host_name_is_kept(pyoci, scratch, veth):
    end, _ = veth
    bundle = make_bundle(scratch / "b", SHOW, with_devices({end: {}}))
    done = pyoci.run("run", "--bundle", bundle, pyoci.new_id())
    assert f" {end} " in done.stdout and "10.213.7.1/24" in done.stdout


def test_a_name_template_lets_the_kernel_number_it(pyoci, scratch, veth):
    end, _ = veth
    bundle = make_bundle(scratch / "b", SHOW, with_devices({end: {"name": "lo%d"}}))
    done = pyoci.run("run", "--bundle", bundle, pyoci.new_id())
    assert "lo0" in done.stdout.split(), done.stdout


@pytest.mark.parametrize("devices, words", [
    ({"pyoci-none0": {}}, "no network device 'pyoci-none0' on the host"),
    ({"VETH": {"name": "lo"}}, "a device named 'lo' exists in the container's network namespace"),
    ({"VETH": {"name": "a/b"}}, "is not a valid interface name"),
])
def test_bad_devices_are_one_line_and_leave_the_device_on_the_host(
        pyoci, scratch, veth, leak_check, devices, words):
    end, _ = veth
    devices = {end if name == "VETH" else name: entry for name, entry in devices.items()}
    bundle = make_bundle(scratch / "b", ["true"], with_devices(devices))
    done = pyoci.run("run", "--bundle", bundle, pyoci.new_id(), check=False)
    assert done.returncode == 1 and words in done.stderr and done.stderr.count("\n") == 1, \
        done.stderr
    assert exists(end)
    assert leak_check.leftovers() == {}


def test_moving_needs_a_network_namespace_of_the_containers_own(pyoci, scratch, veth):
    end, _ = veth

    def host_network(config):
        config["linux"]["netDevices"] = {end: {}}
        config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                         if ns["type"] != "network"]
    bundle = make_bundle(scratch / "b", ["true"], host_network)
    done = pyoci.run("run", "--bundle", bundle, pyoci.new_id(), check=False)
    assert done.returncode == 1 and "needs a network namespace" in done.stderr


def test_a_mount_failing_before_the_move_is_the_error_and_the_device_stays(
        pyoci, scratch, veth):
    """pyoci's init makes its first mounts while the runtime places it and
    moves the device: held there until a tmpfs mount has failed and init is
    gone, the mount's error is reported (not the move's into a namespace
    that is no more), and the device is still the host's."""
    end, _ = veth

    def mutate(config):
        with_devices({end: {}})(config)
        config["mounts"].insert(0, {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["size=abc"]})

    def until_init_has_failed(_, paused):
        wait_until(lambda: not living_descendants(paused), "init to fail its mount")
    bundle = make_bundle(scratch / "b", ["true"], mutate=mutate)
    code, errors, pauses = create_paused(pyoci, bundle, pyoci.new_id(), ["create:placing"],
                                         until_init_has_failed, scratch / "pause")
    assert (code, errors, pauses) == (1, ["mount tmpfs to /mnt: invalid argument"], 1)
    assert pyoci.listed_ids() == [] and exists(end)
