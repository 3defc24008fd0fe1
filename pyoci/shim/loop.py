"""The shim's one thread: an epoll loop. Nothing forks from a process with
threads (create and exec fork), so every wait is an fd here: ttrpc
connections, SIGCHLD (through a wakeup pipe), stdio copies.

epoll itself, not `selectors` and `signal`, whose imports (enum among them)
would cost every shim start milliseconds.
"""
import _signal
import os
import select

_READ = select.EPOLLIN | select.EPOLLPRI | select.EPOLLHUP | select.EPOLLERR
_WRITE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR


def _fd(fileobj):
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


class Loop:
    def __init__(self):
        self._epoll = select.epoll()
        self._callbacks = {}
        self._after = []
        self.running = True

    def watch(self, fileobj, on_readable, priority=False):
        """Call ON_READABLE when FILEOBJ is readable (or hung up, or in error);
        with PRIORITY, when it is flagged (EPOLLPRI: a cgroup file's change)."""
        self._set(_fd(fileobj), 0, on_readable, select.EPOLLPRI if priority else select.EPOLLIN)

    def watch_writable(self, fileobj, on_writable):
        """Call ON_WRITABLE when FILEOBJ takes writes (or its reader is gone)."""
        self._set(_fd(fileobj), 1, on_writable)

    def unwatch(self, fileobj):
        self._set(_fd(fileobj), 0, None)

    def unwatch_writable(self, fileobj):
        self._set(_fd(fileobj), 1, None)

    def _set(self, fd, which, callback, read_events=select.EPOLLIN):
        callbacks = self._callbacks.get(fd, [None, None, read_events])
        was_watched = fd in self._callbacks
        callbacks[which] = callback
        if which == 0:
            callbacks[2] = read_events
        mask = (callbacks[2] if callbacks[0] else 0) | (select.EPOLLOUT if callbacks[1] else 0)
        try:
            if not mask:
                self._callbacks.pop(fd, None)
                if was_watched:
                    self._epoll.unregister(fd)
            elif was_watched:
                self._epoll.modify(fd, mask)
            else:
                self._epoll.register(fd, mask)
                self._callbacks[fd] = callbacks
        except OSError:  # closed already: epoll forgot it then
            self._callbacks.pop(fd, None)

    def after_each_turn(self, callback):
        """CALLBACK runs once every ready fd of a turn has been served (events go out then)."""
        self._after.append(callback)

    def on_signal(self, signum, callback):
        """CALLBACK runs in the loop after SIGNUM arrives (once for several)."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        _signal.signal(signum, lambda *_: None)

        def drain():
            try:
                while os.read(read_end, 512):
                    pass
            except BlockingIOError:
                pass
            callback()
        self.watch(read_end, drain)

    def run(self):
        while self.running:
            self.turn()

    def turn(self, timeout=None):
        """Serve what is ready (waiting up to TIMEOUT seconds, None: until something is)."""
        for fd, events in self._epoll.poll(-1 if timeout is None else timeout):
            for which, wanted in ((0, _READ), (1, _WRITE)):
                # Looked up again: the first call may have changed them.
                callback = self._callbacks.get(fd, (None, None, 0))[which]
                if callback and events & wanted:
                    callback()
        for callback in self._after:
            callback()
