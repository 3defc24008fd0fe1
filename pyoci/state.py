"""Container state on disk and the status derived from the system.

One directory per container under the root (default /run/pyoci):

    <root>/<id>/state.json   what create recorded (written via temp + rename)
    <root>/<id>/config.json  the config it was created from (for exec)
    <root>/<id>/exec.fifo    present from create until start
    <root>/<id>/lock         locked (lockf) by every command acting on the id

The status is never read back from disk: a container is ``stopped`` when its
init process is gone, a zombie, or a different process with the same pid
(start time differs); ``created`` while exec.fifo exists; ``running`` after.
"""
import os
import time

from pyoci import OCI_VERSION, jsontext
from pyoci.errors import ContainerError
from pyoci.linux import procfs

DEFAULT_ROOT = "/run/pyoci"


def default_root():
    """/run/pyoci for root; as runc, $XDG_RUNTIME_DIR/pyoci (where the user
    may write) when XDG_RUNTIME_DIR is set for another user, or for root of
    a user namespace (rootless podman runs us so) whose USER is not root."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and _runtime_dir_is_ours():
        return os.path.join(runtime_dir, "pyoci")
    return DEFAULT_ROOT


def _runtime_dir_is_ours():
    if os.geteuid() != 0:
        return True
    return procfs.in_user_namespace() and os.environ.get("USER") != "root"


_ID_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-."

CREATING = "creating"
CREATED = "created"
RUNNING = "running"
STOPPED = "stopped"
PAUSED = "paused"


def validate_id(container_id):
    if container_id in (".", "..") or not container_id or container_id.strip(_ID_CHARACTERS):
        raise ContainerError(f"invalid container ID format: {container_id}")


def can_start(status):
    return status == CREATED


def can_kill(status):
    return status in (CREATED, RUNNING, PAUSED)


def can_delete(status):
    return status == STOPPED


def write_atomic(path, data, mode=0o644):
    """Write bytes to PATH so readers see the old or the new file, never half."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def rfc3339_now():
    now = time.time_ns()
    seconds, nanos = divmod(now, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


class Container:
    """One container's directory and recorded facts.

    ``record`` holds what create wrote: id, pid, pid_start_time, bundle,
    rootfs, created, annotations, cgroup_paths, has_process, owner, and the
    config hooks that later commands run (start, poststart, poststop).
    """

    def __init__(self, root, container_id):
        validate_id(container_id)  # an id is a path component under root
        self.root = root
        self.id = container_id
        self.dir = os.path.join(root, container_id)
        self.record = None
        self._lock_fd = None
        self.terminal_master = None  # set by create when `run` owns the terminal

    @property
    def state_file(self):
        return os.path.join(self.dir, "state.json")

    @property
    def config_file(self):
        return os.path.join(self.dir, "config.json")

    def load_config(self):
        """The config.json the container was created from: (spec.Config, raw dict)."""
        from pyoci.spec import Config
        with open(self.config_file, "rb") as f:
            raw = jsontext.loads(f.read())
        return Config(raw, self.record["bundle"]), raw

    @property
    def fifo(self):
        return os.path.join(self.dir, "exec.fifo")

    # ---- creation and locking -------------------------------------------
    def make_dir(self):
        """Create the container directory; fail if the id is taken."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.dir, 0o711)
        except FileExistsError:
            raise ContainerError(f"container with id exists: {self.id}") from None
        self.lock()

    def lock(self):
        """Hold an exclusive lock on the container until this process exits.
        A record lock (os.lockf, not fcntl's flock: one extension module
        less to load) belongs to the process, so children never hold it."""
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.lockf(fd, os.F_LOCK, 0)
        self._lock_fd = fd

    def lock_existing(self):
        """Lock an existing container and load its record."""
        try:
            self.lock()
        except FileNotFoundError:
            raise ContainerError(f'container "{self.id}" does not exist') from None
        return self.load()

    # ---- the record -------------------------------------------------------
    def save(self):
        write_atomic(self.state_file, jsontext.dumps(self.record).encode(), 0o600)

    def load(self):
        """Read the record; a missing container is a ContainerError."""
        try:
            with open(self.state_file, "rb") as f:
                self.record = jsontext.loads(f.read())
        except FileNotFoundError:
            if os.path.isdir(self.dir):
                # create died before it recorded anything: only delete -f applies.
                self.record = {"id": self.id, "pid": 0, "pid_start_time": None,
                               "bundle": "", "rootfs": "", "created": "",
                               "annotations": {}, "cgroup_paths": {}, "owner": ""}
                return self
            raise ContainerError(f'container "{self.id}" does not exist') from None
        return self

    def status(self):
        record = self.record
        if not record.get("pid") or not procfs.is_alive(record["pid"], record["pid_start_time"]):
            return STOPPED
        if record.get("creating"):
            return CREATING
        if os.path.exists(self.fifo):
            return CREATED
        paths = record.get("cgroup_paths")
        if paths:
            from pyoci.linux import cgroups
            if cgroups.frozen(paths):
                return PAUSED
        return RUNNING

    def oci_state(self):
        """runc's state JSON: the spec's fields plus rootfs, created, owner."""
        status = self.status()
        record = self.record
        state = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": record["pid"] if status != STOPPED else 0,
            "status": status,
            "bundle": record["bundle"],
            "rootfs": record["rootfs"],
            "created": record["created"],
        }
        if record.get("annotations"):
            state["annotations"] = record["annotations"]
        state["owner"] = record.get("owner", "")
        return state

    def hook_state(self, status):
        """The state JSON passed to hooks on stdin."""
        record = self.record
        state = {"ociVersion": OCI_VERSION, "id": self.id, "status": status,
                 "bundle": record["bundle"], "annotations": record.get("annotations") or {}}
        if status != STOPPED:
            state["pid"] = record["pid"]
        return state

    def remove_dir(self):
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


def list_ids(root):
    try:
        return sorted(entry for entry in os.listdir(root)
                      if os.path.isdir(os.path.join(root, entry)))
    except FileNotFoundError:
        return []


def list_states(root):
    """The state of every container under ROOT whose record can be read."""
    result = []
    for container_id in list_ids(root):
        try:
            result.append(Container(root, container_id).load().oci_state())
        except (ContainerError, OSError, ValueError):
            continue
    return result
