"""runc-style logging: ``--log FILE`` and ``--log-format text|json``.

JSON lines are ``{"level","msg","time"}`` (containerd's shim reads the last
``"level":"error"`` line of its log.json); text lines are logrus's
``time="..." level=error msg="..."``. Without --log, lines go to stderr.
"""
import json
import os
import sys
import time

_path = None
_format = "text"
_debug = False


def configure(path=None, log_format="text", debug=False):
    global _path, _format, _debug
    _path, _format, _debug = path, log_format, debug


def _timestamp():
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def _line(level, message):
    if _format == "json":
        return json.dumps({"level": level, "msg": message, "time": _timestamp()},
                          separators=(",", ":")) + "\n"
    return f'time="{_timestamp()}" level={level} msg={json.dumps(message)}\n'


def _emit(level, message):
    line = _line(level, message).encode()
    if _path:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    else:
        sys.stderr.buffer.write(line)
        sys.stderr.flush()


def debug_enabled():
    return _debug


def debug(message):
    if _debug:
        _emit("debug", message)


def warning(message):
    _emit("warning", message)


def error(message):
    """An error: always printed as one plain line on stderr, and logged."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    if _path:
        try:
            _emit("error", message)
        except OSError:
            pass  # the message is out; a log that cannot be opened must not hide it
