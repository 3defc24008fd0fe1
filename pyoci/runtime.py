"""pyoci as a Python library: the `pyoci` command's operations, as calls.

    from pyoci.runtime import Runtime

    runtime = Runtime("/run/my-tool")           # the state root (--root)
    container = runtime.create("web", "/srv/bundles/web")
    runtime.start("web")
    runtime.state("web")["status"]              # "running"
    pid = runtime.exec("web", {"args": ["ls", "/"], "cwd": "/"})
    runtime.kill("web", "SIGTERM")
    runtime.delete("web", force=True)

Every call does what the command of the same name does, in this process,
with the same checks and errors: a refusal raises a pyoci.errors.PyociError
(its text is the line the command prints, its exit_code the command's
status). The `pyoci` command itself is built on this class, and so is the
containerd shim (pyoci.shim).

Processes are forked from the caller, which becomes their subreaper (as
the command is): reap them with os.waitpid. STDIO, where a call takes it,
is (stdin, stdout, stderr) file descriptors for the container's process;
without it the process gets the caller's own 0, 1 and 2.

Where the container could reach this process's executable (see
pyoci.linux.runtime_exe), create and exec run the `pyoci` command from a
sealed copy of the interpreter instead, and wait for it: the result is the
same, the caller's process is never replaced.
"""
import os
import sys

from pyoci.state import Container, default_root, list_states

# create's and exec's options: their command-line flags, for a run from a sealed copy.
_FLAGS = {"pid_file": "--pid-file", "console_socket": "--console-socket",
          "pidfd_socket": "--pidfd-socket", "no_pivot": "--no-pivot",
          "no_new_keyring": "--no-new-keyring", "preserve_fds": "--preserve-fds",
          "cgroup": "--cgroup", "ignore_paused": "--ignore-paused"}

# Each call imports what it needs: a short command loads nothing more.


class Runtime:
    """The containers whose state lives under ROOT (default: runc's, /run/pyoci
    for root). SYSTEMD_CGROUP and ROOTLESS are the global flags of those names
    (ROOTLESS None: decided as runc does)."""

    def __init__(self, root=None, systemd_cgroup=False, rootless=None):
        self.root = root or default_root()
        self.systemd_cgroup = systemd_cgroup
        self.rootless = rootless

    def create(self, container_id, bundle, stdio=None, terminal=False, **options):
        """Create the container from BUNDLE; its process waits for start.

        TERMINAL: a process with a terminal and no console_socket leaves
        its pty master with us, as the returned Container's terminal_master.
        OPTIONS are create's flags: pid_file, console_socket, pidfd_socket,
        no_pivot, no_new_keyring, preserve_fds.
        """
        from pyoci import lifecycle
        from pyoci.linux.runtime_exe import NeedsSealedCopy
        try:
            container = lifecycle.create(self.root, container_id, self.create_options(
                bundle, stdio=stdio, own_terminal=terminal, **options))
            container.unlock()  # the caller goes on: the container is not its to hold
            return container
        except NeedsSealedCopy:
            pass
        master = self._from_sealed_copy(["create", "--bundle", bundle], container_id, stdio,
                                        terminal and not options.get("console_socket"), options)
        container = Container(self.root, container_id).load()
        container.terminal_master = master
        return container

    def create_options(self, bundle, **options):
        from pyoci import lifecycle
        return lifecycle.CreateOptions(bundle=bundle, systemd_cgroup=self.systemd_cgroup,
                                       rootless=self.rootless, **options)

    def run(self, container_id, bundle, detach=False, keep=False, **options):
        """create + start; unless DETACH, wait and return the exit status
        (a terminal is proxied to our stdio) and, unless KEEP, delete."""
        from pyoci import lifecycle
        return lifecycle.run(self.root, container_id, self.create_options(bundle, **options),
                             detach=detach, keep=keep)

    def checkpoint(self, container_id, criu_options):
        """Save the running container with CRIU (pyoci.checkpoint.CriuOptions:
        checkpoint's flags); unless they say leave it running, it is then gone."""
        from pyoci import checkpoint
        checkpoint.checkpoint(self.root, container_id, criu_options)

    def restore(self, container_id, bundle, criu_options, detach=False, subreaper=True,
                stdio=None, **options):
        """Bring a checkpoint back as container CONTAINER_ID of BUNDLE. Unless
        DETACH, wait for it (its orphans too, unless not SUBREAPER) and return
        its exit status. OPTIONS: pid_file, console_socket, no_pivot."""
        from pyoci import checkpoint
        if not detach and subreaper:
            from pyoci.linux import syscalls
            syscalls.syscalls().prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        return checkpoint.restore(self.root, container_id, self.create_options(
            bundle, stdio=stdio, own_terminal=not detach, **options), criu_options, detach)

    def start(self, container_id):
        """Run the created container's program; returns once it has been executed."""
        from pyoci import lifecycle
        lifecycle.start(self.root, container_id)

    def state(self, container_id):
        """The container's runtime-spec state: {"ociVersion", "id", "status", "pid", ...}."""
        return Container(self.root, container_id).load().oci_state()

    def list(self):
        """The state of every container, as `pyoci list --format json` prints them."""
        return list_states(self.root)

    def kill(self, container_id, signal="SIGTERM", all_processes=False):
        """Send SIGNAL (a name, "TERM", or a number as text or int) to init, or,
        with ALL_PROCESSES, to every process in the container's cgroup."""
        from pyoci import lifecycle
        lifecycle.kill(self.root, container_id, str(signal), all_processes=all_processes)

    def delete(self, container_id, force=False):
        """Remove a stopped container; FORCE kills a running one first."""
        from pyoci import lifecycle
        lifecycle.delete(self.root, container_id, force=force)

    def exec(self, container_id, process, stdio=None, terminal_master=False, **options):
        """Start PROCESS (a runtime-spec process object) in the running
        container and return its pid; with TERMINAL_MASTER and a process with
        a terminal, (pid, pty master). OPTIONS are exec's flags: pid_file,
        console_socket, pidfd_socket, preserve_fds, cgroup, ignore_paused."""
        from pyoci.execute import ExecOptions, spawn
        from pyoci.linux.runtime_exe import NeedsSealedCopy
        try:
            pid, master = spawn(self.root, container_id, ExecOptions(
                process=process, stdio=stdio, detach=not terminal_master, **options))
        except NeedsSealedCopy:
            pid, master = self._exec_from_sealed_copy(container_id, process, stdio,
                                                      terminal_master, options)
        return (pid, master) if terminal_master else pid

    def _exec_from_sealed_copy(self, container_id, process, stdio, terminal_master, options):
        import tempfile
        from pyoci import jsontext
        with tempfile.TemporaryDirectory(prefix="pyoci-exec-") as scratch:
            process_file = os.path.join(scratch, "process.json")
            pid_file = options.get("pid_file") or os.path.join(scratch, "pid")
            with open(process_file, "w") as f:
                f.write(jsontext.dumps(process))
            master = self._from_sealed_copy(
                ["exec", "--detach", "--process", process_file], container_id, stdio,
                terminal_master and process.get("terminal") and not options.get("console_socket"),
                {**options, "pid_file": pid_file})
            with open(pid_file) as f:
                return int(f.read()), master

    def _from_sealed_copy(self, args, container_id, stdio, take_master, options):
        """Run `pyoci ARGS [OPTIONS' flags] CONTAINER_ID` from a sealed copy of
        the interpreter, its stdio STDIO, and wait. Its error is raised here;
        with TAKE_MASTER, the terminal master it was sent is returned."""
        import _socket
        import tempfile
        from pyoci.errors import PyociError
        from pyoci.linux import runtime_exe, unix
        from pyoci.process import take_stdio
        for name, value in options.items():
            if value is True:
                args.append(_FLAGS[name])
            elif value:
                args += [_FLAGS[name], str(value)]
        with tempfile.TemporaryDirectory(prefix="pyoci-") as scratch:
            log_file = os.path.join(scratch, "log.json")
            listener = None
            if take_master:
                listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                listener.bind(os.path.join(scratch, "console"))
                listener.listen(1)
                args += ["--console-socket", os.path.join(scratch, "console")]
            argv = [sys.executable, "-IS", "-c", _COMMAND.format(path=sys.path),
                    "--root", self.root, "--log", log_file, "--log-format", "json",
                    *(["--systemd-cgroup"] if self.systemd_cgroup else []),
                    *([f"--rootless={str(self.rootless).lower()}"] if self.rootless is not None
                      else []), *args, container_id]
            interpreter = runtime_exe.sealed_interpreter()
            try:
                pid = os.fork()
                if pid == 0:
                    try:
                        take_stdio(stdio)
                        os.execve(interpreter, argv, os.environ)
                    finally:
                        os._exit(127)
            finally:
                os.close(interpreter)
            status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            try:
                if status != 0:
                    raise PyociError(_last_error(log_file) or f"pyoci {args[0]}: exit status {status}")
                if listener is not None:
                    listener.settimeout(5)
                    connection, _ = listener._accept()
                    return unix.receive_master(_socket.socket(fileno=connection))
                return None
            finally:
                if listener is not None:
                    listener.close()

    def pause(self, container_id):
        from pyoci import control
        control.pause(self.root, container_id)

    def resume(self, container_id):
        from pyoci import control
        control.resume(self.root, container_id)

    def pids(self, container_id):
        """The host pids of the container's processes."""
        from pyoci import control
        return control.pids(self.root, container_id)

    def update(self, container_id, resources):
        """Apply RESOURCES (a runtime-spec LinuxResources object) to the running container."""
        from pyoci import control
        control.update(self.root, container_id, resources)

    def stats(self, container_id):
        """runc's stats: the "data" of a `runc events --stats` line."""
        from pyoci import control
        return control.stats_event(Container(self.root, container_id).load())["data"]


# The pyoci command, as a sealed copy of the interpreter runs it.
_COMMAND = "import sys; sys.path[:] = {path!r}; from pyoci.cli import command; command()"


def _last_error(log_file):
    from pyoci import jsontext
    try:
        with open(log_file, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = jsontext.loads(line)
        except ValueError:
            continue
        if entry.get("level") == "error":
            return entry.get("msg")
    return None
