"""systemd's notify protocol through a container, as runc does it.

With NOTIFY_SOCKET in the runtime's environment (podman --sdnotify=container,
a systemd Type=notify unit), create gives the container a socket of its
own: the state directory's notify/notify.sock, bind-mounted read-only at
/run/notify, and NOTIFY_SOCKET=/run/notify/notify.sock in the process's
env. start (and run) listen on it, let the program run, wait for its
READY=1, and then tell the host's socket READY=1 and MAINPID=<init's pid>.
"""
import os

from pyoci.errors import ExecError, errno_text
from pyoci.linux import procfs

ENV = "NOTIFY_SOCKET"
DIRECTORY = "notify"
IN_CONTAINER = "/run/notify"
SOCKET_NAME = "notify.sock"


def host_socket():
    """The host's NOTIFY_SOCKET, or None."""
    return os.environ.get(ENV) or None


def prepare(config, state_dir):
    """At create: the directory the container's socket will be in, its
    mount and its env added to CONFIG (pyoci.spec's Config)."""
    from pyoci.spec import Mount
    directory = os.path.join(state_dir, DIRECTORY)
    os.mkdir(directory, 0o755)
    config.mounts.append(Mount({"destination": IN_CONTAINER, "type": "bind", "source": directory,
                                "options": ["bind", "nosuid", "noexec", "nodev", "ro"]}))
    config.process.env = [item for item in config.process.env
                          if not item.startswith(ENV + "=")]
    config.process.env.append(f"{ENV}={IN_CONTAINER}/{SOCKET_NAME}")


class Listener:
    """The container's notify socket, bound (again) by start before the program runs."""

    def __init__(self, state_dir):
        import socket
        self.path = os.path.join(state_dir, DIRECTORY, SOCKET_NAME)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)  # whatever the container's user

    def forward_when_ready(self, pid, host_path):
        """Wait for the container's READY=1 (or for init PID to exit), then
        send READY=1 and MAINPID=PID to HOST_PATH."""
        import select
        pidfd = procfs.open_pidfd(pid)
        if pidfd is None:
            return
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            while True:
                events = dict(poller.poll())
                if events.get(self.sock.fileno()):
                    message = self.sock.recv(4096)
                    if b"READY=1" in message.split(b"\n"):
                        break
                elif events.get(pidfd):
                    return  # it exited without being ready
        finally:
            os.close(pidfd)
        # runc's order and datagrams
        _send(host_path, b"READY=1\n", f"MAINPID={pid}\n".encode())

    def close(self):
        self.sock.close()


def _send(host_path, *messages):
    """Each of MESSAGES as a datagram to HOST_PATH ("@name": abstract)."""
    import socket
    address = "\0" + host_path[1:] if host_path.startswith("@") else host_path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            for message in messages:
                sock.sendto(message, address)
        except OSError as exc:
            raise ExecError(f"{ENV} {host_path}: {errno_text(exc.errno)}") from None
