"""`exec`: run another process in a running container, as runc does.

The process is what --process FILE gives (a runtime-spec process object),
or the container's own process with the command line and flags applied.
It joins every namespace the container was created with, its cgroups, and
its capabilities, rlimits, no_new_privs and seccomp, as the process says.
Every failure is "exec failed: ..." and exit status 255, like runc.
"""
import _signal
import os

from pyoci import jsontext, log, state
from pyoci.errors import ConfigError, ContainerError, ExecError, errno_text
from pyoci.linux import cgroups, unix
from pyoci.state import Container

class ExecOptions:
    """`exec`'s flags; PROCESS is a process object (what --process FILE
    holds) given as a dict, STDIO (stdin, stdout, stderr) fds for it."""
    __slots__ = ("process", "process_file", "args", "tty", "detach", "pid_file", "console_socket",
                 "pidfd_socket", "cwd", "env", "user", "additional_gids", "caps",
                 "no_new_privs", "apparmor", "process_label", "preserve_fds", "cgroup",
                 "ignore_paused", "stdio")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


def execute(root, container_id, options):
    """Run the process; in the foreground return its exit status, else 0."""
    from pyoci import lifecycle
    pid, master = spawn(root, container_id, options)
    if options.detach:
        return 0
    lifecycle.forward_signals(pid, (_signal.SIGWINCH,) if master is not None else ())
    if master is not None:
        from pyoci import console
        status = console.proxy_and_wait(master, pid, lifecycle.wait_for)
    else:
        status = lifecycle.wait_for(pid)
    log.debug(f"exec {container_id}: pid {pid} exited, status {status}")
    return status


def spawn(root, container_id, options):
    """Start the process and return (its pid, the terminal master we hold,
    or None). A process with a terminal and no console socket gives its
    master to us unless detached."""
    from pyoci import lifecycle, process as processes
    from pyoci.linux.namespaces import NS_FILES
    container = Container(root, container_id).load()
    status = container.status()
    if status == state.STOPPED:
        raise ContainerError("cannot exec in a stopped container")
    if status == state.PAUSED and not options.ignore_paused:
        raise ContainerError("cannot exec in a paused container (use --ignore-paused)")
    config, raw_config = container.load_config()
    proc = _process(config, raw_config.get("process") or {}, options)
    init_pid = container.record["pid"]
    log.debug(f"exec {container_id}: {status} container, init {init_pid}, args {proc.args}")
    prepared = lifecycle.process_settings(config, proc)
    _keep_runtime_exe_out_of_reach(container, config, proc)
    fds = []
    try:
        join = {}
        for ns in config.linux.namespaces:
            join[ns.type] = os.open(f"/proc/{init_pid}/ns/{NS_FILES[ns.type]}",
                                    os.O_RDONLY | os.O_CLOEXEC)
            fds.append(join[ns.type])
        chroot_fd = None
        if "mount" not in join:  # a chroot-only container: follow init into its root
            chroot_fd = os.open(f"/proc/{init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            fds.append(chroot_fd)
        console_fd = terminal_end = None
        if proc.terminal:
            if options.console_socket:
                console_fd = unix.connect_unix(options.console_socket, "console socket")
            elif not options.detach:
                terminal_end, console_end = unix.console_pair()
                console_fd = console_end.detach()
            else:
                raise ExecError("cannot allocate a tty for a detached process without a console socket")
            fds.append(console_fd)
        context = processes.ExecContext(
            process=proc, join=join, chroot_fd=chroot_fd, container_id=container_id,
            console_socket_fd=console_fd, preserve_fds=options.preserve_fds or 0,
            caps=prepared["caps"], rlimits=prepared["rlimits"], seccomp=prepared["seccomp"],
            placement=prepared["placement"], persona=prepared["persona"],
            no_new_keyring=False, user_namespace="user" in join, stdio=options.stdio)
        manager = _cgroups(container, options.cgroup)
        pidfd_socket_fd = None
        if options.pidfd_socket:
            pidfd_socket_fd = unix.connect_unix(options.pidfd_socket, "pidfd socket")
            fds.append(pidfd_socket_fd)
        pid = processes.spawn_exec(context, manager.add,
                                   lifecycle.seccomp_agent(prepared["seccomp"], container,
                                                           state.RUNNING))
        if pidfd_socket_fd is not None:
            unix.send_pidfd(pidfd_socket_fd, pid)
        master = unix.receive_master(terminal_end) if terminal_end is not None else None
        log.fault_point("exec:executed")
    except OSError as exc:
        raise ExecError(errno_text(exc.errno)) from None
    finally:
        for fd in fds:
            os.close(fd)
    if options.pid_file:
        state.write_atomic(os.path.abspath(options.pid_file), str(pid).encode())
    return pid, master


def _keep_runtime_exe_out_of_reach(container, config, proc):
    """Run from a sealed copy where the container may open our exe; that
    an exec gave a process the means to is remembered for later execs."""
    from pyoci.linux import runtime_exe
    mark = os.path.join(container.dir, runtime_exe.PTRACE_MARK)
    gives_reach = runtime_exe.ptrace_reaches_us(config, [proc.capabilities])
    if gives_reach or os.path.exists(mark) or (config.process is not None and (
            runtime_exe.ptrace_reaches_us(config, [config.process.capabilities]))):
        runtime_exe.run_from_sealed_copy()
        if gives_reach:
            os.close(os.open(mark, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))


def _process(config, container_process, options):
    """The process object to run, validated like a config's; the container's
    own process (CONTAINER_PROCESS) gives the defaults for flags."""
    from pyoci.spec import Process
    from pyoci.validate import validate_config
    if options.process is not None:
        raw = options.process
    elif options.process_file:
        try:
            with open(options.process_file, "rb") as f:
                raw = jsontext.loads(f.read())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"process file {options.process_file}: {exc}") from None
    else:
        if not options.args:
            raise ConfigError("exec: a command (or --process) is required")
        raw = jsontext.loads(jsontext.dumps(container_process))  # a deep copy
        raw["args"] = list(options.args)
        raw["terminal"] = bool(options.tty)
        raw["env"] = list(raw.get("env") or []) + list(options.env or [])
        if options.cwd:
            raw["cwd"] = options.cwd
        if options.user:
            uid, _, gid = options.user.partition(":")
            raw["user"] = {**raw.get("user", {}), "uid": int(uid), "gid": int(gid or 0)}
        if options.additional_gids:
            raw.setdefault("user", {})["additionalGids"] = [int(g) for g in options.additional_gids]
        if options.caps:
            caps = raw.setdefault("capabilities", {})
            # As runc: --cap widens the bounding, effective and permitted sets only.
            for set_name in ("bounding", "effective", "permitted"):
                caps[set_name] = list(dict.fromkeys([*(caps.get(set_name) or []), *options.caps]))
        if options.no_new_privs:
            raw["noNewPrivileges"] = True
        if options.apparmor:
            raw["apparmorProfile"] = options.apparmor
        if options.process_label:
            raw["selinuxLabel"] = options.process_label
    from pyoci.linux import lsm
    from pyoci.spec import check_supported
    try:
        validate_config({"ociVersion": config.oci_version, "process": raw})
        check_supported({"process": raw})
        process = Process(raw)
        lsm.check(process.apparmor_profile, process.selinux_label, None)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("config.json: ", "process: ", 1)) from None
    return process


def _cgroups(container, cgroup_args):
    """The container's cgroups, or those --cgroup names below them."""
    paths = dict(container.record.get("cgroup_paths") or {})
    for key, sub_path in sub_cgroup_paths(cgroup_args, paths).items():
        directory = os.path.normpath(os.path.join(paths[key], sub_path.lstrip("/")))
        if not directory.startswith(paths[key].rstrip("/") + "/") and directory != paths[key]:
            raise ExecError(f"--cgroup {sub_path}: not below the container's cgroup {paths[key]}")
        if not os.path.isdir(directory):
            raise ExecError(f"--cgroup {sub_path}: {directory} does not exist")
        paths[key] = directory
    return cgroups.Cgroups(paths)


def sub_cgroup_paths(cgroup_args, paths):
    """runc's --cgroup: one PATH for every hierarchy, or CONTROLLER[,…]:PATH
    per controller (v1; each may be given once). Returns {paths key: PATH}."""
    if not cgroup_args:
        return {}
    if len(cgroup_args) == 1 and ":" not in cgroup_args[0]:
        return {key: cgroup_args[0] for key in paths}
    chosen = {}
    for arg in cgroup_args:
        controllers, colon, sub_path = arg.partition(":")
        if not colon:
            raise ExecError(f"invalid --cgroup argument: {arg} (missing <controller>: prefix)")
        if ":" in sub_path:
            raise ExecError(f"invalid --cgroup argument: {arg}")
        for controller in controllers.split(","):
            key = controller if controller in paths else f"name={controller}"
            if key not in paths or key == cgroups.UNIFIED_KEY:
                known = ", ".join(k for k in paths if k != cgroups.UNIFIED_KEY) or "none: cgroup v2"
                raise ExecError(f"invalid --cgroup argument: {arg}: no {controller!r} hierarchy "
                                f"(the container's: {known})")
            chosen[key] = sub_path
    return chosen
