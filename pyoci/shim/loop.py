"""The shim's one thread: a selector loop. Nothing forks from a process
with threads (create and exec fork), so every wait is an fd here: ttrpc
connections, SIGCHLD (through a wakeup pipe), stdio copies, OOM events."""
import os
import selectors
import signal


class Loop:
    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._after = []
        self.running = True

    def watch(self, fileobj, on_readable, on_writable=None):
        """Call ON_READABLE (and ON_WRITABLE, if given) when FILEOBJ is ready."""
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on_writable else 0)
        callbacks = (on_readable, on_writable)
        try:
            self._selector.modify(fileobj, events, callbacks)
        except KeyError:
            self._selector.register(fileobj, events, callbacks)

    def unwatch(self, fileobj):
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def after_each_turn(self, callback):
        """CALLBACK runs once every ready fd of a turn has been served (events go out then)."""
        self._after.append(callback)

    def on_signal(self, signum, callback):
        """CALLBACK runs in the loop after SIGNUM arrives (once for several)."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        signal.signal(signum, lambda *_: None)

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
            for key, events in self._selector.select():
                on_readable, on_writable = key.data
                if events & selectors.EVENT_READ and self._selector.get_map().get(key.fileobj):
                    on_readable()
                if events & selectors.EVENT_WRITE and on_writable and \
                        self._selector.get_map().get(key.fileobj):
                    on_writable()
            for callback in self._after:
                callback()
