"""The host side of create, start, kill, delete and run.

Every step of create has an undo, and state.json records what is needed to
undo it (init's pid, the cgroup paths) before the step is taken, so a
failure undoes it here and a crash is undone by ``delete --force``.
"""
import _signal  # not `signal`: its enums cost a short command 5 ms of imports
import os

from pyoci import jsontext, log, state
from pyoci.errors import ContainerError, ExecError, HookError, describe, errno_text
from pyoci.linux import cgroups, procfs
from pyoci.state import Container


class CreateOptions:
    __slots__ = ("bundle", "pid_file", "console_socket", "pidfd_socket", "no_pivot",
                 "no_new_keyring", "preserve_fds", "own_terminal", "systemd_cgroup", "rootless",
                 "stdio")

    def __init__(self, bundle=".", pid_file=None, console_socket=None, pidfd_socket=None,
                 no_pivot=False, no_new_keyring=False, preserve_fds=0, own_terminal=False,
                 systemd_cgroup=False, rootless=None, stdio=None):
        self.bundle = os.path.abspath(bundle)
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.pidfd_socket = pidfd_socket
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        self.systemd_cgroup = systemd_cgroup
        # --rootless: None is auto, as runc: rootless when not root, or root
        # of a user namespace (whose cgroups may not be ours); never with systemd.
        if rootless is None:
            rootless = not systemd_cgroup and (os.geteuid() != 0
                                                or procfs.in_user_namespace())
        self.rootless = rootless
        # Foreground `run`: with no console socket, take the pty master ourselves.
        self.own_terminal = own_terminal
        # (stdin, stdout, stderr) fds for the container's process; None: ours.
        self.stdio = stdio


def create(root, container_id, options):
    """Create the container and leave init waiting on exec.fifo. Returns its Container."""
    from pyoci import process, sdnotify, spec
    from pyoci.linux import unix
    container = Container(root, container_id)
    config, raw_config = spec.load(options.bundle)
    log.debug(f"create {container_id}: {options.bundle}/config.json is valid "
              f"(ociVersion {config.oci_version})")
    prepared = _prepare(config, options)
    from pyoci.linux import runtime_exe
    if runtime_exe.ptrace_reaches_us(config, []):
        # init will be visible to the other containers in the pid namespace it joins.
        runtime_exe.run_from_sealed_copy()
    container.make_dir()
    log.fault_point("create:state-dir")
    manager = None
    fds = []
    try:
        manager = new_cgroups(config, container_id, options)  # undo kills what is in it
        container.record = new_record(container_id, config, options, manager)
        container.record["notify"] = bool(sdnotify.host_socket() and config.process is not None)
        if container.record["notify"]:
            sdnotify.prepare(config, container.dir)
        container.save()
        log.fault_point("create:state-recorded")
        # exec needs the config as created, whatever happens to the bundle later.
        state.write_atomic(container.config_file, jsontext.dumps(raw_config).encode(), 0o600)
        log.fault_point("create:config-saved")
        os.mkfifo(container.fifo)
        log.fault_point("create:fifo")
        os.chmod(container.fifo, 0o622)  # any container user may open it to write
        fifo_fd = os.open(container.fifo, os.O_PATH | os.O_CLOEXEC)
        fds.append(fifo_fd)
        waiter_fd = process.waiter_memfd()
        fds.append(waiter_fd)
        state_dir_fd = None
        if config.linux.namespace("mount") is None:
            state_dir_fd = os.open(container.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            fds.append(state_dir_fd)
        pidfd_socket_fd = None
        if options.pidfd_socket:
            pidfd_socket_fd = unix.connect_unix(options.pidfd_socket, "pidfd socket")
            fds.append(pidfd_socket_fd)
        console_fd = terminal_end = None
        if options.console_socket:
            console_fd = unix.connect_unix(options.console_socket, "console socket")
        elif options.own_terminal and config.process and config.process.terminal:
            terminal_end, console_end = unix.console_pair()
            console_fd = console_end.detach()
        if console_fd is not None:
            fds.append(console_fd)
        context = process.InitContext(
            config=config, container_id=container_id, bundle=options.bundle,
            fifo_fd=fifo_fd, waiter_fd=waiter_fd, console_socket_fd=console_fd,
            preserve_fds=options.preserve_fds + prepared["listen_fds"],
            no_pivot=options.no_pivot, no_new_keyring=options.no_new_keyring,
            caps=prepared["caps"], rlimits=prepared["rlimits"],
            extra_env=prepared["extra_env"], seccomp=prepared["seccomp"],
            placement=prepared["placement"], persona=prepared["persona"],
            state_dir_fd=state_dir_fd, stdio=options.stdio)

        def place_in_cgroups(init_pid):
            container.record["cgroup_owned"] = manager.create()
            container.save()
            log.fault_point("create:cgroups-made")
            manager.add(init_pid)
            return manager.seen_paths()

        def on_create_hooks(init_pid):
            record_pid(container, init_pid)
            log.fault_point("create:pid-recorded")
            # The limits once init has made the mounts, as runc sets them:
            # its setup is not throttled by a small CPU quota, and the
            # prestart hooks see them.
            manager.apply(config.linux.resources)
            log.fault_point("create:resources")
            return run_create_hooks(config, container, options.bundle)

        log.debug(f"create {container_id}: bundle {options.bundle}, cgroups {manager.paths}")
        process.spawn_init(context, place_in_cgroups, on_create_hooks,
                           seccomp_agent(prepared["seccomp"], container, state.CREATING))
        log.debug(f"create {container_id}: init {container.record['pid']} waits on exec.fifo")
        if terminal_end is not None:
            container.terminal_master = unix.receive_master(terminal_end)
        if pidfd_socket_fd is not None:
            unix.send_pidfd(pidfd_socket_fd, container.record["pid"])
        del container.record["creating"]
        pid = container.record["pid"]
        container.record["waiting_executable"] = procfs.executable(pid)
        container.record["stdio"] = procfs.stdio_targets(pid)  # for checkpoint
        container.save()
        log.fault_point("create:recorded")
        if options.pid_file:
            state.write_atomic(os.path.abspath(options.pid_file),
                               str(container.record["pid"]).encode())
    except BaseException:
        undo_create(container, manager)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return container


def run_create_hooks(config, container, bundle):
    """The prestart and createRuntime hooks, with the created container's
    state (returned), in the bundle, as runc (which chdirs there) runs them;
    create runs them once init has made the mounts, restore once CRIU has
    made the namespaces."""
    hook_state = container.hook_state(state.CREATED)
    if config.hooks.prestart or config.hooks.create_runtime:
        from pyoci import hooks
        hooks.run(config.hooks.prestart, hook_state, "prestart", cwd=bundle)
        hooks.run(config.hooks.create_runtime, hook_state, "createRuntime", cwd=bundle)
    return hook_state


def new_cgroups(config, container_id, options):
    """The cgroup manager of a new container (nothing made yet); refused
    if its cgroup is another's."""
    manager = cgroups.manager_for(config.linux.cgroups_path, container_id,
                                  systemd=options.systemd_cgroup,
                                  annotations=config.annotations, rootless=options.rootless)
    _refuse_a_cgroup_in_use(manager)
    return manager


def new_record(container_id, config, options, manager):
    """A new container's first record: what undoing it needs, and what the
    later commands need of its config."""
    return {
        "id": container_id, "pid": 0, "pid_start_time": None, "creating": True,
        "bundle": options.bundle, "rootfs": config.root_path,
        "created": state.rfc3339_now(), "annotations": config.annotations,
        "cgroup_paths": manager.paths, "systemd_unit": getattr(manager, "unit", None),
        "owner": "", "has_process": config.process is not None,
        "hooks": _later_hooks(config), "shares_host_pids": _shares_host_pids(config),
    }


def process_settings(config, proc):
    """A process's capabilities, rlimits, scheduling, and the container's
    personality and seccomp filter, checked and compiled before anything
    exists (create and exec alike): the InitContext's and ExecContext's
    fields of those names."""
    from pyoci.linux import caps, personality, rlimits, scheduling
    settings = {"caps": None, "rlimits": [], "seccomp": None, "placement": None,
                "persona": personality.persona(config.linux.personality)}
    if proc is not None:
        if proc.capabilities is not None:
            settings["caps"] = caps.CapabilitySets(proc.capabilities)
        settings["rlimits"] = rlimits.resolve(proc.rlimits)
        for refusal in rlimits.above_hard_limits(settings["rlimits"]):
            raise refusal
        settings["placement"] = scheduling.ProcessPlacement(proc, config.linux)
    if config.linux.seccomp is not None:
        from pyoci.linux import seccomp  # only a config that has one pays for it
        settings["seccomp"] = seccomp.compile_filter(config.linux.seccomp)
        for refusal in seccomp.unavailable_actions(config.linux.seccomp):
            raise refusal
    return settings


def _prepare(config, options):
    """Checks and conversions done before anything exists, so bad input leaves nothing."""
    from pyoci.linux import namespaces
    for refusal in namespaces.privilege_problems(config.linux) + (
            namespaces.id_map_problems(config.linux) if _makes_user_namespace(config) else []):
        raise refusal
    prepared = {**process_settings(config, config.process), "extra_env": [], "listen_fds": 0}
    refuse_a_tty_without_console(config, options)
    listen_fds = os.environ.get("LISTEN_FDS")
    if listen_fds and listen_fds.isdigit() and int(listen_fds) > 0:
        # Socket activation: pass the fds on and tell the program they are its own.
        prepared["listen_fds"] = int(listen_fds)
        prepared["extra_env"] = [f"LISTEN_FDS={listen_fds}", "LISTEN_PID=1"]
    return prepared


def refuse_a_tty_without_console(config, options):
    proc = config.process
    if proc is not None and proc.terminal and not (options.console_socket or options.own_terminal):
        raise ExecError("cannot allocate a tty for a detached container without a console socket")


def _makes_user_namespace(config):
    user = config.linux.namespace("user")
    return user is not None and user.path is None


def _later_hooks(config):
    """The hooks start and delete run, kept because config.json may change."""
    def raw(hook_list):
        return [{"path": h.path, "args": h.args, "env": h.env, "timeout": h.timeout}
                for h in hook_list]
    return {"poststart": raw(config.hooks.poststart), "poststop": raw(config.hooks.poststop)}


def _hooks_from_record(container, phase):
    """The recorded hooks of PHASE; only a container that has some imports their code."""
    raws = (container.record.get("hooks") or {}).get(phase)
    if not raws:
        return []
    from pyoci.spec import Hook
    return [Hook(raw) for raw in raws]


def record_pid(container, pid):
    container.record["pid"] = pid
    container.record["pid_start_time"] = procfs.start_time(pid)
    container.save()


def seccomp_agent(seccomp_filter, container, status):
    """What gives a notifying filter's listener fd, with the container's
    state (of STATUS, read when it comes), to the agent at its listenerPath."""
    def send(listener_fd, pid):
        from pyoci.linux import seccomp
        seccomp.send_to_agent(seccomp_filter, listener_fd, pid, container.hook_state(status))
    return send


def _refuse_a_cgroup_in_use(manager):
    """As runc: a cgroup that already has processes, or is frozen, is not
    a new container's (its limits and its kill would reach them)."""
    found = manager.pids()
    if found:
        raise ContainerError(f"container's cgroup is not empty: {len(found)} process(es) found")
    if manager.frozen():
        raise ContainerError("container's cgroup unexpectedly frozen")


def undo_create(container, manager):
    """Undo every step create may have taken; each undo tolerates its step not having run."""
    from pyoci import process
    log.debug(f"create {container.id} failed: undoing it")
    pid = (container.record or {}).get("pid")
    if pid:
        process.kill_and_reap(pid)
    if manager is not None:
        _kill_cgroup_and_remove(manager, container.record or {})
    container.remove_dir()
    if container.record:
        _run_poststop(container)


def start(root, container_id):
    _start(Container(root, container_id).lock_existing())


def _start(container, hooks_cwd=None):
    log.fault_point("start:locked")
    status = container.status()
    log.debug(f"start {container.id}: status {status}")
    if not state.can_start(status):
        if status == state.STOPPED:
            raise ContainerError("cannot start a container that has stopped")
        raise ContainerError(f"cannot start an already {status} container")
    if not container.record.get("has_process", True):
        raise ContainerError("cannot start a container with no process (process is not set in config.json)")
    host_notify_socket = listener = None
    if container.record.get("notify"):
        from pyoci import sdnotify
        host_notify_socket = sdnotify.host_socket()
        listener = sdnotify.Listener(container.dir) if host_notify_socket else None
    try:
        _release_and_run_poststart(container, hooks_cwd)
        if listener is not None:
            # As runc: start returns once the program says it is ready.
            listener.forward_when_ready(container.record["pid"], host_notify_socket)
    finally:
        if listener is not None:
            listener.close()


def _release_and_run_poststart(container, hooks_cwd):
    """Let the program run, then the poststart hooks; either one's failure
    destroys the container, as the spec says."""
    try:
        _release_fifo(container)
    except ExecError:
        _signal_init(container, _signal.SIGKILL)
        raise
    except HookError:
        # A failed startContainer or poststart hook: the spec goes on to
        # destroy the container and run the poststop hooks.
        _delete(container, force=True, hooks_cwd=hooks_cwd)
        raise
    poststart = _hooks_from_record(container, "poststart")
    if not poststart:
        return
    from pyoci import hooks
    try:
        hooks.run(poststart, container.hook_state(state.RUNNING), "poststart",
                  cwd=container.record["bundle"])  # as runc, in the bundle
    except HookError:
        _delete(container, force=True, hooks_cwd=hooks_cwd)
        raise


def _release_fifo(container):
    """Let init exec the program; return once it has, or raise why it did not."""
    import select
    pidfd = procfs.open_pidfd(container.record["pid"])
    if pidfd is None:
        raise ExecError(_INIT_EXITED)
    try:
        fifo = os.open(container.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(pidfd)
        raise ContainerError(f"cannot start container {container.id}: its exec.fifo is gone "
                             "(delete --force removes the container)") from None
    received = b""
    try:
        poller = select.poll()
        poller.register(fifo, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        log.fault_point("start:fifo-opened")
        init_exited = False
        while True:
            events = dict(poller.poll())
            if events.get(fifo):
                chunk = os.read(fifo, 4096)
                if not chunk:
                    break  # the waiter's end closed: exec happened, or it died
                received += chunk
            elif events.get(pidfd):
                if init_exited:
                    break
                init_exited = True  # drain what it wrote before leaving
    finally:
        os.close(fifo)
        os.close(pidfd)
        log.fault_point("start:released")
        os.unlink(container.fifo)
        log.fault_point("start:fifo-removed")
    if received == b"0":
        return
    if received.startswith(b"0E"):
        number, _, program = received[2:].decode(errors="replace").partition(" ")
        raise ExecError(f"exec {program}: {errno_text(int(number))}")
    if received.startswith(b"0S"):
        raise ExecError(f"load seccomp filter: {errno_text(int(received[2:]))}")
    if received.startswith(b"0H"):
        raise HookError(received[2:].decode(errors="replace"))
    raise ExecError(_INIT_EXITED)


_INIT_EXITED = "container init exited before the program could be started"


def parse_signal(text):
    """'KILL', 'SIGKILL', 'kill' or '9' to a signal number, as runc accepts
    (0 too: kill(2)'s check that the process exists)."""
    if text.isascii() and text.isdigit():
        number = int(text)
        if 0 <= number < _signal.NSIG:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        number = getattr(_signal, name, None)
        if isinstance(number, int) and not name.startswith("SIG_"):
            return number
    raise ContainerError(f"unknown signal {text!r}")


def kill(root, container_id, signal_text="SIGTERM", all_processes=False):
    signum = parse_signal(signal_text)
    container = Container(root, container_id)
    if all_processes:
        # As runc, whatever the status: once the init of a container sharing
        # a pid namespace exits, its other processes live on in its cgroup,
        # and containerd's shim kills them with `kill --all ID 9`. Locked:
        # it freezes and thaws the cgroup, as pause and resume do.
        _signal_cgroup(container.lock_existing().record, signum)
        return
    container.load()
    if not state.can_kill(container.status()):
        raise ContainerError("container not running")
    if not _signal_init(container, signum):
        raise ContainerError("container not running")


def _signal_init(container, signum, wait=False):
    """Signal init through a pidfd, so a recycled pid is never hit; with WAIT,
    until it has exited. False if init is no longer the recorded process."""
    pid = container.record["pid"]
    pidfd = procfs.open_pidfd(pid)
    if pidfd is None:
        return False
    try:
        if not procfs.is_alive(pid, container.record["pid_start_time"]):
            return False
        _signal.pidfd_send_signal(pidfd, signum)
        if wait:
            _wait_pidfd(pidfd)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def delete(root, container_id, force=False):
    container = Container(root, container_id)
    try:
        container.lock_existing()
    except state.CorruptState:
        if not force:
            raise
        container.record = _salvaged_record(container)
    except ContainerError:
        if force:
            return
        raise
    _delete(container, force)


def _salvaged_record(container):
    """What delete --force can still know of a container whose state.json
    is unusable: its init's pid is lost, but the config create kept says
    where its cgroups are, and killing what is in them stops it."""
    record = container.record = state.empty_record(container.id)
    try:
        config, _ = container.load_config()
    except (OSError, ValueError, KeyError) as exc:
        log.warning(f"container {container.id}: no usable config.json either ({describe(exc)}): "
                    "its processes and cgroups, if any, are left to the host")
        return record
    manager = cgroups.manager_for(config.linux.cgroups_path, container.id)
    record["cgroup_paths"] = {key: path for key, path in manager.paths.items()
                              if os.path.isdir(path)}
    record["shares_host_pids"] = _shares_host_pids(config)
    return record


def destroy(container):
    """Kill what is left of a locked container and remove it, as delete --force."""
    _delete(container, force=True)


def _delete(container, force, hooks_cwd=None):
    log.fault_point("delete:locked")
    status = container.status()
    log.debug(f"delete {container.id}: status {status}, force {force}")
    if not state.can_delete(status):
        if not force:
            raise ContainerError(
                f"cannot delete container {container.id} that is not stopped: {status}")
    paths = container.record.get("cgroup_paths")
    if paths:
        _kill_cgroup_and_remove(cgroups.from_record(container.record), container.record)
        log.fault_point("delete:processes-killed")
    if status != state.STOPPED:
        _signal_init(container, _signal.SIGKILL, wait=True)
        log.fault_point("delete:init-killed")
    container.remove_dir()
    log.fault_point("delete:dir-removed")
    _run_poststop(container, hooks_cwd)


def _run_poststop(container, cwd=None):
    poststop = _hooks_from_record(container, "poststop")
    if poststop:
        from pyoci import hooks
        hooks.run_all_warning(poststop, container.hook_state(state.STOPPED), "poststop", cwd)


def _wait_pidfd(pidfd):
    import select
    select.select([pidfd], [], [])


def _shares_host_pids(config):
    pid_ns = config.linux.namespace("pid")
    return pid_ns is None or pid_ns.path is not None


def _signal_cgroup(record, signum):
    """Signal every process of the container in its cgroup (kill --all); a
    cgroup already gone has none."""
    if not record.get("cgroup_paths"):
        return
    for pidfd in _signal_cgroup_processes(cgroups.from_record(record), record, signum):
        os.close(pidfd)


def _signal_cgroup_processes(manager, record, signum):
    """Signal the container's processes in its cgroup, frozen meanwhile
    (where there is a freezer) so that none forks past the signal, then
    thawed, as runc does: a paused container's processes die only once
    thawed. Returns their pidfds, for the caller to close."""
    if not manager.pids():
        return []
    try:
        manager.freeze(True)
    except (ExecError, OSError):
        pass  # no freezer, or the cgroup went meanwhile: signal unfrozen
    pidfds = []
    try:
        for pidfd in _container_pidfds(manager, record):
            _send(pidfd, signum)
            pidfds.append(pidfd)
    finally:
        try:
            manager.freeze(False)
        except (ExecError, OSError):
            pass
    return pidfds


def _send(pidfd, signum):
    """Signal the process of PIDFD, which may have exited meanwhile."""
    try:
        _signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        pass


def _container_pidfds(manager, record):
    """pidfds of the container's processes in its cgroup.

    With a pid namespace of its own, the container's processes are the
    cgroup's processes outside ours: a process of the host that shares the
    cgroup is not the container's to signal. Sharing our pid namespace,
    everything in the cgroup is the container's, as with runc.
    """
    ours = os.readlink("/proc/self/ns/pid")
    shares_host_pids = record.get("shares_host_pids", True)
    for pid in manager.pids():
        try:
            if not shares_host_pids and os.readlink(f"/proc/{pid}/ns/pid") == ours:
                continue
        except FileNotFoundError:
            continue
        pidfd = procfs.open_pidfd(pid)
        if pidfd is not None:
            yield pidfd


def _kill_cgroup_and_remove(manager, record):
    """SIGKILL the container's processes left in its cgroup, wait for them, and
    remove the cgroup directories create made."""
    for pidfd in _signal_cgroup_processes(manager, record, _signal.SIGKILL):
        _wait_pidfd(pidfd)
        os.close(pidfd)
    manager.destroy(record.get("cgroup_owned"))


def run(root, container_id, options, detach=False, keep=False):
    """create + start; in the foreground, wait and return the exit status.

    A foreground container with a terminal and no console socket gets its
    pty proxied to our own stdio, as runc does.
    """
    options.own_terminal = not detach
    container = create(root, container_id, options)
    pid = container.record["pid"]
    master = container.terminal_master
    if not detach:
        # Before start: a signal must never find us without a handler once the program runs.
        forward_signals(pid, (_signal.SIGWINCH,) if master is not None else ())
    # runc runs in the bundle: so does the poststop hook of its end.
    try:
        _start(container, hooks_cwd=options.bundle)
    except HookError:
        raise  # _start has destroyed the container
    except BaseException:
        _delete(container, force=True, hooks_cwd=options.bundle)
        raise
    if detach:
        return 0
    return wait_and_delete(container, master, options.bundle, keep)


def wait_and_delete(container, master, bundle, keep=False):
    """A foreground container's end: wait for its init (our child), proxying
    the terminal MASTER if we hold it, then delete it unless KEEP; its exit
    status."""
    pid = container.record["pid"]
    # Not locked while it runs: the other commands (kill --all, pause,
    # delete --force of a container that ignores signals) reach it meanwhile.
    container.unlock()
    if master is not None:
        from pyoci import console
        status = console.proxy_and_wait(master, pid, wait_for)
    else:
        status = wait_for(pid)
    log.debug(f"{container.id}: pid {pid} exited, status {status}")
    if not keep:
        try:
            container.lock_existing()
        except ContainerError:
            return status  # deleted meanwhile
        _delete(container, force=True, hooks_cwd=bundle)
    return status


def forward_signals(pid, handled_here=()):
    """From now on pass every signal we get on to PID, except HANDLED_HERE."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for signum in _signal.valid_signals():
        if signum not in (_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD, *handled_here):
            try:
                _signal.signal(signum, forward)
            except (OSError, ValueError):
                pass


def wait_for(pid):
    """PID's exit status, 128+signal if killed (our child: we are its subreaper)."""
    while True:
        waited, status = os.waitpid(-1, 0)
        if waited == pid:
            break
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def write_default_spec(bundle, rootless):
    from pyoci.spec import default_config
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise ExecError("File config.json exists. Remove it first.")
    with open(path, "w") as f:
        f.write(jsontext.dumps(default_config(rootless), indent="\t"))
