"""Container state on disk and the status derived from the system.

One directory per container under the root (default /run/pyoci):

    <root>/<id>/state.json   what create recorded (written via temp + rename)
    <root>/<id>/config.json  the config it was created from (for exec)
    <root>/<id>/exec.fifo    present from create until start
    <root>/<id>/lock         locked (lockf) by every command acting on the id

The status is never read back from disk: a container is ``stopped`` when its
init process is gone, a zombie, or a different process with the same pid
(start time differs); ``created`` while init still runs what it waited for
start in (see Container._waits_for_start); ``running`` after.
"""
import errno
import os
import time

from pyoci import OCI_VERSION, jsontext
from pyoci.errors import ContainerError, ExecError, errno_text
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

# /proc/PID/exe of a created container's init running pyoci-waiter (a memfd copy).
WAITER_EXECUTABLE = "/memfd:pyoci-waiter (deleted)"


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
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise ExecError(f"write {path}: {errno_text(exc.errno)}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException as exc:
        os.unlink(tmp)  # a full disk leaves no half-written file behind
        if isinstance(exc, OSError):
            raise ExecError(f"write {path}: {errno_text(exc.errno)}") from None
        raise


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
        self._lock_fd = None  # first: unlock runs on release, even of one refused here
        validate_id(container_id)  # an id is a path component under root
        self.root = root
        self.id = container_id
        self.dir = os.path.join(root, container_id)
        self.record = None
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
        self.lock(os.O_CREAT)

    def lock(self, create=0):
        """Hold an exclusive lock on the container until this process exits.
        A record lock (os.lockf, not fcntl's flock: one extension module
        less to load) belongs to the process, so children never hold it.
        Only create makes the lock file: another command re-making it would
        stop a delete, which removes it, from removing the directory."""
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CLOEXEC | create, 0o600)
        os.lockf(fd, os.F_LOCK, 0)
        self._lock_fd = fd

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # The command's process ends with the call; a library caller's (the
    # shim's) lives on, and would hold every lock it ever took, an fd each.
    __del__ = unlock

    def lock_existing(self):
        """Lock an existing container and load its record."""
        try:
            self.lock()
        except FileNotFoundError:
            if not os.path.isdir(self.dir):
                raise ContainerError(f'container "{self.id}" does not exist') from None
            # A create that died between its mkdir and its lock: nothing to lock.
        return self.load()

    # ---- the record -------------------------------------------------------
    def save(self):
        write_atomic(self.state_file, jsontext.dumps(self.record).encode(), 0o600)

    def load(self):
        """Read the record; a missing container is a ContainerError, one
        whose state.json cannot be used a CorruptState."""
        try:
            with open(self.state_file, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if os.path.isdir(self.dir):
                # create died before it recorded anything: only delete -f applies.
                self.record = empty_record(self.id)
                return self
            raise ContainerError(f'container "{self.id}" does not exist') from None
        except OSError as exc:
            raise CorruptState(self, exc.strerror.lower()) from None
        try:
            record = jsontext.loads(data)
        except ValueError as exc:
            raise CorruptState(self, "empty" if not data.strip() else f"not JSON ({exc})") \
                from None
        missing = [key for key in RECORD_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise CorruptState(self, f"no {missing[0]!r} in it")
        self.record = record
        return self

    def status(self):
        record = self.record
        if not record.get("pid") or not procfs.is_alive(record["pid"], record["pid_start_time"]):
            return STOPPED
        if record.get("creating"):
            return CREATING
        if self._waits_for_start():
            return CREATED
        paths = record.get("cgroup_paths")
        if paths:
            from pyoci.linux import cgroups
            if cgroups.frozen(paths):
                return PAUSED
        return RUNNING

    def _waits_for_start(self):
        """Whether init still waits for start: it runs what it ran when create
        was done (pyoci-waiter, or init itself where it runs startContainer
        hooks) and, but for the waiter, exec.fifo is still there. A start
        killed after it let init go leaves exec.fifo behind; one deleted
        leaves a waiter that is still created. Where the executable cannot
        be read, exec.fifo alone tells."""
        waiting = self.record.get("waiting_executable")
        executable = procfs.executable(self.record["pid"]) if waiting else None
        if executable is None:
            return os.path.exists(self.fifo)
        return executable == waiting and (waiting == WAITER_EXECUTABLE or
                                          os.path.exists(self.fifo))

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
        """Remove the directory and what is in it (a directory left where
        state.json should be, too); what another delete removed first is
        gone all the same. A mount in it (restore's bind of the rootfs, left
        by a runtime that died) is detached first, never walked into."""
        for below, directories, _ in os.walk(self.dir):
            for name in directories:
                detach(os.path.join(below, name))
        for below, directories, files in os.walk(self.dir, topdown=False):
            for name in files:
                _remove(os.path.join(below, name), os.unlink)
            for name in directories:
                path = os.path.join(below, name)
                _remove(path, os.unlink if os.path.islink(path) else os.rmdir)
        _remove(self.dir, os.rmdir)


def detach(path):
    """Detach what is mounted at PATH, if anything (a bind of a directory
    of the same filesystem looks like a plain directory to stat)."""
    from pyoci.linux import syscalls
    from pyoci.linux.mounts import MNT_DETACH, UMOUNT_NOFOLLOW
    try:
        syscalls.syscalls().umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW)
    except OSError as exc:
        # EINVAL: not a mount point; ENOENT: another delete removed it first.
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def _remove(path, remover):
    try:
        remover(path)
    except FileNotFoundError:
        pass


# What every record has, from the first save of create on (see empty_record).
RECORD_KEYS = ("id", "pid", "pid_start_time", "bundle", "rootfs", "created", "cgroup_paths")


def empty_record(container_id):
    """The record of a container whose create died before it wrote one."""
    return {"id": container_id, "pid": 0, "pid_start_time": None, "bundle": "", "rootfs": "",
            "created": "", "annotations": {}, "cgroup_paths": {}, "owner": ""}


class CorruptState(ContainerError):
    """A state.json that cannot be read or parsed: the container's pid and
    cgroups are unknown, and only delete --force applies."""

    def __init__(self, container, why):
        super().__init__(f"container {container.id}: {container.state_file} is unusable ({why}); "
                         "delete --force removes the container")


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
        except CorruptState as exc:
            from pyoci import log
            log.warning(str(exc))
        except ContainerError:
            continue  # deleted meanwhile
    return result
