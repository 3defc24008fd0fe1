"""The few typed errors pyoci raises, and the one place errno becomes text.

Every error that reaches the CLI is one of these; the CLI prints its message
as one line and exits with its ``exit_code``.
"""
import os


class PyociError(Exception):
    """Base class: ``str(err)`` is the one line the user sees."""
    exit_code = 1


class ConfigError(PyociError):
    """config.json is missing, malformed, or asks for something invalid.
    A message "config.json: PATH: what is wrong" gets the runtime-spec
    section PATH falls under appended, as `pyoci check` prints it."""

    def __init__(self, message):
        if message.startswith(CONFIG_PREFIX):
            from pyoci.sections import section_of
            section = section_of(message[len(CONFIG_PREFIX):].partition(": ")[0])
            if section and not message.endswith(f"({section})"):
                message = f"{message} ({section})"
        super().__init__(message)


CONFIG_PREFIX = "config.json: "


class ContainerError(PyociError):
    """The container is missing, exists already, or is in the wrong state."""


class ExecError(PyociError):
    """A runtime failure while preparing a process (create/run/exec)."""


class HookError(PyociError):
    """A lifecycle hook failed or timed out."""


def os_error(exc, what):
    """Turn an OSError into a PyociError naming what was being done.

    Keeps the kernel's errno text ("no such file or directory", "permission
    denied") because engines match on it: podman maps a create error with
    "no such file or directory" to exit 127 and "permission denied" to 126.
    """
    return ExecError(f"{what}: {errno_text(exc.errno)}")


def errno_text(code):
    """Lower-case strerror, as Go's syscall.Errno prints it."""
    if code is None:
        return "unknown error"
    text = os.strerror(code)
    return text[:1].lower() + text[1:]



def describe(exc):
    """One line for any exception that must cross to the parent or the user."""
    if isinstance(exc, PyociError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return where + errno_text(exc.errno)
    return f"{type(exc).__name__}: {exc}"
