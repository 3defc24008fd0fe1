"""checkpoint and restore with CRIU, on pyoci and on runc in the same test.

CRIU 3.17 runs only where `criu check` passes: the cgroup v2 VM's 6.1
kernel (make test-v2), not this host's newer one (its vdso). On such a host
the scenarios are skipped, and the one test that needs CRIU to fail checks
that a checkpoint's refusal is one line quoting CRIU and leaves the
container running.

A container's stdio must be something CRIU can dump: its own /dev/null
(the programs below redirect to it first), a pipe, or a terminal.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conformance.bundle import bind_mount, join_namespace, make_bundle
from conformance.harness import (PYOCI, RUNC, WAIT_TIMEOUT, ConsoleSocket, criu_problem,
                                 private_runtime, wait_until)
from tests.pausing import living_descendants

pytestmark = [pytest.mark.root, pytest.mark.vm]


CRIU_PROBLEM = criu_problem()
needs_criu = pytest.mark.skipif(CRIU_PROBLEM is not None,
                                reason=f"criu check fails on this kernel: {CRIU_PROBLEM}")

QUIET = "exec </dev/null >/dev/null 2>&1; "
# Written aside and renamed: a checkpoint may freeze the program between a
# truncating redirection and its write, which would leave the file empty.
COUNTER = QUIET + ("i=0; while true; do i=$((i+1)); echo $i > {file}.new; "
                   "mv {file}.new {file}; sleep 0.1; done")


@pytest.fixture(params=["pyoci", "runc"])
def runtime(request):
    with private_runtime(PYOCI if request.param == "pyoci" else RUNC) as runtime:
        yield runtime


def counter_bundle(directory, file="/count", mutate=None):
    return make_bundle(directory, ["sh", "-c", COUNTER.format(file=file)], mutate)


def count(path):
    def read():
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None
    return wait_until(read, f"a count in {path}")


def counting_past(path, value):
    """The count, once it has gone past VALUE: the program runs (on)."""
    return wait_until(lambda: (count(path) if count(path) > value else None),
                      f"{path} to count past {value}", timeout=WAIT_TIMEOUT * 3)


def running_counter(runtime, tmp_path, past, mutate=None):
    """(bundle, its count file, id) of a detached counter that has counted PAST."""
    bundle = counter_bundle(tmp_path / "bundle", mutate=mutate)
    counted = bundle / "rootfs" / "count"
    container_id = runtime.new_id()
    run_detached(runtime, container_id, bundle)
    counting_past(counted, past)
    return bundle, counted, container_id


def run_detached(runtime, container_id, bundle, *flags):
    runtime.container_ids.add(container_id)
    runtime.run("run", "--detach", "--bundle", bundle, *flags, container_id)


def restore(runtime, container_id, bundle, images, *flags):
    runtime.container_ids.add(container_id)
    return runtime.run("restore", "--detach", "--bundle", bundle, "--image-path", images,
                       *flags, container_id)


def still(path, value):
    """The count stays at VALUE while nothing runs it."""
    time.sleep(0.5)
    assert count(path) == value


@needs_criu
def test_counter_checkpointed_and_restored_counts_on(runtime, tmp_path):
    """Also: the createRuntime hook runs again on restore, once CRIU has made
    the namespaces, with the restored process's pid."""
    hooked = tmp_path / "hooked"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"cat >> {hooked}; echo >> {hooked}"]}
    bundle, counted, container_id = running_counter(
        runtime, tmp_path, 3, lambda config: config.update(hooks={"createRuntime": [hook]}))
    images = tmp_path / "images"
    runtime.run("checkpoint", "--image-path", images, container_id)
    assert not runtime.exists(container_id)  # checkpointed: gone, as runc
    saved = count(counted)
    still(counted, saved)
    assert json.loads((images / "descriptors.json").read_text())[0] == "/dev/null"
    restore(runtime, container_id, bundle, images)
    state = runtime.state(container_id)
    assert state["status"] == "running"
    created, restored = map(json.loads, hooked.read_text().splitlines())
    assert restored["pid"] == state["pid"] != created["pid"]
    counting_past(counted, saved)  # from where it was: a new start would count from 1
    assert count(counted) < saved + 100
    # The restored container is an ordinary one: exec, kill, delete.
    assert runtime.run("exec", container_id, "cat", "/count").stdout.strip().isdigit()
    runtime.kill(container_id, "KILL")
    runtime.wait_for_status(container_id, "stopped")
    runtime.delete(container_id)


@needs_criu
def test_leave_running_keeps_the_container_and_its_image_restores(runtime, tmp_path):
    bundle, counted, container_id = running_counter(runtime, tmp_path, 2)
    images = tmp_path / "images"
    runtime.run("checkpoint", "--leave-running", "--image-path", images, container_id)
    assert runtime.state(container_id)["status"] == "running"
    saved = count(counted)
    counting_past(counted, saved + 2)
    runtime.run("delete", "--force", container_id)
    restore(runtime, container_id, bundle, images)
    assert runtime.state(container_id)["status"] == "running"


@needs_criu
def test_restore_into_a_new_id_with_bind_mounts(runtime, tmp_path):
    """The restored copy gets its own id and cgroup; the bind mounts (host
    directories, external to CRIU) are bound again, one inside the other
    although its mountpoint, which create made in the outer one's source,
    is gone."""
    data, inner = tmp_path / "data", tmp_path / "inner"
    data.mkdir()
    inner.mkdir()
    (inner / "marker").write_text("inner")

    def binds(config):
        config["mounts"] += [bind_mount(str(data), "/data"), bind_mount(str(inner), "/data/in")]
    bundle = counter_bundle(tmp_path / "bundle", file="/data/count", mutate=binds)
    counted = data / "count"
    first = runtime.new_id()
    run_detached(runtime, first, bundle)
    counting_past(counted, 2)
    images = tmp_path / "images"
    runtime.run("checkpoint", "--image-path", images, first)
    saved = count(counted)
    (data / "in").rmdir()
    second = runtime.new_id()
    pid_file = tmp_path / "pid"
    restore(runtime, second, bundle, images, "--pid-file", pid_file)
    assert not runtime.exists(first)
    state = runtime.state(second)
    assert state["status"] == "running" and state["pid"] == int(pid_file.read_text())
    counting_past(counted, saved)
    assert runtime.run("exec", second, "cat", "/data/in/marker").stdout == "inner"
    if runtime.name == "pyoci":
        # Its own cgroup. runc 1.1 sends CRIU no cgroup root on v2, and CRIU
        # puts the tree back where it was: in the first container's path.
        cgroup = open(f"/proc/{state['pid']}/cgroup").read()
        assert second in cgroup, cgroup


@needs_criu
def test_network_namespace_joined_by_path_is_joined_again(runtime, tmp_path):
    """A network namespace the config joins by path is external to CRIU: the
    restored process is put back in it, not in a new one."""
    name = f"pyoci-cr-{tmp_path.name[-12:]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        path = f"/run/netns/{name}"
        bundle, counted, container_id = running_counter(
            runtime, tmp_path, 2, join_namespace("network", path))
        images = tmp_path / "images"
        runtime.run("checkpoint", "--image-path", images, container_id)
        saved = count(counted)
        restore(runtime, container_id, bundle, images)
        counting_past(counted, saved)
        pid = runtime.state(container_id)["pid"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(path).st_ino
        runtime.run("delete", "--force", container_id)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@needs_criu
def test_tcp_listener_with_tcp_established(runtime, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", QUIET + "exec nc -l -p 8123"])
    container_id = runtime.new_id()
    run_detached(runtime, container_id, bundle)

    def listening():  # on port 8123 (1FBB), IPv4 or (busybox's choice where it can) IPv6
        tables = runtime.run("exec", container_id, "cat", "/proc/net/tcp",
                             "/proc/net/tcp6").stdout
        return any(len(fields) > 3 and fields[1].endswith(":1FBB") and fields[3] == "0A"
                   for fields in map(str.split, tables.splitlines()))
    wait_until(listening, "nc to listen")
    images = tmp_path / "images"
    runtime.run("checkpoint", "--tcp-established", "--image-path", images, container_id)
    restore(runtime, container_id, bundle, images, "--tcp-established")
    assert listening()


@needs_criu
def test_terminal_container_gets_a_new_master(runtime, tmp_path):
    """A terminal's master was the engine's: restore sends the new one to
    the console socket, and the program reads from it."""
    script = "while read line; do echo \"$line\" > /got; done"
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", script],
                         lambda config: config["process"].update(terminal=True))
    container_id = runtime.new_id()
    console = ConsoleSocket(tmp_path / "console.sock")
    run_detached(runtime, container_id, bundle, "--console-socket", console.path)
    master = console.received_master()
    os.write(master, b"before\n")
    got = bundle / "rootfs" / "got"
    wait_until(lambda: got.exists() and got.read_text() == "before\n", "the first line")
    images = tmp_path / "images"
    runtime.run("checkpoint", "--image-path", images, container_id)
    os.close(master)
    console = ConsoleSocket(tmp_path / "console2.sock")
    restore(runtime, container_id, bundle, images, "--console-socket", console.path)
    master = console.received_master()
    try:
        os.write(master, b"after\n")
        wait_until(lambda: got.read_text() == "after\n", "the line written after restore")
    finally:
        os.close(master)


@needs_criu
def test_pre_dump_then_dump_with_parent_path(runtime, tmp_path):
    bundle, counted, container_id = running_counter(runtime, tmp_path, 2)
    runtime.run("checkpoint", "--pre-dump", "--image-path", tmp_path / "parent", container_id)
    assert runtime.state(container_id)["status"] == "running"
    assert (tmp_path / "parent" / "pages-1.img").exists()
    runtime.run("checkpoint", "--parent-path", "../parent", "--image-path",
                tmp_path / "images", container_id)
    assert not runtime.exists(container_id)
    saved = count(counted)
    restore(runtime, container_id, bundle, tmp_path / "images")
    counting_past(counted, saved)


@needs_criu
def test_foreground_restore_waits_and_returns_the_exit_status(runtime, tmp_path):
    bundle, counted, container_id = running_counter(runtime, tmp_path, 2)
    images = tmp_path / "images"
    runtime.run("checkpoint", "--image-path", images, container_id)
    with open(os.devnull, "rb") as null:
        restoring = subprocess.Popen(
            runtime.argv + ["restore", "--bundle", str(bundle), "--image-path", str(images),
                            container_id], stdin=null, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
    try:
        wait_until(lambda: runtime.exists(container_id), "the restored container",
                   timeout=WAIT_TIMEOUT * 3)
        runtime.wait_for_status(container_id, "running")
        # Both report running from CRIU's post-restore notification, while CRIU still
        # holds the tree; the kill is to end the restored container, once CRIU has left.
        wait_until(lambda: "criu" not in _commands(living_descendants(restoring.pid)),
                   "CRIU to finish the restore", timeout=WAIT_TIMEOUT * 3)
        runtime.kill(container_id, "KILL")
        _, stderr = restoring.communicate(timeout=WAIT_TIMEOUT * 3)
    finally:
        if restoring.poll() is None:
            restoring.kill()
    assert restoring.returncode == 137, stderr
    wait_until(lambda: not runtime.exists(container_id), "the container to be deleted")


def _commands(pids):
    """The command names of PIDS that still exist."""
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return names


@needs_criu
def test_refusals_leave_everything_as_it_was(runtime, tmp_path):
    bundle = counter_bundle(tmp_path / "bundle")
    container_id = runtime.new_id()
    runtime.create(container_id, bundle)
    refused = runtime.run("checkpoint", "--image-path", tmp_path / "images", container_id,
                          check=False)
    assert refused.returncode == 1
    assert "cannot be checkpointed in created state" in refused.stderr
    assert runtime.state(container_id)["status"] == "created"
    # Images that are not a checkpoint: CRIU's own error, nothing left behind.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "descriptors.json").write_text('["/dev/null","/dev/null","/dev/null"]')
    other = runtime.new_id()
    refused = runtime.run("restore", "--detach", "--bundle", bundle, "--image-path", empty,
                          other, check=False)
    assert refused.returncode == 1
    assert not runtime.exists(other)
    assert not (runtime.root / other).exists()
    if runtime.name == "pyoci":
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "criu failed: type RESTORE" in lines[0], refused.stderr
        assert "Error (" in lines[0], refused.stderr  # CRIU's words, from its log
        assert not [p for p in os.listdir("/sys/fs/cgroup") if other in p]


@pytest.mark.skipif(CRIU_PROBLEM is None, reason="CRIU works here: its refusal is not seen")
def test_a_checkpoint_criu_refuses_is_one_line_and_leaves_it_running(pyoci, tmp_path):
    if subprocess.run(["which", "criu"], capture_output=True).returncode != 0:
        pytest.skip("criu is not installed")
    bundle = counter_bundle(tmp_path / "bundle")
    container_id = pyoci.new_id()
    run_detached(pyoci, container_id, bundle)
    refused = pyoci.run("checkpoint", "--image-path", tmp_path / "images", container_id,
                        check=False)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("criu failed: type DUMP"), refused.stderr
    assert "Error (" in lines[0] and "dump.log" in lines[0], refused.stderr
    assert pyoci.state(container_id)["status"] == "running"


def test_delete_never_walks_into_a_restore_s_bind_of_the_rootfs(pyoci, tmp_path):
    """A restore that died leaves its bind of the rootfs in the state
    directory: delete --force detaches it, and the rootfs is untouched."""
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "100"])
    container_id = pyoci.new_id()
    pyoci.create(container_id, bundle)
    criu_root = pyoci.root / container_id / "criu-root"
    criu_root.mkdir()
    subprocess.run(["mount", "--rbind", str(bundle / "rootfs"), str(criu_root)], check=True)
    try:
        pyoci.run("delete", "--force", container_id)
    finally:
        if os.path.ismount(criu_root):
            subprocess.run(["umount", "-l", str(criu_root)], check=False)
    assert (bundle / "rootfs" / "bin" / "busybox").exists()
    assert not (pyoci.root / container_id).exists()
    assert str(criu_root) not in open("/proc/self/mountinfo").read()


@pytest.mark.parametrize("flags, message", [
    (["--manage-cgroups-mode", "bogus"], "Invalid manage cgroups mode"),
    (["--empty-ns", "pid"], 'namespace "pid" is not supported'),
    (["--parent-path", "/abs"], "--parent-path must be relative"),
    (["--page-server", "nope"], "Use --page-server ADDRESS:PORT to specify page server"),
])
def test_bad_flags_are_refused_before_criu_runs(runtime, tmp_path, flags, message):
    """runc's words, exit 1, and the container still running (no CRIU needed)."""
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "100"])
    container_id = runtime.new_id()
    run_detached(runtime, container_id, bundle)
    refused = runtime.run("checkpoint", *flags, "--image-path", tmp_path / "images",
                          container_id, check=False)
    said = refused.stderr.replace('\\"', '"')  # runc's logfmt escapes quotes
    assert refused.returncode == 1 and message in said, refused.stderr
    assert runtime.state(container_id)["status"] == "running"
