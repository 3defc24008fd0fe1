"""Drive real container engines (podman, containerd/ctr, Docker, buildah) with a runtime under test.

Nothing here imports pyoci: the runtime under test is any runc-compatible
binary, given by path.  Engines never call it directly: each runtime is
reached through a logging shim (``RuntimeShim``) that records every call's
argv, exit status and error text, and otherwise passes stdio, fds and
signals through unchanged.  A failing test shows the calls it caused, and the
leak check after each test knows from them which container ids and state
directories to look for.

Everything an engine keeps (storage, daemons' roots, state, sockets, pid files,
configs) lives in one temporary directory per test session.
"""
import fcntl
import json
import os
import pty
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

from conformance.bundle import make_rootfs
from conformance.harness import PYOCI, RUNC

REPO = Path(__file__).resolve().parents[2]

# The image every engine runs: busybox-static, imported once per session.
IMAGE = "localhost/pyoci-busybox:latest"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Shell words naming, inside a container, its own cgroup's limits (cgroup v2 file, else v1).
MEMORY_LIMIT_FILE = ("$(ls /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes"
                     " 2>/dev/null)")
PIDS_LIMIT_FILE = "$(ls /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null)"

# Prints the terminal's size once the engine has set it: docker and ctr resize
# the container's tty only after it started, so the first `stty size` may see 0x0.
STTY_SIZE_WHEN_SET = ('for i in $(seq 50); do s=$(stty size 2>/dev/null) && [ -n "$s" ] '
                      '&& [ "$s" != "0 0" ] && break; sleep 0.1; done; echo "$s"')

COMMAND_TIMEOUT = 120
WAIT_TIMEOUT = 30
LEAK_TIMEOUT = 20

# Global flags of runc that take a value (the rest are booleans).
RUNTIME_GLOBALS_WITH_VALUE = {"--root", "--log", "--log-format", "--criu", "--rootless"}

# Default state roots, used when an engine passes no --root (podman, buildah).
DEFAULT_STATE_ROOTS = {"runc": "/run/runc", "pyoci": "/run/pyoci", "crun": "/run/crun"}


# ---------------------------------------------------------------- selection

def runtimes_under_test():
    """The runtimes to test: $OCI_ENGINE_RUNTIMES (comma-separated paths), else runc and pyoci."""
    listed = os.environ.get("OCI_ENGINE_RUNTIMES", "").strip()
    if listed:
        return [os.path.abspath(path.strip()) for path in listed.split(",") if path.strip()]
    return [RUNC, default_pyoci()]


def default_pyoci():
    if os.path.exists(PYOCI):
        return PYOCI
    return str(REPO / ".venv" / "bin" / "pyoci")


def runtime_id(path):
    return os.path.basename(path)


def require_engine(*binaries):
    """Skip the calling test module unless we are root and every binary is installed."""
    if os.geteuid() != 0:
        pytest.skip("engine tests start daemons and real containers: they need root",
                    allow_module_level=True)
    missing = [binary for binary in binaries if find_binary(binary) is None]
    if missing:
        pytest.skip(f"engine binaries not installed: {', '.join(missing)}",
                    allow_module_level=True)


def find_binary(name):
    # /usr/bin first: a newer docker client in /usr/local/bin would talk to
    # Debian's older dockerd through API negotiation we do not want to test.
    return shutil.which(name, path="/usr/bin:/usr/sbin") or shutil.which(name)


def tool(name):
    """An engine binary by absolute path (as found by require_engine), else its bare name."""
    return find_binary(name) or name


# ---------------------------------------------------------------- commands

class CommandFailed(AssertionError):
    pass


def host_block_device():
    """(path, permission bits in octal) of a block device of this host, which
    a --privileged container gets too."""
    import stat
    for name in sorted(os.listdir("/dev")):
        path = os.path.join("/dev", name)
        mode = os.stat(path).st_mode
        if stat.S_ISBLK(mode):
            return path, oct(mode & 0o777)[2:]
    raise AssertionError("this host has no block device in /dev")


def root_has_every_capability():
    """Whether this process's bounding set holds every capability the kernel has."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    with open("/proc/self/status") as f:
        bounding = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return bounding == (1 << (last + 1)) - 1


def describe(done):
    return (f"$ {shlex.join(done.args)}\n-> exit {done.returncode}\n"
            f"stdout: {done.stdout!r}\nstderr: {done.stderr!r}")


def run(argv, *, env=None, timeout=COMMAND_TIMEOUT, input=None, check=True, cwd=None):
    """Run a command to completion, capturing text output; raise CommandFailed if check fails."""
    argv = [str(arg) for arg in argv]
    try:
        done = subprocess.run(argv, env=env, input=input, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL if input is None else None)
    except subprocess.TimeoutExpired as timeout_error:
        raise CommandFailed(f"timed out after {timeout}s: {shlex.join(argv)}") from timeout_error
    if check and done.returncode != 0:
        raise CommandFailed(describe(done))
    return done


def wait_until(condition, what, timeout=WAIT_TIMEOUT, interval=0.1):
    """Poll ``condition()`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- logging shim

SHIM_SOURCE = r'''#!{python} -IS
# Logging shim for {real}: runs it with the caller's argv, stdio, fds and
# signals, and appends one JSON line per call to {log}.  stderr is captured
# (and replayed) only for subcommands whose stdio no container inherits.
import json, os, signal, sys, time

REAL = {real!r}
LOG = {log!r}
WITH_VALUE = {with_value!r}

argv = sys.argv[1:]
sub, logfile, i = None, None, 0
while i < len(argv):
    arg = argv[i]
    if arg in WITH_VALUE:
        if arg == "--log" and i + 1 < len(argv):
            logfile = argv[i + 1]
        i += 2
        continue
    if arg.startswith("--log="):
        logfile = arg[len("--log="):]
    elif not arg.startswith("-"):
        sub = arg
        break
    i += 1

def size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0

log_start = size(logfile) if logfile else 0
capture = sub not in ("create", "run", "exec")
resources = None
if sub == "update":
    # Record the LinuxResources the engine asks for (a file, or stdin passed on through a pipe).
    rest = argv[i + 1:]
    for j, arg in enumerate(rest):
        source = (rest[j + 1] if arg in ("--resources", "-r") and j + 1 < len(rest)
                  else arg[len("--resources="):] if arg.startswith("--resources=") else None)
        if source == "-":
            resources = sys.stdin.buffer.read()
            reader, writer = os.pipe()
            if os.fork() == 0:
                os.close(reader)
                os.write(writer, resources)
                os._exit(0)
            os.close(writer)
            os.dup2(reader, 0)
            os.close(reader)
        elif source:
            try:
                with open(source, "rb") as resources_file:
                    resources = resources_file.read()
            except OSError:
                pass
errfd = os.open(os.path.dirname(LOG), os.O_TMPFILE | os.O_RDWR, 0o600) if capture else None
started = time.time()
pid = os.fork()
if pid == 0:
    try:
        # Python ignores these at startup; the runtime must get them as we did.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        if errfd is not None:
            os.dup2(errfd, 2)
            os.close(errfd)
        os.execv(REAL, [REAL] + argv)
    except BaseException as error:
        os.write(2, ("shim: cannot run %s: %s\n" % (REAL, error)).encode())
    os._exit(127)

def forward(signum, frame):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass

for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
               signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
    signal.signal(signum, forward)
while True:
    try:
        _, status = os.waitpid(pid, 0)
        break
    except InterruptedError:
        continue
rc = os.waitstatus_to_exitcode(status)
if rc < 0:
    rc = 128 - rc
record = {{"time": started, "seconds": round(time.time() - started, 3), "argv": argv, "rc": rc}}
if resources is not None:
    record["resources"] = resources.decode(errors="replace")[:4000]
if errfd is not None:
    os.lseek(errfd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(errfd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    err = b"".join(chunks)
    view = memoryview(err)
    while view:
        try:
            view = view[os.write(2, view):]
        except OSError:
            break
    if err:
        record["stderr"] = err.decode(errors="replace")[-4000:]
if logfile:
    try:
        with open(logfile, "rb") as log:
            log.seek(log_start)
            new = log.read().decode(errors="replace").splitlines()
        record["log"] = [line for line in new if "error" in line.lower()
                         or "warn" in line.lower()][-10:]
    except OSError:
        pass
fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (json.dumps(record) + "\n").encode())
os.close(fd)
sys.exit(rc)
'''


def split_runtime_argv(argv):
    """(global flags as a dict, subcommand, the subcommand's own arguments)."""
    flags, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg in RUNTIME_GLOBALS_WITH_VALUE:
            flags[arg] = argv[i + 1] if i + 1 < len(argv) else None
            i += 2
            continue
        if not arg.startswith("-"):
            return flags, arg, argv[i + 1:]
        name, _, value = arg.partition("=")
        flags[name] = value or True
        i += 1
    return flags, None, []


class RuntimeShim:
    """A script named like the runtime (podman decides on JSON logs by the name)
    that logs each call and runs the real runtime."""

    def __init__(self, real, directory):
        self.real = str(real)
        self.name = runtime_id(real)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / self.name
        self.log = directory / "calls.jsonl"
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        self.path.write_text(SHIM_SOURCE.format(python=python, real=self.real, log=str(self.log),
                                                with_value=sorted(RUNTIME_GLOBALS_WITH_VALUE)))
        self.path.chmod(0o755)
        self.log.touch()

    @property
    def default_root(self):
        return DEFAULT_STATE_ROOTS.get(self.name, f"/run/{self.name}")

    def mark(self):
        return self.log.stat().st_size

    def calls(self, since=0):
        with open(self.log, "rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def created(self, calls):
        """[(container id, state root)] for every create/run among ``calls``."""
        found = []
        for call in calls:
            flags, sub, rest = split_runtime_argv(call["argv"])
            if sub in ("create", "run") and rest:
                found.append((rest[-1], flags.get("--root") or self.default_root))
        return found

    def format_calls(self, calls, only_failed=False):
        lines = []
        for call in calls:
            if only_failed and call["rc"] == 0:
                continue
            lines.append(f"rc={call['rc']} {call['seconds']:.2f}s  "
                         f"{self.name} {shlex.join(call['argv'])}")
            for line in (call.get("stderr") or "").splitlines():
                lines.append(f"    stderr: {line}")
            for line in call.get("log") or ():
                lines.append(f"    log: {line}")
            if "resources" in call:
                lines.append(f"    resources: {call['resources']}")
        return "\n".join(lines)


# ---------------------------------------------------------------- leak checks

CGROUP_ROOT = "/sys/fs/cgroup"


def _cgroup_dirs():
    found = []
    for directory, subdirs, _ in os.walk(CGROUP_ROOT):
        found.append(directory)
    return found


def _processes():
    """[(pid, cmdline, cgroup text)] of every live process but this one."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline_file:
                cmdline = cmdline_file.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/cgroup") as cgroup_file:
                cgroups = cgroup_file.read()
        except OSError:
            continue
        found.append((int(entry), cmdline.strip(), cgroups))
    return found


def leftovers(created):
    """What is left on the host of the containers in ``created`` [(id, state root)]."""
    ids = sorted({container_id for container_id, _ in created if len(container_id) >= 6})
    if not ids:
        return {}
    found = {
        "state dirs": sorted({str(Path(root) / cid) for cid, root in created
                              if (Path(root) / cid).exists()}),
        "cgroups": [d for d in _cgroup_dirs() if any(cid in os.path.basename(d) for cid in ids)],
        "processes": [f"{pid} {cmdline[:200]}" for pid, cmdline, cgroups in _processes()
                      if any(cid in cmdline or cid in cgroups for cid in ids)],
    }
    with open("/proc/self/mountinfo") as mountinfo:
        found["mounts"] = [line.strip() for line in mountinfo if any(cid in line for cid in ids)]
    return {kind: items for kind, items in found.items() if items}


def assert_nothing_left(shim, since, timeout=LEAK_TIMEOUT):
    """Every container the runtime created since ``since`` is gone without a trace."""
    created = shim.created(shim.calls(since))
    deadline = time.monotonic() + timeout
    while True:
        found = leftovers(created)
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if found:
        details = "\n".join(f"  {kind}:\n" + "\n".join(f"    {item}" for item in items)
                            for kind, items in found.items())
        raise AssertionError(f"left behind by containers {sorted({c for c, _ in created})}:\n"
                             f"{details}")


# ---------------------------------------------------------------- host cleanup

def unmount_under(directory):
    """Lazily unmount everything mounted under ``directory``, deepest first."""
    prefix = str(directory).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    for point in sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def stop_pid(pid, timeout=30):
    """SIGTERM ``pid`` (a daemon we started), SIGKILL it if it outlives ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Daemon:
    """A daemon started by the test session, logging to a file, stopped by pid."""

    def __init__(self, name, argv, log_path, ready, env=None, timeout=90):
        self.name = name
        self.log_path = Path(log_path)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(arg) for arg in argv], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        self.pid = self.process.pid
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start; its log:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout=30):
        if self.process.poll() is None:
            stop_pid(self.pid, timeout)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


# ---------------------------------------------------------------- image

def build_image_tarball(workdir):
    """A busybox-static root filesystem as a tar file, for ``podman import``."""
    workdir = Path(workdir)
    rootfs = make_rootfs(workdir / "rootfs")
    for directory in ("run", "var/tmp", "home", "usr/bin", "mnt"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "var/tmp", 0o1777)
    tarball = workdir / "rootfs.tar"
    run(["tar", "--numeric-owner", "-C", rootfs, "-cf", tarball, "."])
    shutil.rmtree(rootfs)
    return tarball


# ---------------------------------------------------------------- podman and buildah

class PodmanStore:
    """Private podman/buildah storage, run and tmp directories, shared by every runtime."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.root = self.directory / "root"
        self.runroot = self.directory / "run"
        self.tmpdir = self.directory / "tmp"
        self.networks = self.directory / "networks"
        for path in (self.root, self.runroot, self.tmpdir, self.networks):
            path.mkdir(parents=True, exist_ok=True)
        self.base_conf = self.write_conf("base", None)

    def write_conf(self, label, shim):
        """A containers.conf for ``shim``'s runtime (None: podman's default runtime)."""
        conf = self.directory / f"containers-{label}.conf"
        runtime = ""
        if shim is not None:
            runtime = (f'runtime = "{shim.name}"\n'
                       f'runtime_supports_json = ["crun", "runc", "kata", "runsc", "krun", '
                       f'"pyoci", "{shim.name}"]\n'
                       f'[engine.runtimes]\n{shim.name} = ["{shim.path}"]\n')
        conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n'
            'init_path = "/usr/bin/catatonit"\n'
            'log_driver = "k8s-file"\n'
            "[network]\n"
            'network_backend = "netavark"\n'
            f'network_config_dir = "{self.networks}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.directory}/events.log"\n'
            f'tmp_dir = "{self.tmpdir}"\n'
            f'volume_path = "{self.root}/volumes"\n'
            'lock_type = "file"\n'
            f'conmon_env_vars = ["PATH={IMAGE_PATH}", "CONTAINERS_CONF={conf}"]\n'
            + runtime)
        return conf

    def env(self, conf):
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = str(conf)
        env["TMPDIR"] = str(self.tmpdir)
        return env

    def global_args(self):
        return ["--root", self.root, "--runroot", self.runroot, "--storage-driver", "overlay"]

    def podman(self, *args, conf=None, **options):
        return run([tool("podman"), *self.global_args(), *args],
                   env=self.env(conf or self.base_conf),
                   **options)

    def import_image(self, workdir):
        tarball = build_image_tarball(workdir)
        self.podman("import", "--change", 'CMD ["/bin/sh"]', "--change", f"ENV PATH={IMAGE_PATH}",
                    tarball, IMAGE)
        tarball.unlink()

    def save_docker_archive(self, path):
        self.podman("save", "--format", "docker-archive", "-o", path, IMAGE)
        return path

    def close(self):
        self.podman("rm", "-a", "-f", "-t", "0", check=False)
        unmount_under(self.directory)


class Podman:
    """podman with the runtime under test as its default runtime."""

    def __init__(self, store, shim):
        self.store = store
        self.shim = shim
        self.conf = store.write_conf(shim.name, shim)

    def __call__(self, *args, **options):
        return self.store.podman(*args, conf=self.conf, **options)

    @property
    def argv(self):
        return [tool("podman"), *map(str, self.store.global_args())]

    @property
    def env(self):
        return self.store.env(self.conf)

    def run_detached(self, *args):
        return self("run", "-d", *args).stdout.strip()

    def inspect(self, container, template):
        return self("inspect", "--format", template, container).stdout.strip()

    def cleanup(self):
        self("rm", "-a", "-f", "-t", "0", check=False)


class Buildah:
    """buildah sharing podman's storage, with ``--runtime`` the runtime under test."""

    def __init__(self, store, shim):
        self.store = store
        self.shim = shim
        self.conf = store.write_conf(shim.name, shim)

    def __call__(self, *args, **options):
        return run([tool("buildah"), *self.store.global_args(), *args],
                   env=self.store.env(self.conf),
                   **options)

    def cleanup(self):
        self("rm", "--all", check=False)


# ---------------------------------------------------------------- containerd

class ContainerdDaemon:
    """containerd with its own config, root, state and socket; pyoci's
    shim (containerd-shim-pyoci-v2, beside the pyoci command) on its PATH.
    Without CRI_CONFIG (the CRI plugin's sections) the CRI plugin is off."""

    NAME = "containerd"

    def __init__(self, directory, cri_config=None):
        self.directory = Path(directory)
        self.root = self.directory / "root"
        self.state = self.directory / "state"
        self.socket = self.directory / "containerd.sock"
        self.config = self.directory / "config.toml"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            + ('disabled_plugins = ["io.containerd.grpc.v1.cri"]\n' if cri_config is None else "")
            + "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[debug]\n"
            '  address = ""\n'
            "[metrics]\n"
            '  address = ""\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.directory}/opt"\n'
            + (cri_config or ""))
        path = f"{os.path.dirname(default_pyoci())}:{os.environ.get('PATH', IMAGE_PATH)}"
        self.daemon = Daemon(self.NAME, [tool("containerd"), "--config", self.config],
                             self.directory / "containerd.log", self._ready,
                             env={**os.environ, "PATH": path})

    def _ready(self):
        return self.socket.exists() and run([tool("ctr"), "--address", self.socket, "version"],
                                            check=False, timeout=10).returncode == 0

    def shim_pids(self):
        """containerd shims serving this containerd (they outlive it by design)."""
        return [pid for pid, cmdline, _ in _processes()
                if "containerd-shim" in cmdline and str(self.socket) in cmdline]

    def stop(self):
        self.daemon.stop()
        for pid in self.shim_pids():
            stop_pid(pid, timeout=5)
        unmount_under(self.directory)


class CriContainerd(ContainerdDaemon):
    """containerd with its CRI plugin, as a Kubernetes node runs it: runtime
    handlers HANDLERS {name: (runtime_type, options)}, CNI's bridge on a
    bridge of its own (BRIDGE, SUBNET; no default route for pods),
    SANDBOX_IMAGE as the pause image. Its images live in namespace k8s.io."""

    NAME = "containerd (CRI)"
    NAMESPACE = "k8s.io"
    BRIDGE = "pyoci-cri0"
    SUBNET = "10.213.7.0/24"
    GATEWAY = "10.213.7.1"
    CNI_BIN = "/usr/lib/cni"

    def __init__(self, directory, handlers, sandbox_image):
        cni = Path(directory) / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-pyoci.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "pyoci-cri",
            "plugins": [{"type": "bridge", "bridge": self.BRIDGE, "isGateway": True,
                         "ipMasq": False, "ipam": {
                             "type": "host-local", "ranges": [[{"subnet": self.SUBNET}]],
                             "dataDir": str(Path(directory) / "ipam")}}]}))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        runtimes = "".join(
            f'[{cri}.containerd.runtimes.{name}]\n  runtime_type = "{runtime_type}"\n'
            + (f'[{cri}.containerd.runtimes.{name}.options]\n'
               + "".join(f"  {key} = {json.dumps(value)}\n" for key, value in options.items())
               if options else "")
            for name, (runtime_type, options) in handlers.items())
        super().__init__(directory, cri_config=(
            f"[{cri}]\n"
            f'  sandbox_image = "{sandbox_image}"\n'
            # Without CAP_SYS_RESOURCE the sandbox's -998 cannot be set (runc's neither).
            "  restrict_oom_score_adj = true\n"
            "  netns_mounts_under_state_dir = true\n"
            '  stream_server_address = "127.0.0.1"\n'
            '  stream_server_port = "0"\n'
            f"[{cri}.containerd]\n"
            f'  default_runtime_name = "{next(iter(handlers))}"\n'
            + runtimes +
            f"[{cri}.cni]\n"
            f'  bin_dir = "{self.CNI_BIN}"\n'
            f'  conf_dir = "{cni}"\n'))

    def ctr(self, *args, **options):
        return run([tool("ctr"), "--address", self.socket, "--namespace", self.NAMESPACE, *args],
                   **options)

    def stop(self):
        super().stop()
        run(["ip", "link", "delete", self.BRIDGE], check=False)


PAUSE_IMAGE = "localhost/pyoci-pause:latest"
PYOCI_SHIM_HANDLER = "pyoci-shim"


def start_cri_node(directory, store, image_archive, runtimes):
    """A CriContainerd in DIRECTORY with a runtime handler per runtime
    {name: binary} (containerd's Go shim running it, its state in
    DIRECTORY/NAME-root) and PYOCI_SHIM_HANDLER (pyoci's own shim); the
    busybox image (IMAGE_ARCHIVE) and a pause image built here from
    busybox (there is no registry) imported with STORE's podman.
    Returns (node, {handler: the state root of its containers})."""
    directory = Path(directory)
    tarball = build_image_tarball(directory / "pause")
    store.podman("import", "--change", 'CMD ["/bin/sleep", "2147483647"]', "--change",
                 f"ENV PATH={IMAGE_PATH}", tarball, PAUSE_IMAGE)
    pause_archive = directory / "pause" / "pause.docker.tar"
    store.podman("save", "--format", "docker-archive", "-o", pause_archive, PAUSE_IMAGE)
    roots = {name: directory / f"{name}-root" for name in runtimes}
    handlers = {name: ("io.containerd.runc.v2", {"BinaryName": path, "Root": str(roots[name])})
                for name, path in runtimes.items()}
    handlers[PYOCI_SHIM_HANDLER] = ("io.containerd.pyoci.v2", {})
    roots[PYOCI_SHIM_HANDLER] = "/run/containerd/pyoci"
    node = CriContainerd(directory, handlers, PAUSE_IMAGE)
    try:
        for archive in (image_archive, pause_archive):
            node.ctr("images", "import", archive)
    except BaseException:
        node.stop()
        raise
    return node, {name: os.path.join(root, node.NAMESPACE) for name, root in roots.items()}


def cgroup_file(pid, controller, v1_name, v2_name=None):
    """The host's path of PID's cgroup file: V1_NAME in CONTROLLER's v1
    hierarchy, or V2_NAME (default: the same) in its unified directory."""
    from pyoci.linux.cgroups import UNIFIED_KEY, own_cgroups
    paths = own_cgroups(pid)
    if controller in paths:
        return os.path.join(CGROUP_ROOT, controller, paths[controller].lstrip("/"), v1_name)
    return os.path.join(CGROUP_ROOT, paths[UNIFIED_KEY].lstrip("/"), v2_name or v1_name)


class Ctr:
    """ctr in a private namespace, running tasks with the runtime under test."""

    NAMESPACE = "pyoci-engines"
    PYOCI_SHIM = "io.containerd.pyoci.v2"  # pyoci's own shim, not the Go shim running SHIM

    def __init__(self, containerd, shim, runc_root, runtime="io.containerd.runc.v2"):
        self.containerd = containerd
        self.shim = shim
        self.runc_root = Path(runc_root)
        self.runtime = runtime

    def __call__(self, *args, **options):
        return run([tool("ctr"), "--address", self.containerd.socket, "--namespace", self.NAMESPACE,
                    *args], **options)

    def runtime_args(self):
        if self.runtime == self.PYOCI_SHIM:
            return ["--runtime", self.runtime]
        return ["--runtime", self.runtime, "--runc-binary", self.shim.path,
                "--runc-root", self.runc_root]

    def run_detached(self, container_id, *command, options=()):
        self("run", "-d", *self.runtime_args(), *options, IMAGE, container_id, *command)
        return container_id

    def tasks(self):
        """{id: (pid, status)} from ``ctr task ls``."""
        found = {}
        for line in self("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3:
                found[fields[0]] = (int(fields[1]), fields[2])
        return found

    def task_status(self, container_id):
        return self.tasks().get(container_id, (None, None))[1]

    def cleanup(self):
        tasks = self.tasks()
        for container_id, (_, status) in tasks.items():
            if status != "STOPPED":
                if status == "PAUSED":
                    self("task", "resume", container_id, check=False)
                self("task", "kill", "-a", "-s", "SIGKILL", container_id, check=False)
        for container_id in tasks:
            try:
                wait_until(lambda: self.task_status(container_id) in ("STOPPED", None),
                           f"task {container_id} to stop", timeout=10)
            except AssertionError:
                pass
            self("task", "rm", "-f", container_id, check=False)
        for container_id in self("container", "ls", "-q").stdout.split():
            self("container", "rm", container_id, check=False)


# ---------------------------------------------------------------- docker

DOCKER_TRUST_KEY = "/etc/docker/key.json"
DOCKER_RESERVED_RUNTIMES = {"runc", "io.containerd.runc.v2", "io.containerd.runtime.v1.linux"}


def docker_runtime_name(shim):
    """The name a runtime is registered under with --add-runtime (runc's name is taken)."""
    return f"{shim.name}-under-test" if shim.name in DOCKER_RESERVED_RUNTIMES else shim.name


class DockerDaemon:
    """dockerd with its own data-root, exec-root, pidfile, socket and config, on our containerd."""

    def __init__(self, directory, containerd, shims):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = self.directory / "docker.sock"
        self.pidfile = self.directory / "docker.pid"
        self.config = self.directory / "daemon.json"
        self.config.write_text("{}\n")
        self.client_config = self.directory / "client"
        self.client_config.mkdir(exist_ok=True)
        self.client = find_binary("docker")
        # dockerd 20.10 writes a trust key there, whatever its other paths.
        self.created_trust_key = not os.path.exists(DOCKER_TRUST_KEY)
        argv = [tool("dockerd"),
                "--data-root", self.directory / "data",
                "--exec-root", self.directory / "exec",
                "--pidfile", self.pidfile,
                "-H", f"unix://{self.socket}",
                "--config-file", self.config,
                "--containerd", containerd.socket,
                "--containerd-namespace", "pyoci-engines-moby",
                "--containerd-plugins-namespace", "pyoci-engines-plugins",
                "--storage-driver", "overlay2",
                "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                "--bridge=none", "--userland-proxy=false"]
        for shim in shims:
            argv += ["--add-runtime", f"{docker_runtime_name(shim)}={shim.path}"]
        self.daemon = Daemon("dockerd", argv, self.directory / "dockerd.log", self._ready)

    def env(self):
        env = dict(os.environ)
        env["DOCKER_CONFIG"] = str(self.client_config)
        env.pop("DOCKER_HOST", None)
        return env

    def docker(self, *args, **options):
        return run([self.client, "-H", f"unix://{self.socket}", *args], env=self.env(), **options)

    def _ready(self):
        return self.socket.exists() and self.docker("version", check=False,
                                                    timeout=10).returncode == 0

    def stop(self):
        pid = self.daemon.pid
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            pass
        stop_pid(pid, timeout=30)
        self.daemon.stop()
        unmount_under(self.directory)
        if self.created_trust_key:
            try:
                os.unlink(DOCKER_TRUST_KEY)
            except OSError:
                pass


class Docker:
    """The docker client, running containers with ``--runtime`` the runtime under test."""

    def __init__(self, daemon, shim):
        self.daemon = daemon
        self.shim = shim
        self.runtime = docker_runtime_name(shim)

    def __call__(self, *args, **options):
        return self.daemon.docker(*args, **options)

    @property
    def argv(self):
        return [self.daemon.client, "-H", f"unix://{self.daemon.socket}"]

    def run(self, *args, **options):
        return self("run", "--runtime", self.runtime, *args, **options)

    def run_detached(self, *args):
        return self.run("-d", *args).stdout.strip()

    def inspect(self, container, template):
        return self("inspect", "--format", template, container).stdout.strip()

    def cleanup(self):
        ids = self("ps", "-aq", "--no-trunc").stdout.split()
        if ids:
            self("rm", "-f", *ids, check=False)


# ---------------------------------------------------------------- terminals

def run_in_pty(argv, *, env=None, rows=33, cols=101, steps=(), timeout=60):
    """Run ``argv`` with a new pty as its controlling terminal and stdio.

    ``steps`` is a sequence of (text to wait for in the output, bytes to type).
    Returns (exit status, everything the program wrote to the terminal).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def become_session_leader():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen([str(arg) for arg in argv], stdin=slave, stdout=slave,
                               stderr=slave, env=env, preexec_fn=become_session_leader)
    os.close(slave)
    output = bytearray()
    pending = list(steps)
    deadline = time.monotonic() + timeout
    exited_at = None
    try:
        while True:
            if pending and pending[0][0].encode() in output:
                os.write(master, pending.pop(0)[1])
                continue
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the slave closed it
                    break
                if not data:
                    break
                output += data
            elif process.poll() is not None:
                # The program exited; whatever it wrote is already readable.
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 1:
                    break
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{shlex.join(map(str, argv))} still running after "
                                     f"{timeout}s; terminal output so far: {bytes(output)!r}")
        status = process.wait(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return status, output.decode(errors="replace")


def new_session_dir():
    """A short path (unix sockets live under it, limited to 108 bytes), in
    $OCI_ENGINE_TMP (default /tmp: the VM's /tmp is an overlayfs, where
    podman's overlay storage cannot live)."""
    return Path(tempfile.mkdtemp(prefix="eng-", dir=os.environ.get("OCI_ENGINE_TMP", "/tmp")))
