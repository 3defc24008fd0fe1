"""Creating a container's init process: the runtime's side of sync.py's
protocol and the namespace stage. What init does is in pyoci/init.py.

Processes are made only with os.fork(). The namespace stage joins and
creates namespaces, then forks again so that, in a new pid namespace, init
is PID 1; it reports init's pid and exits, and init is re-parented to the
runtime (a child subreaper) so a failed create can reap it.
"""
import fcntl
import os
import signal

from pyoci import sync
from pyoci.errors import ExecError, describe
from pyoci.linux import namespaces
from pyoci.linux import syscalls as sc

WAITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyoci-waiter")


class InitContext:
    """Everything init needs, prepared by the runtime before fork."""
    __slots__ = ("config", "container_id", "bundle", "sync_sock", "fifo_fd", "waiter_fd",
                 "console_socket_fd", "preserve_fds", "no_pivot", "no_new_keyring",
                 "cgroup_paths", "caps", "rlimits", "extra_env", "seccomp",
                 "state_dir_fd")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


def waiter_memfd():
    """A sealed in-memory copy of pyoci-waiter for init to execute.

    Executing the copy means nothing in the container can ever reach the
    host's file through /proc/<pid>/exe and overwrite it.
    """
    fd = os.memfd_create("pyoci-waiter", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(WAITER, "rb") as f:
        data = f.read()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK |
                fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def spawn_init(context, add_to_cgroups, on_create_hooks):
    """Fork the namespace stage and init; drive them to READY.

    ADD_TO_CGROUPS(pid) places the stage before it creates a cgroup namespace.
    ON_CREATE_HOOKS(init_pid) runs prestart/createRuntime hooks and returns the
    state JSON for the createContainer hooks. Returns init's pid (host view).
    On failure everything forked is killed and reaped before raising.
    """
    syscalls = sc.syscalls()  # load the shim before fork, once.
    # Import init's code now: after the uid switch into a user namespace, or
    # after pivot_root, the host's Python files may be out of reach.
    from pyoci import init
    config = context.config
    runtime_sock, child_sock = sync.channel()
    context.sync_sock = child_sock
    syscalls.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    stage_pid = os.fork()
    if stage_pid == 0:
        runtime_sock.close()
        _child(child_sock, lambda: _namespace_stage(syscalls, context, init))
    child_sock.close()
    init_pid = None
    try:
        add_to_cgroups(stage_pid)
        userns = config.linux.namespace("user")
        if userns and userns.path is None:
            sync.receive(runtime_sock, sync.ID_MAP_REQUEST)
            namespaces.write_id_maps(stage_pid, config.linux.uid_mappings,
                                     config.linux.gid_mappings)
        sync.send(runtime_sock, sync.GO)
        init_pid = sync.receive(runtime_sock, sync.INIT_PID)["pid"]
        _reap(stage_pid)
        stage_pid = None
        if config.process and config.process.oom_score_adj is not None:
            _write_oom_score_adj(init_pid, config.process.oom_score_adj)
        sync.send(runtime_sock, sync.GO)
        sync.receive(runtime_sock, sync.RUN_HOOKS)
        container_state = on_create_hooks(init_pid)
        sync.send(runtime_sock, sync.HOOKS_DONE, state=container_state)
        sync.receive(runtime_sock, sync.READY)
        sync.receive_end(runtime_sock)
        return init_pid
    except BaseException:
        for pid in (stage_pid, init_pid):
            if pid:
                kill_and_reap(pid)
        raise
    finally:
        runtime_sock.close()


def kill_and_reap(pid):
    try:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    except (ProcessLookupError, ChildProcessError):
        pass


def _reap(pid):
    os.waitpid(pid, 0)


def _write_oom_score_adj(pid, value):
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as exc:
        raise ExecError(f"set oom_score_adj to {value}: {exc.strerror.lower()}") from None


def _child(sock, body):
    """Run BODY in a forked child; leave only by os._exit, errors sent as data."""
    try:
        body()
        code = 0
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
        code = 1
        try:
            sync.send_error(sock, describe(exc))
        except OSError:
            pass
    os._exit(code)


def _namespace_stage(syscalls, context, init):
    syscalls.prctl(sc.PR_SET_DUMPABLE, 0)
    config = context.config
    linux = config.linux
    sock = context.sync_sock
    joined = namespaces.open_paths(linux.namespaces)
    for ns_type in namespaces.JOIN_ORDER:
        if ns_type in joined:
            namespaces.join(syscalls, ns_type, joined[ns_type])
    userns = linux.namespace("user")
    new_userns = userns is not None and userns.path is None
    if new_userns:
        namespaces.unshare(syscalls, sc.CLONE_NEWUSER)
        sync.send(sock, sync.ID_MAP_REQUEST)
    sync.receive(sock, sync.GO)
    namespaces.unshare(syscalls, namespaces.new_flags(linux.namespaces, skip=("user",)))
    if linux.time_offsets:
        namespaces.write_time_offsets(linux.time_offsets)
    if new_userns:
        # Become the namespace's root so init starts as uid 0 inside it.
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    init_pid = os.fork()
    if init_pid == 0:
        _child(sock, lambda: init.run(syscalls, context))
    sync.send(sock, sync.INIT_PID, pid=init_pid)
