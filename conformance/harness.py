"""Drive a runtime through its runc-compatible CLI and observe what it does.

No dependency on pyoci: ``Runtime`` takes any runc-compatible command.
"""
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from conformance.bundle import BUSYBOX, bind_mount, make_bundle

# A NOTIFY_SOCKET inherited from a service manager (a runner started as a
# systemd Type=notify unit) would make every runtime's start wait for the
# container's READY=1: the tests that want one set it themselves.
os.environ.pop("NOTIFY_SOCKET", None)

RUNTIME_COMMAND = os.environ.get("OCI_RUNTIME", "pyoci")
# The runtimes compared where a test runs both: the pyoci installed beside
# this interpreter, and the host's runc.
PYOCI = str(Path(sys.executable).parent / "pyoci")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
# OCI_TIMEOUT_SCALE stretches both where the runtime runs slowly (the
# emulated v2 VM, tests/vm/run_in_v2_vm.sh).
TIMEOUT_SCALE = float(os.environ.get("OCI_TIMEOUT_SCALE", "1"))
COMMAND_TIMEOUT = 30 * TIMEOUT_SCALE
WAIT_TIMEOUT = 10 * TIMEOUT_SCALE
POLL_INTERVAL = 0.02

# Where a probe container sees its bundle's out/ directory.
OUT = "/out"

# A shell loop that waits until the test calls Probe.stop_program().
WAIT_FOR_STOP = f"while [ ! -e {OUT}/stop ]; do sleep 0.05; done"

PR_SET_CHILD_SUBREAPER = 36
CGROUP_ROOT = Path("/sys/fs/cgroup")


def runtime_path():
    """The runtime $OCI_RUNTIME names (a command or a path), or None if there is none."""
    return shutil.which(RUNTIME_COMMAND)


def skip_module_unless_runnable():
    """Skip the calling test module where containers cannot be run."""
    if os.geteuid() != 0:
        pytest.skip("conformance tests run real containers and need root",
                    allow_module_level=True)
    if runtime_path() is None:
        pytest.skip(f"OCI runtime {RUNTIME_COMMAND!r} not found (set OCI_RUNTIME)",
                    allow_module_level=True)
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip(f"no busybox at {BUSYBOX} to build a rootfs from", allow_module_level=True)


def assert_no_runner_environment(env_lines):
    """The runtime's own environment must not leak into one a config defines.

    pytest sets PYTEST_CURRENT_TEST in the environment the runtime runs in,
    so it is always there to look for.
    """
    leaked = [line for line in env_lines if line.startswith("PYTEST_CURRENT_TEST=")]
    assert leaked == []


class CommandFailed(AssertionError):
    """A runtime command that had to succeed failed."""


def wait_until(condition, what, timeout=WAIT_TIMEOUT):
    """Poll ``condition()`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_INTERVAL)
    return result


@contextlib.contextmanager
def private_runtime(command):
    """A Runtime with a --root of its own; every container it made is force-deleted after."""
    # A short path: runtimes may put unix sockets, limited to 108 bytes, in their state.
    scratch = Path(tempfile.mkdtemp(prefix="oci-"))
    runtime = Runtime(command, scratch / "state")
    try:
        yield runtime
    finally:
        runtime.force_delete_all()
        shutil.rmtree(scratch)


class Runtime:
    """The runtime under test, keeping its state in a private ``--root`` directory.

    PREFIX runs it another way (as another user); with PASS_ROOT false it
    is called without --root, and ROOT is where its default one is."""

    def __init__(self, command, root, prefix=(), pass_root=True):
        self.name = os.path.basename(command)
        self.root = Path(root)
        self.argv = [*prefix, command] + (["--root", str(root)] if pass_root else [])
        self.container_ids = set()

    def run(self, *args, check=True, input=None, timeout=COMMAND_TIMEOUT, cwd=None, env=None):
        """Run the runtime with ``args``; returns a CompletedProcess with text output.
        ENV adds to our environment.

        Output goes through temporary files, not pipes: a container created
        without a terminal inherits the runtime's stdio and would hold pipes
        open until it exits.
        """
        argv = self.argv + [str(arg) for arg in args]
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            completed = subprocess.run(
                argv, input=None if input is None else input.encode(),
                stdin=subprocess.DEVNULL if input is None else None,
                stdout=stdout, stderr=stderr, timeout=timeout, cwd=cwd,
                env=None if env is None else {**os.environ, **env})
            completed.stdout = _read_text(stdout)
            completed.stderr = _read_text(stderr)
        if check and completed.returncode != 0:
            raise CommandFailed(
                f"{' '.join(argv)} exited {completed.returncode}:\n{completed.stderr}")
        return completed

    def new_id(self):
        """A container id no other test uses; teardown force-deletes its container."""
        container_id = f"oci-{uuid.uuid4().hex[:12]}"
        self.container_ids.add(container_id)
        return container_id

    def create(self, container_id, bundle, **run_options):
        self.container_ids.add(container_id)
        return self.run("create", "--bundle", bundle, container_id, **run_options)

    def start(self, container_id, **run_options):
        return self.run("start", container_id, **run_options)

    def kill(self, container_id, signal, **run_options):
        return self.run("kill", container_id, signal, **run_options)

    def delete(self, container_id, **run_options):
        return self.run("delete", container_id, **run_options)

    def state(self, container_id):
        return json.loads(self.run("state", container_id).stdout)

    def exists(self, container_id):
        return self.run("state", container_id, check=False).returncode == 0

    def listed_ids(self):
        return self.run("list", "--quiet").stdout.split()

    def wait_for_status(self, container_id, status):
        def state_once_reached():
            state = self.state(container_id)
            return state if state["status"] == status else None
        return wait_until(state_once_reached, f"{container_id} to be {status}")

    def run_to_exit(self, container_id, bundle):
        """Create and start a container, wait until its process exits, delete it."""
        self.create(container_id, bundle)
        self.start(container_id)
        self.wait_for_status(container_id, "stopped")
        self.delete(container_id)

    def force_delete_all(self):
        for container_id in self.container_ids:
            self.run("delete", "--force", container_id, check=False)


def criu_problem():
    """Why CRIU cannot checkpoint here (`criu check`'s first error), or None."""
    try:
        done = subprocess.run(["criu", "check"], capture_output=True, text=True,
                              timeout=120 * TIMEOUT_SCALE)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    errors = [line for line in done.stderr.splitlines() if "Error" in line]
    return (errors or [done.stderr.strip() or f"exit status {done.returncode}"])[0]


def process_alive(pid):
    """True unless PID is gone or a zombie (exited, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return data[data.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def _read_text(file):
    file.seek(0)
    return file.read().decode(errors="replace")


def probe_bundle(bundle, script, mutate=None):
    """A bundle at BUNDLE running the shell SCRIPT, with its out/ directory
    bind-mounted at /out and the script's stdout and stderr in out/output;
    ``mutate(config)`` may edit its config."""
    bundle = Path(bundle)
    out = bundle / "out"
    out.mkdir(parents=True)
    out.chmod(0o777)  # writable whatever process.user is

    def observed(config):
        config["mounts"].append(bind_mount(out, OUT))
        if mutate is not None:
            mutate(config)

    return make_bundle(bundle, ["sh", "-c", f"exec >{OUT}/output 2>&1\n{script}"], observed)


def hand_directories_to(bundle, uid):
    """Give UID (a user namespace's root, seen from the host) the bundle's
    out/ and every directory of its rootfs, so it can make mount points."""
    os.chown(Path(bundle) / "out", uid, uid)
    for directory, _, _ in os.walk(Path(bundle) / "rootfs"):
        os.chown(directory, uid, uid)


class Probe:
    """Makes bundles whose process is a shell script, and reads what the script printed.

    Each bundle's out/ directory is bind-mounted at /out, and the script's
    stdout and stderr go to out/output.
    """

    def __init__(self, runtime, directory):
        self.runtime = runtime
        self.directory = Path(directory)
        self.bundle_count = 0

    def bundle(self, script, mutate=None):
        """A new bundle running ``script``; ``mutate(config)`` may edit its config."""
        self.bundle_count += 1
        return probe_bundle(self.directory / f"bundle{self.bundle_count}", script, mutate)

    def run(self, script, mutate=None):
        """Run ``script`` in a new container until it exits; return its output."""
        return self.run_bundle(self.bundle(script, mutate))

    def run_bundle(self, bundle):
        """Run a bundle from ``bundle()`` in a new container until it exits; return its output."""
        self.runtime.run_to_exit(self.runtime.new_id(), bundle)
        return self.output(bundle)

    @staticmethod
    def output_path(bundle):
        return Path(bundle) / "out" / "output"

    def output(self, bundle):
        return self.output_path(bundle).read_text()

    def wait_for_output(self, bundle, text):
        """Wait until the script has printed ``text``; return all its output so far."""
        path = self.output_path(bundle)

        def output_once_printed():
            output = path.read_text() if path.exists() else ""
            return output if text in output else None
        return wait_until(output_once_printed, f"{text!r} in {path}")

    def container(self, status):
        """A new container brought to ``status``; returns (id, bundle).

        Its program prints "ran" and then waits in WAIT_FOR_STOP, so the test
        decides when it exits.
        """
        container_id = self.runtime.new_id()
        bundle = self.bundle(f"echo ran\n{WAIT_FOR_STOP}")
        self.runtime.create(container_id, bundle)
        if status in ("running", "stopped"):
            self.runtime.start(container_id)
            self.wait_for_output(bundle, "ran")
        if status == "stopped":
            self.stop_program(bundle)
            self.runtime.wait_for_status(container_id, "stopped")
        return container_id, bundle

    @staticmethod
    def stop_program(bundle):
        """End a WAIT_FOR_STOP loop in the bundle's program."""
        (Path(bundle) / "out" / "stop").touch()


class LeakCheck:
    """What a runtime can leave on the host: cgroups, mounts, state files,
    processes, network namespaces.

    Other work may share the host, so only cgroups and mounts whose names
    mention this test's containers or directories count.  While the check is
    open this process is a child subreaper: processes the runtime forks and
    abandons become our children and can be found.  Container processes that
    exit stay zombies until leftovers() or close() reaps them; they have
    exited all the same, so the runtime must report their containers stopped.
    Those of a container's pid namespace are reaped at once, as an engine's
    shim reaps them: the namespace's init cannot finish exiting (nor a
    runtime waiting for it return) while one is left.
    """

    def __init__(self, runtime, *directories):
        self.runtime = runtime
        self.directories = [str(directory) for directory in directories]
        _set_child_subreaper(True)
        # Children we had before (an engine daemon a session fixture started) are not leaks.
        self.children = set(_live_children())
        self.cgroups = _cgroup_dirs()
        self.mounts = _mount_table()
        self.state_files = _files_under(runtime.root)
        self.network_namespaces = _network_namespaces()
        self._stop_reaping = threading.Event()
        self._reaper = threading.Thread(target=self._reap_other_namespaces, daemon=True)
        self._reaper.start()

    def _reap_other_namespaces(self):
        while not self._stop_reaping.wait(POLL_INTERVAL):
            for pid in _zombie_children():
                if len(_namespace_pids(pid)) > 1:  # never one of our own commands
                    try:
                        os.waitpid(pid, 0)
                    except ChildProcessError:
                        pass  # leftovers() was first

    def leftovers(self):
        """What appeared since the snapshot, by kind; empty when nothing did."""
        found = {
            "cgroups": self._ours(_cgroup_dirs() - self.cgroups),
            "mounts": self._ours(_mount_table() - self.mounts),
            "state files": sorted(_files_under(self.runtime.root) - self.state_files),
            "processes": [_describe(pid) for pid in self._new_children()],
            "network namespaces": sorted(_network_namespaces() - self.network_namespaces),
        }
        return {kind: items for kind, items in found.items() if items}

    def _ours(self, names):
        marks = [mark for mark in (*self.runtime.container_ids, str(self.runtime.root),
                                   *self.directories) if mark]
        return sorted(name for name in names if any(mark in name for mark in marks))

    def _new_children(self):
        return [pid for pid in _live_children() if pid not in self.children]

    def close(self):
        self._stop_reaping.set()
        self._reaper.join()
        for pid in self._new_children():
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        _set_child_subreaper(False)


def _set_child_subreaper(enabled):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _cgroup_dirs():
    return {directory for directory, _, _ in os.walk(CGROUP_ROOT)}


def _mount_table():
    with open("/proc/self/mountinfo") as mountinfo:
        return set(mountinfo)


def _network_namespaces():
    """Every network namespace a process is in or a mount pins (an nsfs
    bind mount: `ip netns add`'s /run/netns/NAME)."""
    found = set()
    for link in Path("/proc").glob("[0-9]*/ns/net"):
        try:
            found.add(os.readlink(link))
        except OSError:  # exited meanwhile
            continue
    for line in _mount_table():
        fields = line.split()
        fs_type = fields[fields.index("-") + 1]
        if fs_type == "nsfs" and fields[3].startswith("net:"):
            found.add(fields[3].lstrip("/"))
    return found


def _files_under(root):
    return {str(path) for path in Path(root).rglob("*")}


def _children():
    """(pid, state letter) of each of our children."""
    me = os.getpid()
    # Not Path.glob: its existence check raises ESRCH for a process that
    # is exiting meanwhile.
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat_file:
                stat = stat_file.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me:
            yield int(name), state


def _zombie_children():
    return [pid for pid, state in _children() if state == "Z"]


def _namespace_pids(pid):
    """PID's pid in each pid namespace it is in, ours first (status's NSpid)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return line.split()[1:]
    except (FileNotFoundError, ProcessLookupError):
        pass  # reaped meanwhile
    return []


def _live_children():
    """Our children still alive, after reaping the dead ones (orphans end up here)."""
    children = []
    for pid, state in _children():
        if state != "Z":
            children.append(pid)
            continue
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # the reaper thread was first
    return children


def _describe(pid):
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except FileNotFoundError:
        return f"{pid} (exited)"
    return f"{pid} {cmdline.decode(errors='replace').strip()}"


class ConsoleSocket:
    """A --console-socket listener, as conmon and containerd's shim run one:
    it accepts one connection and keeps the pty master sent over it."""

    def __init__(self, path):
        import array
        import socket
        import threading
        self.path = str(path)
        self.name = self.master = None
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(1)

        def accept():
            connection, _ = self._server.accept()
            fds = array.array("i")
            self.name, ancillary, _, _ = connection.recvmsg(1024, socket.CMSG_LEN(fds.itemsize))
            fds.frombytes(ancillary[0][2])
            self.master = fds[0]
            connection.close()
        self._thread = threading.Thread(target=accept, daemon=True)
        self._thread.start()

    def received_master(self, timeout=WAIT_TIMEOUT):
        """The master fd, once the runtime has sent it."""
        self._thread.join(timeout)
        self._server.close()
        assert self.master is not None, "no pty master arrived on the console socket"
        return self.master


def read_until_closed(fd):
    """Everything a pty master yields until the slave side is gone (EIO)."""
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    return output
