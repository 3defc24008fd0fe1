"""runc-style logging: ``--log FILE`` and ``--log-format text|json``.

JSON lines are ``{"level","msg","time"}`` (containerd's shim reads the last
``"level":"error"`` line of its log.json); text lines are logrus's
``time="..." level=error msg="..."``. Without --log, lines go to stderr.
"""
import os
import sys
import time

from pyoci import jsontext

_path = None
_format = "text"
_debug = False
_held_fd = None
_fault_point = None
_pause_points = ()
_warnings = None  # a list that takes warnings instead of stderr (pyoci check)


def configure(path=None, log_format="text", debug=False):
    global _path, _format, _debug, _held_fd, _fault_point, _pause_points
    _path, _format, _debug = path, log_format, debug
    # Read only under --debug, so an engine's environment cannot trip one.
    _fault_point = os.environ.get("PYOCI_FAULT") if debug else None
    _pause_points = os.environ.get("PYOCI_PAUSE", "").split(",") if debug else ()
    if _held_fd is not None:
        os.close(_held_fd)
        _held_fd = None


def hold_destination():
    """Under --debug, keep where lines go open as one close-on-exec fd, for
    the processes the runtime forks: after pivot_root --log's path is out of
    their reach, and init's stderr becomes the container's."""
    global _held_fd
    if _debug and _held_fd is None:
        if _path:
            _held_fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
        else:
            _held_fd = os.dup(2)  # Python's dup is close-on-exec


def forget_destination():
    """In a forked process about to close every fd it does not pass on: log
    nothing more (the held fd's number may soon be another file's)."""
    global _debug, _held_fd
    _debug, _held_fd = False, None


def _timestamp():
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def _line(level, message):
    if _format == "json":
        return jsontext.dumps({"level": level, "msg": message, "time": _timestamp()}) + "\n"
    return f'time="{_timestamp()}" level={level} msg={jsontext.dumps(message)}\n'


def _emit(level, message):
    line = _line(level, message).encode()
    if _held_fd is not None:
        os.write(_held_fd, line)
    elif _path:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    else:
        sys.stderr.buffer.write(line)
        sys.stderr.flush()


def fault_point(name):
    """Where a test stops the runtime dead to see what a crash leaves: with
    --debug and PYOCI_FAULT=NAME, SIGKILL ourselves here (no handler, no
    cleanup, as an OOM kill or a reboot would). README: "Fault points"."""
    if _fault_point == name:
        if os.getpid() == 1:
            # A pid namespace's init: the kernel ignores its own SIGKILL.
            # Exit as abruptly (no handler, no cleanup runs).
            os._exit(128 + 9)
        os.kill(os.getpid(), 9)


def pause_point(name, detail):
    """Where a test holds the runtime still to change the world under it
    (swap a path for a link): with --debug and NAME or NAME=DETAIL among
    PYOCI_PAUSE's comma-separated names, block until the test has opened
    the FIFO PYOCI_PAUSE_FIFO for writing and closed it again. README:
    "Fault points"."""
    if name in _pause_points or f"{name}={detail}" in _pause_points:
        with open(os.environ["PYOCI_PAUSE_FIFO"], "rb") as fifo:
            fifo.read()


def debug_enabled():
    return _debug


def debug(message):
    if _debug:
        _emit("debug", message)


def warning(message):
    if _warnings is not None:
        _warnings.append(message)
        return
    _emit("warning", message)


def collect_warnings(sink):
    """From now on, warnings go into the list SINK (None: back to the log)."""
    global _warnings
    _warnings = sink


def error(message):
    """An error: always printed as one plain line on stderr, and logged."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    if _path:
        try:
            _emit("error", message)
        except OSError:
            pass  # the message is out; a log that cannot be opened must not hide it
