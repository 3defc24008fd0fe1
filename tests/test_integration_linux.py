"""Namespaces, cgroups, terminal and mounts on real containers (root)."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conformance.bundle import bind_mount, make_bundle, user_namespace
from conformance.harness import ConsoleSocket, read_until_closed

pytestmark = pytest.mark.root

CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def userns_probe(pyoci):
    """A Probe whose bundles a user namespace's root (host uid 100000) can reach:
    pytest's own temp tree is private to the host's root. /out is made in
    advance, since the mapped root may not create directories in a host-owned rootfs."""
    from conformance.harness import Probe
    directory = Path(tempfile.mkdtemp(prefix="pyoci-userns-"))
    directory.chmod(0o711)
    probe = Probe(pyoci, directory)
    make_bundle = probe.bundle

    def bundle(script):
        made = make_bundle(script, mutate=user_namespace)
        (made / "rootfs" / "out").mkdir()
        os.chown(made / "out", 100000, 100000)
        return made
    probe.bundle = bundle
    yield probe
    shutil.rmtree(directory)


def test_user_namespace_maps_ids(userns_probe):
    bundle = userns_probe.bundle("id -u; cat /proc/self/uid_map; touch /out/made-inside")
    lines = userns_probe.run_bundle(bundle).split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "100000", "65536"]
    assert (bundle / "out" / "made-inside").stat().st_uid == 100000


def test_init_is_not_dumpable_while_it_waits(pyoci, probe):
    """A process of the same unprivileged uid may read a dumpable process's
    environ, never a non-dumpable one's: waiting init is out of reach, and the
    program, once executed, is an ordinary process again."""
    def unprivileged(config):
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        config["process"]["capabilities"] = {}
    container_id = pyoci.new_id()
    bundle = probe.bundle("echo ran; while [ ! -e /out/stop ]; do sleep 0.05; done",
                          mutate=unprivileged)
    pyoci.create(container_id, bundle)
    pid = pyoci.state(container_id)["pid"]

    def environ_readable_by_same_uid():
        return subprocess.run(["cat", f"/proc/{pid}/environ"], user=1000, group=1000,
                              extra_groups=[], capture_output=True).returncode == 0
    assert not environ_readable_by_same_uid()
    pyoci.start(container_id)
    probe.wait_for_output(bundle, "ran")
    assert environ_readable_by_same_uid()
    probe.stop_program(bundle)


def test_time_namespace_offsets(probe):
    def offsets(config):
        config["linux"]["namespaces"].append({"type": "time"})
        config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    uptime = float(probe.run("cut -d' ' -f1 /proc/uptime", mutate=offsets))
    assert uptime > 86400 * 365


UNIFIED = (CGROUP_ROOT / "cgroup.controllers").exists()


def cgroup_dirs_of(path):
    """PATH in every cgroup hierarchy mounted here (one, on a cgroup v2 host)."""
    if UNIFIED:
        return [CGROUP_ROOT / path.lstrip("/")]
    return [hierarchy / path.lstrip("/") for hierarchy in sorted(CGROUP_ROOT.iterdir())
            if (hierarchy / "cgroup.procs").exists()]


def test_container_is_placed_in_its_cgroups_and_delete_removes_them(pyoci, probe):
    path = f"/pyoci-test/{pyoci.new_id()}"
    container_id = pyoci.new_id()
    bundle = probe.bundle("cat /proc/self/cgroup; sleep 100",
                          mutate=lambda c: c["linux"].update(cgroupsPath=path))
    pyoci.create(container_id, bundle)
    pid = pyoci.state(container_id)["pid"]
    directories = cgroup_dirs_of(path)
    assert directories
    for directory in directories:
        assert pid in [int(p) for p in (directory / "cgroup.procs").read_text().split()], directory
    pyoci.run("delete", "--force", container_id)
    assert not any(d.exists() for d in directories)
    for directory in cgroup_dirs_of("/pyoci-test"):
        directory.rmdir()


def test_default_cgroup_is_named_after_the_container(pyoci, probe):
    """As runc: the container id, below our own cgroup (v1) or beside it (v2)."""
    container_id, _ = probe.container("created")
    pid = pyoci.state(container_id)["pid"]
    own = dict(line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().splitlines())
    if "memory" in own:
        memory = CGROUP_ROOT / "memory" / own["memory"].lstrip("/") / container_id
    else:
        memory = CGROUP_ROOT / os.path.dirname(own[""]).lstrip("/") / container_id
    assert str(pid) in (memory / "cgroup.procs").read_text().split()


def test_cgroup_mount_shows_the_containers_own_cgroup(probe):
    def with_cgroup_mount(config):
        config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                                 "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]})
        config["linux"]["namespaces"].append({"type": "cgroup"})
    procs = "/sys/fs/cgroup/cgroup.procs" if UNIFIED else "/sys/fs/cgroup/memory/cgroup.procs"
    output = probe.run(f"cat /proc/self/cgroup; ls /sys/fs/cgroup; cat {procs}",
                       mutate=with_cgroup_mount)
    if UNIFIED:
        assert "0::/" in output.splitlines() and "cgroup.procs" in output.split()
    else:
        assert "4:memory:/" in output or ":memory:/\n" in output
        assert "memory" in output.split() and "pids" in output.split()
    assert "1" in output.split()  # init's pid, as the cgroup namespace shows it


def test_tmpcopyup_copies_image_content(probe):
    def tmpfs_etc(config):
        config["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                                 "options": ["tmpcopyup", "mode=755"]})
    output = probe.run("grep -c root /etc/passwd; grep ' /etc ' /proc/self/mounts | cut -d' ' -f3",
                       mutate=tmpfs_etc)
    assert output.split() == ["1", "tmpfs"]


def test_terminal_master_is_sent_to_the_console_socket(pyoci, tmp_path):
    """As runc: the pty master arrives by SCM_RIGHTS; the program's stdio is the slave."""
    console = ConsoleSocket(tmp_path / "console.sock")

    def terminal(config):
        config["process"]["terminal"] = True
        config["process"]["consoleSize"] = {"height": 33, "width": 101}
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "tty; stty size; test -t 0 && echo isatty"],
                         mutate=terminal)
    container_id = pyoci.new_id()
    pyoci.run("create", "--bundle", bundle, "--console-socket", console.path, container_id)
    master = console.received_master()
    pyoci.start(container_id)
    output = read_until_closed(master)
    os.close(master)
    assert console.name == b"/dev/ptmx"
    assert output.decode().split("\n")[:3] == ["/dev/pts/0", "33 101", "isatty"]


def test_terminal_without_console_socket_fails_cleanly(pyoci, probe, leak_check):
    bundle = probe.bundle("true", mutate=lambda c: c["process"].update(terminal=True))
    result = pyoci.run("create", "--bundle", bundle, pyoci.new_id(), check=False)
    assert result.returncode == 1
    assert "console socket" in result.stderr and result.stderr.count("\n") == 1
    assert leak_check.leftovers() == {}


def test_domainname_and_sysctl(probe):
    def settings(config):
        config["domainname"] = "example.test"
        config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    assert probe.run("cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward",
                     mutate=settings).split() == ["example.test", "1"]


def test_loopback_is_up_in_a_new_network_namespace(probe):
    assert "UP" in probe.run("ip link show lo")


BAD_INPUTS = {
    "invalid config": lambda c: c["linux"]["namespaces"].append({"type": "foo"}),
    "missing rootfs": lambda c: c["root"].update(path="no-such-rootfs"),
    "failing mount": lambda c: c["mounts"].append(bind_mount("/no/such/source", "/mnt")),
    "failing hook": lambda c: c.update(hooks={"createRuntime": [{"path": "/bin/false"}]}),
    "missing program": lambda c: c["process"].update(args=["no-such-program"]),
    "rlimit above the hard limit": lambda c: c["process"].update(
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 10**7, "hard": 10**7}]),
    "unreadable namespace path": lambda c: c["linux"]["namespaces"].__setitem__(
        0, {"type": "pid", "path": "/proc/self/ns/none"}),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_1_and_leaves_nothing(pyoci, probe, leak_check, case):
    bundle = probe.bundle("true", mutate=BAD_INPUTS[case])
    container_id = pyoci.new_id()
    result = pyoci.run("create", "--bundle", bundle, container_id, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.strip(), result.stderr
    assert not pyoci.exists(container_id)
    assert not (pyoci.root / container_id).exists()
    assert not any(d.exists() for d in cgroup_dirs_of(container_id))
    assert leak_check.leftovers() == {}


def test_missing_program_error_names_the_errno_text_podman_maps(pyoci, probe):
    bundle = probe.bundle("true", mutate=lambda c: c["process"].update(args=["/no/such/program"]))
    result = pyoci.run("create", "--bundle", bundle, pyoci.new_id(), check=False)
    assert "no such file or directory" in result.stderr


@pytest.mark.parametrize("bad_id", ["..", "a b", "x/y", ""])
def test_bad_id_message(pyoci, probe, bad_id):
    result = pyoci.run("create", "--bundle", probe.bundle("true"), bad_id, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("invalid container ID format")


def test_unknown_signal_message(pyoci, probe):
    container_id, _ = probe.container("created")
    result = pyoci.run("kill", container_id, "SIGNOPE", check=False)
    assert (result.returncode, result.stderr) == (1, "unknown signal 'SIGNOPE'\n")
    assert pyoci.state(container_id)["status"] == "created"


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_seccomp_filter_applies_to_the_program(probe, no_new_privileges):
    """Loaded by the waiter just before exec (no_new_privs) or by init before
    the capabilities go (without): either way the program runs under it."""
    def filtered(config):
        config["process"]["noNewPrivileges"] = no_new_privileges
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    output = probe.run("grep Seccomp: /proc/self/status; /bin/pwd", mutate=filtered)
    assert "Seccomp:\t2" in output
    assert "Permission denied" in output


def test_docker_profile_runs_busybox(probe):
    sample = Path(__file__).resolve().parents[2] / "shared/engines/sample-docker-config.json"
    if not sample.exists():
        pytest.skip("engine samples not present")
    import json
    profile = json.loads(sample.read_text())["linux"]["seccomp"]
    output = probe.run("echo works; unshare -u true 2>&1 || echo refused",
                       mutate=lambda c: c["linux"].update(seccomp=profile))
    assert output.split("\n")[0] == "works"
    assert "refused" in output


def test_without_a_mount_namespace_the_container_is_only_chrooted(pyoci, tmp_path):
    """As runc: no mounts are made (they would land in the host's table);
    the process is chrooted into the root filesystem."""
    def share_mounts(config):
        config["linux"]["namespaces"] = [{"type": "pid"}, {"type": "uts"}]
        config["linux"]["maskedPaths"] = []
        config["linux"]["readonlyPaths"] = []
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "ls /; ls /proc | wc -l"], mutate=share_mounts)
    before = Path("/proc/self/mountinfo").read_text()
    result = subprocess.run(pyoci.argv + ["run", "--bundle", str(bundle), pyoci.new_id()],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "bin" in result.stdout.split() and "work" not in result.stdout.split()
    assert result.stdout.split()[-1] == "0", "nothing mounted on the rootfs's /proc"
    assert Path("/proc/self/mountinfo").read_text() == before


def test_empty_capabilities_object_drops_every_capability(probe):
    """What podman and Docker write for --cap-drop ALL; without no_new_privs, a
    root program would take back from the bounding set whatever remained there."""
    def drop_all(config):
        config["process"]["capabilities"] = {}
        config["process"]["noNewPrivileges"] = False
    output = probe.run("grep -E '^Cap(Prm|Eff|Bnd|Amb)' /proc/self/status", mutate=drop_all)
    assert [line.split()[1] for line in output.splitlines()] == ["0000000000000000"] * 4
