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
"""
from pyoci.state import Container, default_root, list_states

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
        return lifecycle.create(self.root, container_id, self.create_options(
            bundle, stdio=stdio, own_terminal=terminal, **options))

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
        pid, master = spawn(self.root, container_id, ExecOptions(
            process=process, stdio=stdio, detach=not terminal_master, **options))
        return (pid, master) if terminal_master else pid

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
