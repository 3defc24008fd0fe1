"""containerd-shim-pyoci-v2: the command containerd runs for the runtime
io.containerd.pyoci.v2.

    containerd-shim-pyoci-v2 -namespace NS -address ADDR -publish-binary BIN -id ID [-debug] start
    containerd-shim-pyoci-v2 -namespace NS -address ADDR -publish-binary BIN -id ID -bundle B delete

`start` (in the bundle) prints the ttrpc address of the shim serving the
container's group, starting that shim (a fork of this process that serves
until Shutdown) unless it runs already. `delete` cleans up after a shim
that died: the container, its rootfs mounts, and a DeleteResponse on stdout.
"""
import os
import sys

from pyoci import jsontext

SOCKET_DIR = "/run/containerd/s"
GROUP_ANNOTATIONS = ("io.containerd.pyoci.v2.group", "io.kubernetes.cri.sandbox-id")
FLAGS = {"namespace": str, "address": str, "publish-binary": str, "id": str, "bundle": str,
         "socket": str, "debug": bool, "v": bool}


class Usage(Exception):
    pass


def parse(argv):
    """Go's flag package's way: -flag value, --flag=value, bool -flag; then the action."""
    flags = {name: (False if kind is bool else "") for name, kind in FLAGS.items()}
    words = list(argv)
    while words and words[0].startswith("-") and words[0] not in ("-", "--"):
        name, has_value, value = words.pop(0).lstrip("-").partition("=")
        if name not in FLAGS:
            raise Usage(f"flag provided but not defined: -{name}")
        if FLAGS[name] is bool:
            flags[name] = value.lower() in ("", "1", "t", "true") if has_value else True
        elif has_value:
            flags[name] = value
        elif words:
            flags[name] = words.pop(0)
        else:
            raise Usage(f"flag needs an argument: -{name}")
    if words and words[0] == "--":
        words.pop(0)
    return flags, (words[0] if words else "")


def runtime_root(namespace):
    return os.path.join("/run/containerd/pyoci", namespace)


def socket_address(containerd_address, namespace, group):
    return f"unix://{SOCKET_DIR}/pyoci-{_digest(f'{containerd_address}/{namespace}/{group}')}"


def _digest(text):
    """FNV-1a, 128 bits: a group's socket name (hashlib's import costs the
    shim 6 ms of every start)."""
    value = 0x6c62272e07bb014262b821756295c58d
    for byte in text.encode():
        value = ((value ^ byte) * 0x1000000000000000000013b) & (1 << 128) - 1
    return f"{value:032x}"


def _group(bundle):
    with open(os.path.join(bundle, "config.json"), "rb") as f:
        annotations = jsontext.loads(f.read()).get("annotations") or {}
    for key in GROUP_ANNOTATIONS:
        if annotations.get(key):
            return annotations[key]
    return None


def start(flags):
    """Print the address of the shim for this container's group (starting it)."""
    bundle = os.getcwd()
    sys.stdin.buffer.read()  # the runtime options: Create brings them again
    address = socket_address(flags["address"], flags["namespace"],
                             _group(bundle) or flags["id"])
    path = address[len("unix://"):]
    listener = _listen(path)
    if listener is not None:
        daemon = os.fork()
        if daemon == 0:
            _become_daemon(flags, listener, path)
        listener.close()
    from pyoci.state import write_atomic
    write_atomic(os.path.join(bundle, "address"), address.encode())
    sys.stdout.write(address)
    return 0


def _listen(path):
    """A listening socket at PATH, or None where a shim already serves it."""
    import _socket
    import errno
    from pyoci.linux import unix
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for _ in range(2):
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            listener.bind(path)
        except OSError as exc:
            listener.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            try:
                unix.connect(path).close()
                return None  # a live shim's
            except OSError:
                os.unlink(path)  # a dead shim's
            continue
        os.chmod(path, 0o600)
        listener.listen(64)
        return listener
    raise OSError(f"cannot listen on {path}")


def _become_daemon(flags, listener, path):
    """The forked shim: off containerd's pipes at once (its start waits for
    every writer to close), in its own session, then serving until Shutdown."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.setsid()
        code = serve(flags, listener, path)
    finally:
        os._exit(code)


def serve(flags, listener, path):
    from pyoci import log
    from pyoci.linux import syscalls as sc
    from pyoci.runtime import Runtime
    from pyoci.shim import ttrpc
    from pyoci.shim.events import Publisher
    from pyoci.shim.loop import Loop
    from pyoci.shim.service import TaskService
    try:
        # containerd reads this fifo, and copies it into its own log.
        log_fd = os.open("log", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.set_blocking(2, True)  # a line is written whole, as the Go shim writes it
    except OSError:
        pass
    os.chdir("/")  # not the first bundle's: it goes before this shim does
    log.configure(None, "text", flags["debug"])
    sc.syscalls().prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    _lower_oom_priority()
    loop = Loop()
    publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), flags["namespace"], log)
    loop.after_each_turn(publisher.flush)

    def stop():
        loop.running = False
    service = TaskService(loop, Runtime(runtime_root(flags["namespace"])), publisher.publish,
                          stop, log)
    server = ttrpc.Server(loop, listener, [service.service],
                          lambda method, exc: log.error(f"shim: {method}: {exc!r}"))
    log.debug(f"shim {os.getpid()}: serving {path}")
    loop.run()
    publisher.flush()
    server.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return 0


def _lower_oom_priority():
    """As runc's shim: killed for memory before containerd (one above its score)."""
    try:
        with open("/proc/self/oom_score_adj", "r+") as f:
            score = int(f.read())
            f.seek(0)
            f.write(str(min(score + 1, 1000)))
    except OSError:
        pass


def delete(flags):
    """After a shim's death: remove the container and its rootfs mounts;
    a DeleteResponse on stdout (exit status 137, as runc's shim says).
    containerd waits for it at every teardown, mostly with nothing to do:
    then it loads nothing more."""
    import time
    from pyoci import wire
    from pyoci.shim import messages as m, rootfs, service
    bundle = flags["bundle"] or os.getcwd()
    root = runtime_root(flags["namespace"])
    pid = 0
    if os.path.isdir(os.path.join(root, flags["id"])):
        from pyoci.errors import PyociError
        from pyoci.runtime import Runtime
        runtime = Runtime(root)
        try:
            pid = runtime.state(flags["id"])["pid"]
        except PyociError:
            pass
        runtime.delete(flags["id"], force=True)
    rootfs.unmount(os.path.join(bundle, "rootfs"))
    sys.stdout.buffer.write(wire.encode(m.DELETE_RESPONSE, m.DELETE_RESPONSE.new(
        pid=pid, exit_status=128 + service.SIGKILL, exited_at=m.timestamp(time.time()))))
    return 0


def main(argv=None):
    from pyoci.errors import PyociError, describe
    try:
        flags, action = parse(sys.argv[1:] if argv is None else argv)
        if flags["v"]:
            from pyoci import __version__
            sys.stdout.write(f"containerd-shim-pyoci-v2 (pyoci {__version__})\n")
            return 0
        if not flags["namespace"]:
            raise Usage("shim namespace cannot be empty")
        if action == "start":
            return start(flags)
        if action == "delete":
            return delete(flags)
        raise Usage(f"unknown action {action!r}: start or delete")
    except Usage as exc:
        sys.stderr.write(f"containerd-shim-pyoci-v2: {exc}\n")
        return 2
    except (PyociError, OSError, ValueError) as exc:
        sys.stderr.write(f"containerd-shim-pyoci-v2: {describe(exc)}\n")
        return 1


def command():
    status = main()
    sys.stdout.flush()
    os._exit(status)
