"""What a container's init (PID 1) does between fork and exec.

Runs in the forked child, in the container's namespaces, and leaves only
by exec (of pyoci-waiter, or of the user's program) or os._exit (through
process._child, which reports any error to the runtime as data).
"""
import errno
import _socket
import os

from pyoci import hooks, log, sync
from pyoci.errors import ExecError, describe, errno_text
# Everything init uses is imported here, and process.py imports this module
# before it forks: after pivot_root the host's site-packages are out of reach,
# and after the switch to a user namespace's root they may be unreadable.
# What only some configs use (the terminal) process._preload loads for them.
from pyoci.linux import (caps, cgroups, credentials, lsm, namespaces, network, procfs, rlimits,
                         rootfs)
from pyoci.linux import syscalls as sc

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(syscalls, context):
    config = context.config
    linux = config.linux
    sock = context.sync_sock
    placed = _Placement(syscalls, context)
    os.setsid()
    if not context.no_new_keyring:
        _join_session_keyring(syscalls, context.container_id,
                              config.process and config.process.selinux_label)
    if linux.namespace("network") and linux.namespace("network").path is None:
        network.loopback_up()

    # Without a mount namespace the host's mount table is ours: like runc,
    # make no mounts and only chroot into the root filesystem.
    own_mounts = linux.namespace("mount") is not None
    if own_mounts:
        log.debug(f"init: preparing the root filesystem {config.root_path}: "
                  f"{len(config.mounts)} mounts")
        rootfs.prepare(syscalls, config, context.bundle, _cgroup_mounter(syscalls, context),
                       _MountSources(sock, placed),
                       # the container's own, or the runtime's (rootless podman)
                       procfs.in_user_namespace(), placed.wait)
    placed.wait()
    log.fault_point("create:init/mounted")
    sync.send(sock, sync.RUN_HOOKS)
    state = sync.receive(sock, sync.HOOKS_DONE)["state"]
    state["pid"] = os.getpid()  # as seen in the container's pid namespace
    # In the root filesystem, not yet pivoted to, with the process's env
    # (but HOME, not yet known), as runc runs them.
    hook_env = (env_mapping(list(config.process.env) + context.extra_env)
                if config.process is not None else None)
    hooks.run(config.hooks.create_container, state, "createContainer", cwd=config.root_path,
              env=hook_env)

    if own_mounts:
        log.debug("init: entering the root filesystem by "
                  + ("MS_MOVE and chroot (--no-pivot)" if context.no_pivot else "pivot_root"))
        rootfs.enter(syscalls, config.root_path, context.no_pivot)
        rootfs.reopen_dev_null()
        log.fault_point("create:init/pivoted")
    else:
        log.debug("init: no mount namespace: chroot into the root filesystem")
        rootfs.chroot(config.root_path)
        # No /proc to reopen the fifo's O_PATH fd through: the waiter opens
        # exec.fifo in the state directory instead (see csrc/waiter.c).
        os.close(context.fifo_fd)
        context.fifo_fd = context.state_dir_fd
    if config.hostname is not None and linux.namespace("uts"):
        _socket.sethostname(config.hostname)
    if config.domainname is not None:
        syscalls.setdomainname(config.domainname)
    _write_sysctls(linux.sysctl)
    if own_mounts:
        rootfs.finish(syscalls, config)

    process = config.process
    if process is None:
        # start will refuse; init only has to wait like any created container.
        _finish_and_exec(syscalls, context, "/", ["/"], [], state, None)
    program, env, seccomp_filter = become_process(syscalls, context, process, context.extra_env,
                                                  mount_console=True)
    log.fault_point("create:init/ready")
    _finish_and_exec(syscalls, context, program, process.args, env, state, seccomp_filter)


def run_exec(syscalls, context):
    """An `exec` process, already in the container's namespaces and cgroups."""
    process = context.process
    sync.receive(context.sync_sock, sync.GO)
    if process.terminal:
        os.setsid()
    if not context.no_new_keyring:
        _join_session_keyring(syscalls, context.container_id, process.selinux_label)
    program, env, seccomp_filter = become_process(syscalls, context, process, [],
                                                  mount_console=False)
    keep = {0, 1, 2, context.sync_sock.fileno(), *range(3, 3 + context.preserve_fds)}
    for fd in range(3, 3 + context.preserve_fds):
        os.set_inheritable(fd, True)
    close_fds_except(keep)
    syscalls.reset_signals()
    environment = env_mapping(env)
    log.fault_point("exec:process/ready")
    sync.send(context.sync_sock, sync.READY)
    if seccomp_filter is not None:
        load_seccomp(syscalls, seccomp_filter)
    try:
        os.execve(program, process.args, environment)
    except OSError as exc:
        raise ExecError(f"exec {program}: {errno_text(exc.errno)}") from None


def become_process(syscalls, context, process, extra_env, mount_console):
    """Everything of config's `process` but the exec: terminal, rlimits,
    personality, scheduling, user, capabilities, cwd, no_new_privs; shared by
    init and `exec` (only init's terminal becomes /dev/console: MOUNT_CONSOLE).
    CONTEXT (an InitContext or ExecContext) has what create or exec prepared.

    Returns (program path, env list, the seccomp filter still to load just
    before exec, or None if it had to be loaded here already).
    """
    # Early, as runc: before no_new_privs, and before a seccomp filter that
    # might refuse the write.
    lsm.set_for_exec(process.apparmor_profile, process.selinux_label)
    if process.terminal:
        _setup_terminal(syscalls, context.console_socket_fd, process, mount_console)
    rlimits.apply(context.rlimits)
    if context.persona is not None:
        syscalls.personality(context.persona)
    context.placement.apply(syscalls)
    seccomp_filter = context.seccomp
    if seccomp_filter is not None and not process.no_new_privileges:
        # Without no_new_privs loading a filter needs CAP_SYS_ADMIN: do it
        # before the capabilities go, as runc does; else as late as possible.
        _load_seccomp_now(syscalls, context, seccomp_filter)
        seccomp_filter = None
    env = list(process.env) + extra_env
    if not env_mapping(env).get("HOME"):
        # Read while still root: the user may not be able to read it.
        env.append(f"HOME={credentials.home_of(process.user.uid)}")
    # As runc: first as the runtime's root, which reaches directories the
    # user may not; where root is refused (a root-squashed NFS mount, an
    # owner the user namespace does not map), again as the user.
    entered = _enter_cwd(process.cwd, retry_on_permission=True)
    _become_user(syscalls, process, context.caps)
    if not entered:
        _enter_cwd(process.cwd, retry_on_permission=False)
    user_caps = caps.effective(context.caps, process.user.uid)
    program = find_program(process.args[0] if process.args else "", env,
                           lambda path: credentials.may_execute(path, process.user, user_caps))
    log.debug(f"{'init' if mount_console else 'exec'}: the process: uid {process.user.uid}, "
              f"gid {process.user.gid}, cwd {process.cwd}, program {program}")
    if process.no_new_privileges:
        syscalls.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    if seccomp_filter is not None and seccomp_filter.notifies:
        # The agent must have the listener before the program runs, from
        # the runtime that is still there: now, as runc does.
        _load_seccomp_now(syscalls, context, seccomp_filter)
        seccomp_filter = None
    return program, env, seccomp_filter


def _load_seccomp_now(syscalls, context, seccomp_filter):
    """Load the filter; a notifying one's listener goes to the runtime."""
    listener = load_seccomp(syscalls, seccomp_filter)
    if seccomp_filter.notifies:
        sync.send(context.sync_sock, sync.SECCOMP_LISTENER, fd=listener)
        os.close(listener)


def _enter_cwd(cwd, retry_on_permission):
    """chdir to CWD; False if permission was denied and a retry is allowed."""
    try:
        os.chdir(cwd)
    except OSError as exc:
        if retry_on_permission and exc.errno in (errno.EACCES, errno.EPERM):
            return False
        raise ExecError(f"chdir to cwd ({cwd!r}) set in config.json failed: "
                        f"{errno_text(exc.errno)}") from None
    return True


def _finish_and_exec(syscalls, context, program, args, env, state, seccomp_filter):
    """Close what the container must not inherit, report READY, and exec.

    Normally exec pyoci-waiter, which blocks on exec.fifo and loads
    SECCOMP_FILTER (if any) just before it executes the program; the sync
    socket is close-on-exec, so the runtime reads end-of-file once the
    waiter's exec happened. With startContainer hooks init itself waits,
    runs them, loads the filter, then execs.
    """
    start_hooks = context.config.hooks.start_container
    process = context.config.process
    # Init waits for start itself, and itself executes the program, when
    # startContainer hooks must run in the container, when the program
    # needs init's capabilities to be executed at all, or when an LSM
    # profile or label is to be entered by the program's exec, not the waiter's.
    waits_itself = bool(start_hooks) or (process is not None and (
        process.apparmor_profile or process.selinux_label
        or not _waiter_may_execute(context.caps, process.user, program)))
    log.debug(f"init: ready; {'init' if waits_itself else 'pyoci-waiter'} waits on exec.fifo, "
              f"then executes {program}")
    environment = env_mapping(env)
    seccomp_fd = _seccomp_memfd(seccomp_filter) if seccomp_filter is not None else -1
    keep = {0, 1, 2, context.fifo_fd, context.waiter_fd, context.sync_sock.fileno(), seccomp_fd}
    keep.update(range(3, 3 + context.preserve_fds))
    for fd in range(3, 3 + context.preserve_fds):
        os.set_inheritable(fd, True)
    os.set_inheritable(context.fifo_fd, True)
    close_fds_except(keep)
    # CPython ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec.
    syscalls.reset_signals()
    sync.send(context.sync_sock, sync.READY)
    if waits_itself:
        context.sync_sock.close()
        _wait_for_start_then_exec(syscalls, context.fifo_fd, program, args, environment,
                                  start_hooks, state, seccomp_filter)
    flags = seccomp_filter.flags if seccomp_filter is not None else 0
    os.execve(context.waiter_fd, ["pyoci-waiter", str(context.fifo_fd), str(seccomp_fd),
                                  str(flags), program, *args], environment)


def _waiter_may_execute(cap_sets, user, program):
    """Whether pyoci-waiter, once init has executed it, may execute PROGRAM
    as init could: execve judges by the caller's capabilities (a user with
    CAP_DAC_OVERRIDE runs a mode 0700 program), and the waiter's own exec
    changes them (another user's waiter keeps only its ambient ones)."""
    if caps.effective_kept_across_exec(cap_sets, user.uid):
        return True
    return credentials.may_execute(program, user, caps.effective_after_exec(cap_sets, user.uid))


def _seccomp_memfd(seccomp_filter):
    """The filter's bytes in an inheritable memfd, for the waiter to read."""
    fd = os.memfd_create("pyoci-seccomp", 0)
    os.write(fd, seccomp_filter.program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def load_seccomp(syscalls, seccomp_filter):
    """Load the filter; returns the listener fd of one that notifies."""
    try:
        return syscalls.seccomp_load(seccomp_filter.flags, seccomp_filter.program)
    except OSError as exc:
        raise ExecError(f"load seccomp filter: {errno_text(exc.errno)}") from None


def env_mapping(env):
    """process.env's "KEY=value" list as exec wants it; a later KEY wins."""
    return dict(item.split("=", 1) for item in env if "=" in item)


def _wait_for_start_then_exec(syscalls, fifo_fd, program, args, environment, start_hooks,
                              state, seccomp_filter):
    """The waiter's protocol (see csrc/waiter.c), plus the startContainer hooks."""
    try:
        fifo = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # no /proc: fifo_fd is the state directory
        fifo = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fifo_fd)
    os.write(fifo, b"0")
    os.close(fifo_fd)
    try:
        state["status"] = "running"
        hooks.run(start_hooks, state, "startContainer", env=environment)
    except BaseException as exc:  # noqa: BLE001 - start must hear of any failure
        os.write(fifo, b"H" + describe(exc).encode())
        os._exit(1)
    if seccomp_filter is not None:
        try:
            syscalls.seccomp_load(seccomp_filter.flags, seccomp_filter.program)
        except OSError as exc:
            os.write(fifo, b"S%d" % exc.errno)
            os._exit(127)
    try:
        os.execve(program, args, environment)
    except OSError as exc:
        os.write(fifo, b"E%d %s" % (exc.errno, os.fsencode(program)))
        os._exit(127)


def find_program(name, env, may_execute, stat=os.stat):
    """Resolve the program as exec(3)'s PATH search would, inside the
    container: the first candidate MAY_EXECUTE(path) allows. STAT tells
    why a path given was not (pyoci check looks from outside the root)."""
    if not name:
        raise ExecError("process.args: no program given")
    if "/" in name:
        candidates = [name]
    else:
        path = next((item[5:] for item in env if item.startswith("PATH=")), DEFAULT_PATH)
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    for candidate in candidates:
        if may_execute(candidate):
            return candidate
    if "/" not in name:
        raise ExecError(f'exec: "{name}": executable file not found in $PATH')
    try:
        stat(name)
    except OSError as exc:
        raise ExecError(f'exec: "{name}": stat {name}: {errno_text(exc.errno)}') from None
    raise ExecError(f'exec: "{name}": permission denied')


def _become_user(syscalls, process, sets):
    """Bounding set, user switch keeping capabilities, then the final sets."""
    if sets is not None:
        caps.drop_bounding(syscalls, sets)
        syscalls.prctl(sc.PR_SET_KEEPCAPS, 1)
    credentials.switch_user(process.user)
    if sets is not None:
        syscalls.prctl(sc.PR_SET_KEEPCAPS, 0)
        try:
            caps.apply(syscalls, sets)
        except OSError as exc:
            raise ExecError(f"apply capabilities: {errno_text(exc.errno)}") from None


def _setup_terminal(syscalls, console_socket_fd, process, mount_console):
    if console_socket_fd is None:
        raise ExecError("cannot allocate a tty for a detached container without a console socket")
    from pyoci.linux import terminal  # loaded before the fork (process._preload)
    master, slave_path = terminal.open_pty()
    terminal.send_master(console_socket_fd, master)
    os.close(master)
    terminal.become_controlling(syscalls, slave_path, process.console_size, mount_console)


def _join_session_keyring(syscalls, container_id, selinux_label):
    """A session keyring of the container's own, labelled as its process
    (SELinux), as runc makes it."""
    if selinux_label:
        lsm.set_keyring_label(selinux_label)
    try:
        syscalls.join_session_keyring(f"_ses.{container_id}")
    except OSError as exc:
        # Kernels without keyrings (ENOSYS) or that deny them to namespaces.
        if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EACCES):
            raise ExecError(f"join session keyring: {errno_text(exc.errno)}") from None
    finally:
        if selinux_label:
            lsm.set_keyring_label("")


def _write_sysctls(sysctl):
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            procfs.write_in_procfs(path, value)
        except OSError as exc:
            raise ExecError(f"write sysctl {key}: {errno_text(exc.errno)}") from None


class _Placement:
    """The runtime's GO, with the cgroups it has placed init in: placing may
    wait out a grace period (process.spawn_init), and init makes meanwhile
    the mounts that need none of it. What does waits here first: a cgroup
    mount, a filesystem on a device and the devices made (the devices
    cgroup checks their access, as for runc's init, which is in the
    container's cgroups by then), a source the runtime opens. Then the new
    cgroup namespace, rooted at those cgroups. (The kernel memory of the
    first mounts, a few KiB, is charged to the runtime's cgroup.)"""

    def __init__(self, syscalls, context):
        self._syscalls = syscalls
        self._context = context
        self._placed = False

    def wait(self):
        if self._placed:
            return
        self._placed = True
        context = self._context
        context.cgroup_paths = sync.receive(context.sync_sock, sync.GO)["cgroup_paths"]
        cgroupns = context.config.linux.namespace("cgroup")
        if cgroupns is not None and cgroupns.path is None:
            namespaces.unshare(self._syscalls, sc.CLONE_NEWCGROUP)


def _cgroup_mounter(syscalls, context):
    own_namespace = context.config.linux.namespace("cgroup") is not None

    def mount(attach, options):
        cgroups.mount_cgroupfs(syscalls, attach, options.flags, context.cgroup_paths,
                               own_namespace)
    return mount


class _MountSources:
    """Asks the runtime, which is the host's root in the host's namespaces,
    for what init may not make itself: the source of a bind mount that only
    the host's root can reach, and an idmapped copy of a source. The runtime
    resolves the path in init's mount namespace, so sources under earlier
    mounts are what those mounts made (pyoci/linux/mount_sources.py)."""

    def __init__(self, sock, placed):
        self._sock = sock
        self._placed = placed  # the runtime serves sources once it has placed init

    def open(self, index):
        """An O_PATH descriptor of mounts[INDEX]'s source."""
        return self._request(index, idmapped=False)

    def idmapped(self, index):
        """A detached, idmapped copy of mounts[INDEX]'s source, for move_mount."""
        return self._request(index, idmapped=True)

    def _request(self, index, idmapped):
        self._placed.wait()
        sync.send(self._sock, sync.MOUNT_SOURCE, index=index, idmapped=idmapped)
        return sync.receive_fd(self._sock, sync.MOUNT_FD)


def close_fds_except(keep):
    log.forget_destination()  # its fd is not kept
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)

