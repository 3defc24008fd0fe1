"""Creating a container's init process: the runtime's side of sync.py's
protocol and the namespace stage. What init does is in pyoci/init.py.

Processes are made only with os.fork(). The namespace stage joins and
creates namespaces, then forks again so that, in a new pid namespace, init
is PID 1; it reports init's pid and exits, and init is re-parented to the
runtime (a child subreaper) so a failed create can reap it.
"""
import fcntl
import _signal
import os

from pyoci import log, sync
from pyoci.errors import ExecError, describe
from pyoci.linux import namespaces, network
from pyoci.linux.mount_sources import MountSources
from pyoci.linux import syscalls as sc

WAITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyoci-waiter")


class InitContext:
    """Everything init needs, prepared by the runtime before fork (but the
    cgroup paths, made after it: they come with init's GO)."""
    __slots__ = ("config", "container_id", "bundle", "sync_sock", "fifo_fd", "waiter_fd",
                 "console_socket_fd", "preserve_fds", "no_pivot", "no_new_keyring",
                 "cgroup_paths", "caps", "rlimits", "extra_env", "seccomp",
                 "placement", "persona", "state_dir_fd", "stdio")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


class ExecContext:
    """What an `exec` process needs, prepared by the runtime before fork."""
    __slots__ = ("process", "join", "chroot_fd", "container_id", "sync_sock",
                 "console_socket_fd", "preserve_fds", "caps", "rlimits", "seccomp",
                 "placement", "persona", "no_new_keyring", "user_namespace", "stdio")

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


class _Fork:
    """The runtime's side of one spawn: forks the stage, then tracks it and the
    process it forks, and kills and reaps both if anything fails.

    STAGE(syscalls, context, init_module) runs in the child.
    """

    def __init__(self, context, stage):
        syscalls = sc.syscalls()  # load the shim before fork, once.
        # Import init's code now: after the uid switch into a user namespace,
        # or after pivot_root, the host's Python files may be out of reach
        # (and a forked child importing it would copy every page it touches).
        from pyoci import init
        self.sock, child_sock = sync.channel()
        context.sync_sock = child_sock
        syscalls.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        log.hold_destination()
        self.stage_pid = os.fork()
        if self.stage_pid == 0:
            _child(child_sock, lambda: (self.sock.close(), take_stdio(context.stdio),
                                        stage(syscalls, context, init)))
        child_sock.close()
        self.pid = None

    def __enter__(self):
        return self

    def go(self, **fields):
        sync.send(self.sock, sync.GO, **fields)

    def receive_pid(self):
        """The final process's pid (host view). The stage exits then; it is
        reaped once the spawn is done, so that its exit overlaps init's work."""
        self.pid = sync.receive(self.sock, sync.INIT_PID)["pid"]
        return self.pid

    def wait_for_exec(self, on_seccomp_listener=None):
        """READY, then end of file: the process has executed (the waiter or
        the program). A seccomp listener on the way goes to
        ON_SECCOMP_LISTENER(fd, pid), then is closed here."""
        message, fd = sync.receive_maybe_fd(self.sock, sync.READY, sync.SECCOMP_LISTENER)
        if message["type"] == sync.SECCOMP_LISTENER:
            try:
                if on_seccomp_listener is None:
                    raise ExecError("a seccomp listener no one asked for")
                on_seccomp_listener(fd, self.pid)
            finally:
                os.close(fd)
            sync.receive(self.sock, sync.READY)
        sync.receive_end(self.sock)

    def __exit__(self, exc_type, exc, traceback):
        self.sock.close()
        if exc_type is not None:
            for pid in (self.stage_pid, self.pid):
                if pid:
                    kill_and_reap(pid)
        else:
            _reap(self.stage_pid)
        return False


def spawn_init(context, place_in_cgroups, on_create_hooks, on_seccomp_listener=None):
    """Fork the namespace stage and init; drive them to READY.

    PLACE_IN_CGROUPS(pid) makes the container's cgroups and places init in
    them; it returns the cgroup paths init's processes are in (as a cgroup
    mount shows them), which init gets with its GO, and only then creates a
    cgroup namespace. The namespaces, init and the mounts that depend on no
    cgroup come first (init.py's _Placement): the kernel makes a cgroup,
    and moves a process, only once the grace period of the runtime's early
    migration has passed (see cgroups.start_migrations_early), and they
    need not wait for it.
    ON_CREATE_HOOKS(init_pid) runs prestart/createRuntime hooks and returns the
    state JSON for the createContainer hooks. ON_SECCOMP_LISTENER(fd, pid)
    passes a notifying filter's listener on. Returns init's pid (host view).
    On failure everything forked is killed and reaped before raising.
    """
    config = context.config
    _preload(config.process, config.hooks.create_container or config.hooks.start_container)
    with _Fork(context, _namespace_stage) as fork:
        log.fault_point("create:forked")
        userns = config.linux.namespace("user")
        if userns and userns.path is None:
            sync.receive(fork.sock, sync.ID_MAP_REQUEST)
            namespaces.write_id_maps(fork.stage_pid, config.linux.uid_mappings,
                                     config.linux.gid_mappings)
            log.fault_point("create:id-maps")
            log.debug(f"create: wrote the user namespace's id maps of {fork.stage_pid}")
        fork.go()
        init_pid = fork.receive_pid()
        log.fault_point("create:init-pid")
        try:
            log.pause_point("create:placing", "")
            cgroup_paths = place_in_cgroups(init_pid)
            log.fault_point("create:init-in-cgroups")
            log.debug(f"create: init is pid {init_pid}, in the cgroups")
            if config.linux.net_devices:
                network.move_devices(config.linux.net_devices, f"/proc/{init_pid}/ns/net")
                log.debug(f"create: moved {', '.join(config.linux.net_devices)} into init's netns")
            if config.process and config.process.oom_score_adj is not None:
                _write_oom_score_adj(init_pid, config.process.oom_score_adj)
        except (ExecError, OSError):
            # init makes its first mounts meanwhile: if one failed, init is
            # gone, and its error is the one that says why.
            sync.raise_error_sent(fork.sock)
            raise
        fork.go(cgroup_paths=cgroup_paths)
        _serve_mount_sources(fork.sock, MountSources(sc.syscalls(), config, context.bundle,
                                                     init_pid))
        container_state = on_create_hooks(init_pid)
        sync.send(fork.sock, sync.HOOKS_DONE, state=container_state)
        log.fault_point("create:hooks-done")
        fork.wait_for_exec(on_seccomp_listener)
        log.fault_point("create:ready")
        log.debug(f"create: init {init_pid} has executed")
        return init_pid


def _serve_mount_sources(sock, sources):
    """Answer init's MOUNT_SOURCE requests until it asks for the hooks."""
    try:
        while (message := sync.receive(sock, sync.MOUNT_SOURCE, sync.RUN_HOOKS))["type"] \
                == sync.MOUNT_SOURCE:
            fd = sources.open(message["index"], message["idmapped"])
            try:
                sync.send(sock, sync.MOUNT_FD, fd=fd)
            finally:
                os.close(fd)
            log.fault_point("create:mount-source")
    finally:
        sources.close()


def spawn_exec(context, add_to_cgroups, on_seccomp_listener=None):
    """Fork a process into a running container's namespaces and cgroups; drive
    it to its exec. Returns its pid (host view).

    process.execCPUAffinity: its initial CPUs are the stage's before it joins
    the cgroups (which may reset them: a v1 cpuset does), the final ones the
    process's once it is in them.
    """
    affinity = context.placement.cpu_affinity
    _preload(context.process, False)
    with _Fork(context, _exec_stage) as fork:
        log.fault_point("exec:forked")
        if affinity is not None:
            affinity.set(fork.stage_pid, affinity.initial, "initial")
        add_to_cgroups(fork.stage_pid)
        log.fault_point("exec:in-cgroups")
        log.debug(f"exec: stage {fork.stage_pid} is in the container's cgroups; joins "
                  + ", ".join(ns for ns in namespaces.JOIN_ORDER if ns in context.join))
        fork.go()
        pid = fork.receive_pid()
        log.fault_point("exec:pid")
        log.debug(f"exec: the process is pid {pid}")
        if affinity is not None:
            affinity.set(pid, affinity.final, "final")
        fork.go()
        fork.wait_for_exec(on_seccomp_listener)
        log.debug(f"exec: pid {pid} has executed")
        return pid


def _preload(process, hooks):
    """What a child may import only when the config asks for it, loaded
    before the fork: it runs as a user namespace's root, after pivot_root or
    in the container's mount namespace, where the host's Python files may be
    out of its reach."""
    if process is not None and process.terminal:
        from pyoci.linux import terminal  # noqa: F401 - init.py's lazy import
    if hooks:
        import signal, subprocess  # noqa: E401, F401 - hooks.py's lazy imports


def _exec_stage(syscalls, context, init):
    """Join the container's namespaces (user first, mount last), then, once
    the runtime has placed us in the cgroups, fork so that the process is
    inside its pid and time namespaces and its cgroups. The joins need not
    wait for the placement (the early migration's grace period)."""
    syscalls.prctl(sc.PR_SET_DUMPABLE, 0)
    for ns_type in namespaces.JOIN_ORDER:
        if ns_type in context.join:
            namespaces.join(syscalls, ns_type, context.join[ns_type])
    if context.chroot_fd is not None:
        os.fchdir(context.chroot_fd)
        os.chroot(".")
        os.close(context.chroot_fd)
    if context.user_namespace:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    log.fault_point("exec:stage/joined")
    sync.receive(context.sync_sock, sync.GO)
    pid = os.fork()
    if pid == 0:
        _child(context.sync_sock, lambda: init.run_exec(syscalls, context))
    sync.send(context.sync_sock, sync.INIT_PID, pid=pid)


def take_stdio(stdio):
    """The process's stdin, stdout and stderr: STDIO's three fds (a library
    caller's, as the shim's fifos), or else the runtime's own."""
    if stdio is not None:
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)


def kill_and_reap(pid):
    try:
        os.kill(pid, _signal.SIGKILL)
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
    """Run BODY in a forked child; leave only by os._exit, errors sent as
    data. Nothing may unwind past here: above are the parent's frames (a
    create's undo), which a child must never run."""
    code = 1
    try:
        body()
        code = 0
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
        try:
            sync.send_error(sock, describe(exc))
        except BaseException:  # noqa: BLE001 - the parent is gone: no one to tell
            pass
    finally:
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
        # Dumpable until the maps are written, as runc: otherwise our /proc
        # files belong to root, and a rootless runtime (or newuidmap on
        # its behalf) may not write them. Nothing else is in the namespace yet.
        syscalls.prctl(sc.PR_SET_DUMPABLE, 1)
        sync.send(sock, sync.ID_MAP_REQUEST)
    sync.receive(sock, sync.GO)
    if new_userns:
        syscalls.prctl(sc.PR_SET_DUMPABLE, 0)
    log.debug("namespace stage: joined " + (", ".join(sorted(joined)) or "none") + "; creates "
              + (", ".join(ns.type for ns in linux.namespaces if ns.path is None) or "none"))
    # A new cgroup namespace is init's to create, once it is in its cgroups.
    namespaces.unshare(syscalls, namespaces.new_flags(linux.namespaces, skip=("user", "cgroup")))
    if linux.time_offsets:
        namespaces.write_time_offsets(linux.time_offsets)
    if new_userns:
        # Become the namespace's root so init starts as uid 0 inside it.
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    log.fault_point("create:stage/unshared")
    init_pid = os.fork()
    if init_pid == 0:
        _child(sock, lambda: init.run(syscalls, context))
    sync.send(sock, sync.INIT_PID, pid=init_pid)
