"""The parent <-> init protocol of `create`.

Three processes take part: the runtime (``pyoci create``), the namespace
stage (a fork that enters or creates the namespaces) and init (its fork, the
container's PID 1). They talk over one SOCK_SEQPACKET socketpair, one JSON
object per packet, ``{"type": ...}``; either child may instead send
``{"type": "error", "message": ...}`` and leave with os._exit(1), and the
runtime then undoes what create did.

  runtime                          namespace stage                 init
  -------                          ---------------                 ----
  fork ----------------------------> (starts non-dumpable)
                                     setns(paths)
                                     [user ns: unshare(NEWUSER),
                                      dumpable until GO]
               <------------------- ID_MAP_REQUEST (user ns only)
  write uid_map / gid_map (or
  newuidmap / newgidmap)
  GO ------------------------------> unshare(rest but cgroup)
                                     [time ns: write offsets]
                                     fork -------------------------> (PID 1)
               <------------------- INIT_PID {pid}
  cgroups: make them, add init       os._exit(0)
  write oom_score_adj
  GO {cgroup_paths} --------------------------------------------------->
                                                                   [unshare(NEWCGROUP)]
                                                                   mounts, devices
               <----------------------------------------------------- [MOUNT_SOURCE {index,
                                                                    idmapped}, any number]
  open the source, or an idmapped
  copy of it, in init's mount ns
  MOUNT_FD + fd ------------------------------------------------------->
               <----------------------------------------------------- RUN_HOOKS
  cgroup limits (as runc: init's
  setup is not throttled)
  prestart, createRuntime hooks
  HOOKS_DONE --------------------------------------------------------->
                                                                   createContainer hooks,
                                                                   pivot_root, paths, sysctl,
                                                                   console, user, caps,
                                                                   close fds
               <----------------------------------------------------- READY
  end of file <------------------------------------------------------ exec pyoci-waiter
  write state.json, pid file                                       (the socket is close-on-exec);
  exit 0                                                           it blocks on exec.fifo

`exec` runs the first part only: the stage joins the container's namespaces,
forks once it is in the cgroups (GO) and reports the pid of its fork, which
(after a second GO) prepares the process, sends READY and executes it directly.

`start` later opens exec.fifo for reading: the waiter writes "0" and executes
the user's program; the fifo's write end is close-on-exec, so `start` reads
end-of-file exactly when the program has been executed.
"""
from pyoci import jsontext
from pyoci.errors import ExecError
from pyoci.linux import unix

ID_MAP_REQUEST = "id_map_request"
GO = "go"
INIT_PID = "init_pid"
MOUNT_SOURCE = "mount_source"
MOUNT_FD = "mount_fd"
RUN_HOOKS = "run_hooks"
HOOKS_DONE = "hooks_done"
SECCOMP_LISTENER = "seccomp_listener"
READY = "ready"
ERROR = "error"

_MAX_PACKET = 65536


def channel():
    """A connected pair of close-on-exec sockets: (runtime end, child end)."""
    return unix.pair(unix.SEQPACKET)


def send(sock, message_type, fd=None, **fields):
    """One message; FD, if given, travels with it (SCM_RIGHTS)."""
    fields["type"] = message_type
    data = jsontext.dumps(fields).encode()
    try:
        if fd is None:
            sock.send(data)
        else:
            unix.send_fds(sock, data, [fd])
    except (BrokenPipeError, ConnectionResetError):
        _raise_why_gone(sock, message_type)


def _raise_why_gone(sock, message_type):
    """The peer closed its end before MESSAGE_TYPE could go: the error it
    sent before it went, if it did, says why."""
    while data := _packet(sock, 0)[0]:
        _raise_if_error(data)
    raise ExecError(f"container init exited before it was sent {message_type}") from None


def raise_error_sent(sock):
    """Raise the error the peer has sent, if it has (it is gone then); return
    at once if it has sent nothing."""
    import select
    if select.select([sock], [], [], 0)[0] and (data := _packet(sock, 0)[0]):
        _raise_if_error(data)


def _raise_if_error(data):
    if (message := jsontext.loads(data))["type"] == ERROR:
        raise ExecError(message["message"]) from None


def send_error(sock, message):
    send(sock, ERROR, message=message)


def receive(sock, *expected):
    """The next message, which must be of one of the types EXPECTED.

    An error message, or the peer vanishing, becomes an ExecError.
    """
    return _check(_packet(sock, 0)[0], expected)


def receive_fd(sock, expected):
    """The next message, of type EXPECTED, with the one descriptor it carries."""
    message, fd = receive_maybe_fd(sock, expected)
    if fd is None:
        raise ExecError(f"{expected} came without a file descriptor")
    return fd


def receive_maybe_fd(sock, *expected):
    """The next message, of one of the types EXPECTED, and the descriptor it
    carries, or None."""
    data, fds = _packet(sock, 1)
    message = _check(data, expected)
    return message, (fds[0] if fds else None)


def _packet(sock, max_fds):
    """The next packet and the descriptors (up to MAX_FDS) it carries.

    A peer that went with a message of ours unread resets the connection:
    the kernel reports that once, ahead of the packets the peer sent before
    it went (its error), which the second read returns.
    """
    try:
        return unix.receive_fds(sock, _MAX_PACKET, max_fds)
    except ConnectionResetError:
        return unix.receive_fds(sock, _MAX_PACKET, max_fds)


def _check(data, expected):
    names = " or ".join(expected)
    if not data:
        raise ExecError(f"container init exited before sending {names}")
    message = jsontext.loads(data)
    if message["type"] == ERROR:
        raise ExecError(message["message"])
    if message["type"] not in expected:
        raise ExecError(f"container init sent {message['type']}, expected {names}")
    return message


def receive_end(sock):
    """Wait for the peer to close its end (its exec closed it); an error message instead raises."""
    data = _packet(sock, 0)[0]
    if data:
        message = jsontext.loads(data)
        raise ExecError(message.get("message") or f"container init sent {message['type']} after ready")
