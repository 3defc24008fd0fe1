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
from conformance.harness import (OUT, PYOCI, RUNC, ConsoleSocket, Probe, private_runtime,
                                 wait_until)
from tests.pausing import create_paused, mount_points

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


# With CAP_SYS_PTRACE the container may open an entering process's exe: it
# holds it open until that process (and its exec command) is gone, then opens it again for
# writing (while anything executes the file the kernel says it is busy).
HOLD_EXE = f"""
while [ ! -e {OUT}/stop ]; do
  for p in /proc/[0-9]*; do
    [ "$p" = /proc/$$ ] && continue
    t=$(readlink $p/exe 2>/dev/null) || continue
    [ "$t" = /bin/busybox ] && continue
    ( exec 3<$p/exe || exit
      echo "$p $t" >> {OUT}/reached
      stat -L -c '%d %i' /proc/self/fd/3 >> {OUT}/reached-files
      while [ -e $p ]; do :; done; sleep 1  # and the exec command that waited for it
      echo pwned >> /proc/self/fd/3 && echo "$p $t" >> {OUT}/wrote ) 2>> {OUT}/errors
  done
done
"""


def assert_nothing_written(name, out, host_digests):
    """No write through a held exe landed, and (for pyoci) none of what was
    held is a host file at all."""
    assert not (out / "wrote").exists(), (out / "wrote").read_text()
    assert {path: digest(path) for path in host_files()} == host_digests
    if name == "pyoci":
        reached = set((out / "reached-files").read_text().splitlines())
        host = {f"{os.stat(path).st_dev} {os.stat(path).st_ino}" for path in host_files()}
        assert not reached & host, (out / "reached").read_text()


def add_ptrace(config):
    for caps in config["process"]["capabilities"].values():
        caps.append("CAP_SYS_PTRACE")


@pytest.mark.parametrize("name", RUNTIMES)
@pytest.mark.parametrize("given", ["container", "exec"])
def test_runtime_executable_out_of_reach_of_ptrace(name, given, tmp_path):
    """CAP_SYS_PTRACE in the host's user namespace (no user namespace of the
    container's own), given to the container or to one exec: the entering
    processes' exe can be opened and held, but no write through it lands.
    pyoci's is a sealed memfd copy of the interpreter, not the host's file;
    runc 1.1.5's is its own binary on a read-only bind mount (a write finds
    it busy, or read-only)."""
    before = {path: digest(path) for path in host_files()}
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path)
        bundle = probe.bundle(HOLD_EXE, add_ptrace if given == "container" else None)
        container_id = runtime.new_id()
        runtime.create(container_id, bundle)
        runtime.start(container_id)
        out = Path(bundle) / "out"
        if given == "exec":  # its process stays, able to reach later execs
            runtime.run("exec", "--detach", "--cap", "CAP_SYS_PTRACE", container_id,
                        "sh", "-c", HOLD_EXE)
        for _ in range(200):
            runtime.run("exec", container_id, "true")
            if (out / "reached").exists() and len((out / "reached").read_text().split("\n")) > 3:
                break
        probe.stop_program(bundle)
        runtime.run("delete", "--force", container_id)
    assert (out / "reached").exists(), "no entering process was ever reached"
    assert_nothing_written(name, out, before)


@pytest.mark.parametrize("name", RUNTIMES)
def test_init_joining_a_pid_namespace_out_of_reach_of_ptrace(name, tmp_path):
    """A container created into another's pid namespace (a pod's) is seen
    there by a process with CAP_SYS_PTRACE while it is created: its init,
    kept by a startContainer hook until start, is pyoci or runc itself."""
    before = {path: digest(path) for path in host_files()}
    with private_runtime(RUNTIMES[name]) as runtime:
        probe = Probe(runtime, tmp_path)
        holder = probe.bundle(HOLD_EXE, add_ptrace)
        holder_id = runtime.new_id()
        runtime.create(holder_id, holder)
        runtime.start(holder_id)
        holder_pid = runtime.state(holder_id)["pid"]

        def join_holder(config):
            for ns in config["linux"]["namespaces"]:
                if ns["type"] == "pid":
                    ns["path"] = f"/proc/{holder_pid}/ns/pid"
            config["hooks"] = {"startContainer": [{"path": "/bin/true"}]}
        joiner_id = runtime.new_id()
        runtime.create(joiner_id, probe.bundle("true", join_holder))
        out = Path(holder) / "out"
        wait_until(lambda: (out / "reached-files").exists(), "the holder reaching the init")
        runtime.run("delete", "--force", joiner_id)
        probe.stop_program(holder)
        runtime.run("delete", "--force", holder_id)
    assert_nothing_written(name, out, before)


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


# ------------------------------------------ swapped for a link while pyoci works
# A process that shares the rootfs or a volume (here: the test, on the host)
# swaps a path pyoci is mounting on for a link, at pyoci's pause points
# (log.pause_point; runc 1.1.5 has none, so these run on pyoci alone).
def test_mount_point_swapped_before_mounting_is_not_followed(tmp_path):
    """Between pinning /srv/volume and mounting on it, it becomes a link to
    a host directory: the mount goes on the directory pinned (inside the
    rootfs, wherever it was moved), never on the host's, and create says
    the place is no longer what it mounted."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    source = tmp_path / "volume"
    source.mkdir()
    seen = {}
    with private_runtime(PYOCI) as runtime:
        probe = Probe(runtime, tmp_path / "p")
        bundle = probe.bundle("true", lambda c: c["mounts"].insert(
            0, bind_mount(source, "/srv/volume")))
        rootfs = Path(bundle) / "rootfs"
        (rootfs / "srv" / "volume").mkdir(parents=True)

        def swap(count, pid):
            if count == 0:  # the place is pinned
                os.rename(rootfs / "srv" / "volume", rootfs / "srv" / "moved")
                (rootfs / "srv" / "volume").symlink_to(host_dir)
            else:  # mounted: where did it go?
                seen["mounts"] = mount_points(pid)
        code, errors, pauses = create_paused(
            runtime, bundle, runtime.new_id(),
            ["init:mount-point=/srv/volume", "init:mounted=/srv/volume"], swap, tmp_path / "fifo")
    assert pauses == 2
    assert str(host_dir) not in seen["mounts"]
    assert str(rootfs / "srv" / "moved") in seen["mounts"]
    assert code == 1 and len(errors) == 1 and "/srv/volume" in errors[0], errors
    assert "no longer the mount" in errors[0] or "opened again" in errors[0], errors
    assert os.listdir(host_dir) == []


def test_read_only_bind_swapped_after_mounting_is_not_left_writable(tmp_path):
    """A read-only volume: once bound, its mount point is moved aside and
    a link to the rootfs (a mount root) put in its place, so that a
    remount by path would make some other mount read-only and leave the
    volume writable. pyoci refuses; the volume's files are untouched."""
    source = tmp_path / "volume"
    source.mkdir()
    (source / "data").write_text("host's\n")
    with private_runtime(PYOCI) as runtime:
        probe = Probe(runtime, tmp_path / "p")
        bundle = probe.bundle("echo pwned > /srv/volume/data; echo pwned > /srv/moved/data",
                              lambda c: c["mounts"].insert(0, bind_mount(source, "/srv/volume",
                                                                         "ro")))
        rootfs = Path(bundle) / "rootfs"
        (rootfs / "srv" / "volume").mkdir(parents=True)

        def swap(count, pid):
            os.rename(rootfs / "srv" / "volume", rootfs / "srv" / "moved")
            (rootfs / "srv" / "volume").symlink_to(rootfs)
        container_id = runtime.new_id()
        code, errors, pauses = create_paused(runtime, bundle, container_id,
                                             ["init:mounted=/srv/volume"], swap, tmp_path / "fifo")
        if code == 0:
            runtime.start(container_id)
            runtime.wait_for_status(container_id, "stopped")
    assert pauses == 1
    assert (source / "data").read_text() == "host's\n"
    assert code == 1 and len(errors) == 1 and "/srv/volume" in errors[0], errors


HOST_SYSCTL = Path("/proc/sys/kernel/core_uses_pid")


def test_dev_null_linked_into_proc_is_not_bound_over_masked_paths(tmp_path):
    """An engine's /dev bind whose null is a link to a host-wide sysctl:
    binding "/dev/null" over the masked paths would hand the container
    that sysctl, writable (CVE-2025-31133; runc 1.1.5 predates the fix,
    so pyoci runs alone). pyoci checks /dev/null is the null device."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "null").symlink_to("/proc/sys/kernel/core_uses_pid")
    before = HOST_SYSCTL.read_text()
    flipped = "0" if before.strip() == "1" else "1"

    def bind_dev(config):
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]
        config["mounts"].insert(1, bind_mount(dev, "/dev"))
    try:
        with private_runtime(PYOCI) as runtime:
            probe = Probe(runtime, tmp_path / "p")
            bundle = probe.bundle(f"echo {flipped} > /proc/kcore; echo {flipped} > /proc/timer_list",
                                  bind_dev)
            result = runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
        assert HOST_SYSCTL.read_text() == before
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1 and "/dev/null is not the null device" in result.stderr
    finally:
        HOST_SYSCTL.write_text(before)


def test_dev_console_linked_into_proc_is_not_mounted_over(tmp_path):
    """With the image's own /dev, /dev/console a link to a procfs file: the
    console bind would cover that file before the masks (CVE-2025-52565).
    pyoci refuses a /dev/console that is a link."""
    console = ConsoleSocket(tmp_path / "console.sock")

    def image_dev_and_terminal(config):
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]
        config["process"]["terminal"] = True
    with private_runtime(PYOCI) as runtime:
        probe = Probe(runtime, tmp_path / "p")
        bundle = probe.bundle("true", image_dev_and_terminal)
        (Path(bundle) / "rootfs" / "dev" / "console").symlink_to("/proc/sys/kernel/core_uses_pid")
        result = runtime.run("create", "--bundle", bundle, "--console-socket", console.path,
                             runtime.new_id(), check=False)
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "/dev/console is a symbolic link" in result.stderr
