"""Foreground `run` with a terminal: our stdio <-> the container's pty master.

Our stdin goes raw while the container runs (the pty's line discipline is
the one that applies), and our window size follows to the container's.
"""
import os
import select
import signal
import sys
import termios
import threading

from pyoci.linux import terminal


def proxy_and_wait(master, pid, wait):
    """Copy between our stdio and MASTER until the program exits; return
    WAIT(pid)'s status. SIGWINCH is ours: it resizes the container's pty."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    if saved is not None:
        import tty
        tty.setraw(stdin)
        _copy_size(stdin, master)
        signal.signal(signal.SIGWINCH, lambda *_: _copy_size(stdin, master))
    pump = threading.Thread(target=_pump, args=(stdin, stdout, master), daemon=True)
    pump.start()
    try:
        status = wait(pid)
        pump.join(timeout=1)  # let the last output drain
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        os.close(master)
    return status


def _copy_size(source, target):
    rows, columns = os.get_terminal_size(source)
    terminal.set_size(target, rows, columns)


def _pump(stdin, stdout, master):
    sources = [stdin, master]
    while True:
        readable, _, _ = select.select(sources, [], [])
        if master in readable:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave end closed, the program is gone
                return
            if not data:
                return
            os.write(stdout, data)
        if stdin in readable:
            data = os.read(stdin, 65536)
            if data:
                os.write(master, data)
            else:
                sources.remove(stdin)  # our stdin ended; keep the output flowing
