"""A process's stdio from what containerd names: fifo paths (or none), or
file:// URIs.

stdout and stderr go to the process as they are: the process writes the
fifo itself, and containerd reads end of file when it and its children are
gone. stdin is a pipe the shim fills from the fifo: the writer's close, or
CloseIO, ends it.
A terminal's master is copied both ways by the shim.
"""
import errno
import fcntl
import os

from pyoci.shim.ttrpc import INVALID_ARGUMENT, TtrpcError

_CHUNK = 1 << 16


def _open_output(where):
    """An fd to write the process's output to: WHERE's fifo or file, or /dev/null."""
    if not where:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    scheme, path = _parse(where)
    if scheme == "file":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        # No reader yet: one may come later; the process must not block on open.
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(fd, True)
    return fd


def _parse(where):
    """(scheme, path): a bare path is a fifo's."""
    scheme, separator, rest = where.partition("://")
    if not separator:
        return "fifo", where
    if scheme in ("fifo", "file"):
        from urllib.parse import unquote  # as rare as such a URI is
        return scheme, unquote(rest[rest.index("/"):] if "/" in rest else "")
    raise TtrpcError(INVALID_ARGUMENT, f"stdio {where}: the pyoci shim takes fifos and file:// "
                                       f"URIs, not {scheme}://")


class Stdio:
    """The stdio of one process (STDIN, STDOUT, STDERR as containerd names
    them). for_process() gives the fds to hand it; close_stdin() is CloseIO."""

    def __init__(self, loop, stdin, stdout, stderr, terminal):
        self._loop = loop
        self.names = (stdin, stdout, stderr)
        self.terminal = terminal
        self._fds = []  # ours, closed by close()
        self._copies = []
        self._given = []
        self._stdin_fifo = None
        self.master = None
        try:
            if stdin:
                scheme, path = _parse(stdin)
                if scheme != "fifo":
                    raise TtrpcError(INVALID_ARGUMENT, f"stdin {stdin}: not a fifo")
                # Non-blocking, so containerd's writer may come later: the loop
                # hears of nothing (no hang-up either) until it has come.
                self._stdin_fifo = self._keep(os.open(path, os.O_RDONLY | os.O_NONBLOCK |
                                                      os.O_CLOEXEC))
            self._stdout = self._keep(_open_output(stdout))
            self._stderr = self._stdout if terminal else self._keep(_open_output(stderr))
        except BaseException:
            self.close()
            raise

    def _keep(self, fd):
        self._fds.append(fd)
        return fd

    def for_process(self):
        """(stdin, stdout, stderr) for a process without a terminal; the
        shim's copy of stdin starts here."""
        if self._stdin_fifo is not None:
            stdin, pipe_in = os.pipe2(os.O_CLOEXEC)
            self._stdin_copy = self._copy(self._stdin_fifo, pipe_in, close_target=True)
        else:
            stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._given = [stdin, self._stdout, self._stderr]
        return tuple(self._given)

    def for_terminal(self):
        """(stdin, stdout, stderr) for a process that gets a terminal: init
        replaces them with its pty; until then, nothing to read."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._given = [null]
        return null, null, null

    def handed_over(self):
        """The process has its stdio: close the shim's copies, so that
        containerd reads end of file once the process's are gone."""
        for fd in dict.fromkeys(self._given):
            os.close(fd)
            if fd in self._fds:
                self._fds.remove(fd)
        self._given = []

    def attach_master(self, master):
        """The process's terminal: copy the stdin fifo to it, and it to stdout."""
        self.master = master
        self._fds.append(master)
        os.set_blocking(master, False)
        if self._stdin_fifo is not None:
            self._stdin_copy = self._copy(self._stdin_fifo, master)
        self._copy(master, self._stdout)

    def _copy(self, source, target, close_target=False):
        copy = _Copy(self._loop, source, target, close_target)
        self._copies.append(copy)
        return copy

    def close_stdin(self):
        copy = getattr(self, "_stdin_copy", None)
        if copy is not None:
            copy.finish()
            self._stdin_copy = None

    def finish(self):
        """The process is gone: what its terminal still holds goes out, then
        every fd closes (containerd's readers see end of file)."""
        for copy in self._copies:
            if copy.source == self.master:
                copy.drain()
        self.close()

    def close(self):
        for copy in self._copies:
            copy.stop()
        self._copies = []
        for fd in dict.fromkeys(self._fds + self._given):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds, self._given = [], []
        self.master = None


class _Copy:
    """SOURCE to TARGET in the loop, through a buffer: reading stops while
    the target is full, so nothing blocks the shim."""

    def __init__(self, loop, source, target, close_target):
        self._loop = loop
        self.source = source
        self._target = target
        self._close_target = close_target
        self._pending = b""
        self._stopped = False
        self._target_blocking = os.get_blocking(target)
        os.set_blocking(target, False)
        loop.watch(source, self._readable)

    def _readable(self):
        try:
            data = os.read(self.source, _CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal's last holder is gone
            data = b""
        if not data:
            self.finish()
            return
        self._pending = data
        self._flush()

    def _flush(self):
        try:
            while self._pending:
                self._pending = self._pending[os.write(self._target, self._pending):]
        except BlockingIOError:
            self._loop.unwatch(self.source)
            self._loop.watch_writable(self._target, self._writable)
            return
        except OSError:  # the reader went away: drop, as a closed fifo would
            self._pending = b""

    def _writable(self):
        self._flush()
        if not self._pending:
            self._loop.unwatch_writable(self._target)
            self._loop.watch(self.source, self._readable)

    def drain(self):
        """Copy what SOURCE still holds, then stop."""
        self._loop.unwatch(self.source)
        os.set_blocking(self._target, True)
        while True:
            try:
                data = os.read(self.source, _CHUNK)
            except OSError:  # nothing more now (EAGAIN), or no more ever (EIO)
                data = b""
            self._pending += data
            self._flush()
            if not data:
                break
        self.stop()

    def finish(self):
        """No more to copy after what SOURCE holds now."""
        self.drain()

    def stop(self):
        """Copy no more; a pipe the copy fills is closed (its reader sees end of file)."""
        if self._stopped:
            return
        self._stopped = True
        self._loop.unwatch(self.source)
        self._loop.unwatch_writable(self._target)
        try:
            if self._close_target:
                os.close(self._target)
                self._close_target = False
            else:
                os.set_blocking(self._target, self._target_blocking)
        except OSError:
            pass


def set_window_size(master, width, height):
    import struct
    import termios
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
