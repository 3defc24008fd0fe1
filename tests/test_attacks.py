"""Escapes a hostile container or image attempts, for real, judged on the
host: the runtime's own executable through /proc/PID/exe (CVE-2019-5736),
host fds and a cwd through /proc/self/fd (CVE-2024-21626), symlinks in the
root filesystem that point out of it where pyoci mounts, masks or makes
files (CVE-2025-31133 / 52565), and writes meant for procfs sent elsewhere
by a mount over /proc (CVE-2025-52881). runc runs beside pyoci where it
has the same protection."""
import hashlib
import os
import sys
from pathlib import Path

import pytest

from conformance.bundle import bind_mount, tmpfs_mount
from conformance.harness import OUT, PYOCI, RUNC, Probe, private_runtime, wait_until

pytestmark = pytest.mark.root

RUNTIMES = {"pyoci": PYOCI, "runc": RUNC}


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def host_files():
    """What a write through a runtime process's exe would hit."""
    import pyoci._native
    return [os.path.realpath(sys.executable), PYOCI, pyoci._native.__file__]


# Each pass: every process's exe the container can read, not its own busybox,
# is noted and written to; the names of all it sees, too.
REACH_EXE = f"""
while [ ! -e {OUT}/stop ]; do
  for p in /proc/[0-9]*; do
    [ "$p" = /proc/$$ ] && continue
    cat $p/comm >> {OUT}/seen 2>/dev/null
    t=$(readlink $p/exe 2>/dev/null) || continue
    [ "$t" = /bin/busybox ] && continue
    echo "$p $t" >> {OUT}/reached
    echo pwned 2>/dev/null >> $p/exe && echo "$p $t" >> {OUT}/wrote
  done
done
"""


@pytest.mark.parametrize("name", RUNTIMES)
def test_runtime_executable_out_of_reach(name, tmp_path):
    """While `exec` enters the container again and again, its processes are
    visible in the container's pid namespace, but their executables (and
    fds, maps) are not the container's to open: they are non-dumpable."""
    before = {path: digest(path) for path in host_files()}
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path)
        bundle = probe.bundle(REACH_EXE)
        container_id = runtime.new_id()
        runtime.create(container_id, bundle)
        runtime.start(container_id)
        for _ in range(20):
            runtime.run("exec", container_id, "true")
        probe.stop_program(bundle)
        runtime.wait_for_status(container_id, "stopped")
    out = Path(bundle) / "out"
    seen = set((out / "seen").read_text().split())
    assert seen - {"sh", "cat", "readlink", "busybox", "true"}, "no exec was ever seen"
    assert not (out / "reached").exists(), (out / "reached").read_text()
    assert not (out / "wrote").exists()
    assert {path: digest(path) for path in host_files()} == before


@pytest.mark.parametrize("name", RUNTIMES)
def test_no_host_fd_reaches_the_container(name, tmp_path):
    """Init's and an exec'd process's fds above stdio: none."""
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path)
        bundle = probe.bundle("echo ran; exec sleep 1000")
        container_id = runtime.new_id()
        runtime.create(container_id, bundle)
        runtime.start(container_id)
        probe.wait_for_output(bundle, "ran")
        init = runtime.state(container_id)["pid"]
        runtime.run("exec", "--detach", container_id, "sleep", "1000")
        exec_pid = wait_until(lambda: next((int(p.name) for p in Path("/proc").glob("[0-9]*")
                                            if p.name != str(init) and _is_exec_sleep(p, init)),
                                           None), "the exec'd sleep")
        for pid in (init, exec_pid):
            extra = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd") if int(fd) > 2)
            assert extra == [], [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in extra]
        runtime.run("delete", "--force", container_id)


def _is_exec_sleep(proc_dir, init):
    """A `sleep 1000` in init's pid namespace that is not init."""
    try:
        same_ns = os.readlink(proc_dir / "ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
        return same_ns and (proc_dir / "cmdline").read_bytes() == b"sleep\x001000\x00"
    except OSError:
        return False


@pytest.mark.parametrize("name", RUNTIMES)
@pytest.mark.parametrize("fd", [3, 4, 5, 6, 7, 8])
def test_cwd_through_proc_self_fd_stays_in_the_container(name, fd, tmp_path):
    """process.cwd /proc/self/fd/N: refused, or a directory of the container."""
    def cwd(config):
        config["process"]["cwd"] = f"/proc/self/fd/{fd}"
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path)
        bundle = probe.bundle("pwd; ls -a", cwd)
        container_id = runtime.new_id()
        created = runtime.run("run", "--bundle", bundle, container_id, check=False)
        runtime.run("delete", "--force", container_id, check=False)
    output = probe.output(bundle) if probe.output_path(bundle).exists() else ""
    if created.returncode == 0:
        # Wherever it is, it sees no host directory: the host's /etc has far
        # more than the container's root (bin dev etc out proc root sys tmp).
        assert "passwd" not in output and "shadow" not in output, output
        assert "pyoci-test" not in output and "pytest" not in output, output


# ------------------------------------------------ links out of the rootfs
def escape_links(rootfs, host_dir):
    """Absolute and ..-laden links from the image to HOST_DIR, where pyoci
    mounts, masks, marks read-only and makes mount points and device nodes."""
    (rootfs / "mnt").mkdir(exist_ok=True)
    (rootfs / "mnt" / "abs").symlink_to(host_dir)
    (rootfs / "mnt" / "rel").symlink_to("../" * 12 + str(host_dir).lstrip("/"))


@pytest.mark.parametrize("name", RUNTIMES)
def test_links_out_of_the_rootfs_stay_inside(name, tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "victim").write_text("host's\n")
    source = tmp_path / "source"
    source.mkdir()
    (source / "file").write_text("bound\n")

    def mutate(config):
        for link in ("abs", "rel"):
            config["mounts"] += [
                bind_mount(source, f"/mnt/{link}/dir"),
                bind_mount(source / "file", f"/mnt/{link}/file"),
                tmpfs_mount(f"/mnt/{link}/tmp"),
            ]
            config["linux"]["maskedPaths"] += [f"/mnt/{link}/victim", f"/mnt/{link}/masked"]
            config["linux"]["readonlyPaths"] += [f"/mnt/{link}"]
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path / name)
        bundle = probe.bundle("ls /mnt/abs/dir /mnt/rel/dir; cat /mnt/abs/file", mutate)
        escape_links(Path(bundle) / "rootfs", host_dir)
        runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
    assert sorted(os.listdir(host_dir)) == ["victim"]
    assert (host_dir / "victim").read_text() == "host's\n"
    assert "\n" + str(host_dir) not in Path("/proc/self/mountinfo").read_text()


@pytest.mark.parametrize("name", RUNTIMES)
def test_device_nodes_through_links_stay_inside(name, tmp_path):
    """Without a /dev mount the image's /dev is used: its links to the host
    must not become the host's device nodes."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()

    def no_dev_mount(config):
        config["mounts"] = [m for m in config["mounts"]
                            if not m["destination"].startswith("/dev")]
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path / name)
        bundle = probe.bundle("ls -l /dev", no_dev_mount)
        dev = Path(bundle) / "rootfs" / "dev"
        for node in ("null", "zero", "full", "random", "urandom", "tty"):
            (dev / node).symlink_to(host_dir / node)
        runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
    assert os.listdir(host_dir) == []


def test_sysctl_write_never_lands_under_a_mount_over_proc(tmp_path):
    """A bind mount over part of /proc/sys (a host directory) would take the
    runtime's sysctl write: pyoci refuses to write anywhere but procfs."""
    fake = tmp_path / "fake-net"
    (fake / "ipv4").mkdir(parents=True)
    (fake / "ipv4" / "ip_forward").write_text("host's\n")

    def mutate(config):
        config["mounts"].append(bind_mount(fake, "/proc/sys/net"))
        config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    with private_runtime(PYOCI) as runtime:
        probe = Probe(runtime, tmp_path)
        bundle = probe.bundle("true", mutate)
        created = runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
    assert (fake / "ipv4" / "ip_forward").read_text() == "host's\n"
    assert created.returncode == 1
    assert created.stderr.strip().splitlines() == [
        "/proc/sys/net/ipv4/ip_forward: not a file of the procfs at /proc: something is "
        "mounted over it"]


@pytest.mark.parametrize("name", RUNTIMES)
@pytest.mark.parametrize("link", ["abs", "rel"])
def test_cwd_through_a_link_out_of_the_rootfs_stays_inside(name, link, tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()

    def cwd(config):
        config["process"]["cwd"] = f"/mnt/{link}"
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path / name)
        bundle = probe.bundle("touch written; pwd", cwd)
        escape_links(Path(bundle) / "rootfs", host_dir)
        runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
    assert os.listdir(host_dir) == []


@pytest.mark.parametrize("name", RUNTIMES)
def test_user_lookup_through_a_link_out_of_the_rootfs(name, tmp_path):
    """HOME comes from the container's /etc/passwd: a link from it to a host
    file is resolved in the container's root, never on the host."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "passwd").write_text("root:x:0:0:root:/host-home:/bin/sh\n")

    def no_home(config):
        config["process"]["env"] = [e for e in config["process"]["env"]
                                    if not e.startswith("HOME=")]
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path / name)
        bundle = probe.bundle('echo "HOME=$HOME"', no_home)
        passwd = Path(bundle) / "rootfs" / "etc" / "passwd"
        passwd.unlink()
        passwd.symlink_to(host_dir / "passwd")
        runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
        output = probe.output(bundle)
    assert "host-home" not in output, output
