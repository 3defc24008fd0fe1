"""Unix sockets and the descriptors passed over them (SCM_RIGHTS), through
the built-in _socket: importing `socket` (its IntEnums, selectors, array)
would cost every create about 5 ms. Sockets are close-on-exec, as Python
makes them; received descriptors are not (as socket.recv_fds)."""
import _socket
import os
import sys

from pyoci.errors import ExecError, errno_text

STREAM = _socket.SOCK_STREAM
SEQPACKET = _socket.SOCK_SEQPACKET
_FD_SIZE = 4  # a C int


def pair(kind):
    """Two connected unix sockets of KIND."""
    return _socket.socketpair(_socket.AF_UNIX, kind)


def connect(path, kind=STREAM):
    """A unix socket of KIND connected to PATH; OSError if it cannot be."""
    sock = _socket.socket(_socket.AF_UNIX, kind)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def of_fd(fd):
    """The socket object of FD, which it then owns."""
    return _socket.socket(fileno=fd)


def send_fds(sock, data, fds):
    """DATA, with FDS, in one message."""
    payload = b"".join(fd.to_bytes(_FD_SIZE, sys.byteorder) for fd in fds)
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)])


def receive_fds(sock, size, max_fds):
    """(data of up to SIZE bytes, [descriptors that came with it, up to MAX_FDS])."""
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_LEN(max_fds * _FD_SIZE))
    fds = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % _FD_SIZE
            fds += [int.from_bytes(payload[at:at + _FD_SIZE], sys.byteorder)
                    for at in range(0, whole, _FD_SIZE)]
    return data, fds


def console_pair():
    """The runtime's and init's ends of the socket a terminal's master comes over."""
    return pair(STREAM)


def receive_master(sock):
    """The terminal master fd init sends over SOCK, which is then closed."""
    try:
        _, fds = receive_fds(sock, 64, 1)
    finally:
        sock.close()
    if not fds:
        raise ExecError("container init sent no terminal")
    return fds[0]


def connect_unix(path, what):
    """An fd connected to the unix socket PATH (a console or pidfd socket)."""
    try:
        return connect(path).detach()
    except OSError as exc:
        raise ExecError(f"connect to {what} {path}: {errno_text(exc.errno)}") from None


def send_pidfd(sock_fd, pid):
    """A pidfd of PID over the --pidfd-socket (SCM_RIGHTS), as runc 1.2 sends it."""
    pidfd = os.pidfd_open(pid)
    try:
        sock = of_fd(os.dup(sock_fd))
        try:
            send_fds(sock, b"pidfd", [pidfd])
        finally:
            sock.close()
    except OSError as exc:
        raise ExecError(f"send the pidfd of {pid} to the pidfd socket: "
                        f"{errno_text(exc.errno)}") from None
    finally:
        os.close(pidfd)
