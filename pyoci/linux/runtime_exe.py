"""The runtime's own executable, out of a container's reach (CVE-2019-5736).

While pyoci enters a container it is visible there: exec's process until it
executes the program, and init of a container that joins another's pid
namespace. /proc/PID/exe of those processes is the host's Python
interpreter. They are non-dumpable, so only a process with CAP_SYS_PTRACE
in the host's user namespace may open it (a container with no user
namespace of its own and CAP_SYS_PTRACE, as `docker --cap-add SYS_PTRACE`
makes), and once pyoci has left, it could write the interpreter through
that fd. So for such a container pyoci first executes itself again, same
arguments, from a sealed memfd copy of the interpreter (as runc copies
itself): what the container reaches is then a copy that cannot be written.

Only the pyoci command executes itself again (cli.main says it is the
command: pyoci.is_the_command). In a
library caller's process, which is not ours to replace, the step raises
NeedsSealedCopy before anything is made, and pyoci.runtime runs the
command from a copy instead.
"""
import os
import sys

import pyoci
from pyoci import log

COPY_NAME = "pyoci-interpreter"
COPY_EXECUTABLE = f"/memfd:{COPY_NAME} (deleted)"
PTRACE = "CAP_SYS_PTRACE"
# In the state directory: an exec gave a process CAP_SYS_PTRACE, which init may lack.
PTRACE_MARK = "ptrace"


class NeedsSealedCopy(Exception):
    """The step must run from a sealed copy, and this process may not become one."""


def running_from_copy():
    return os.readlink("/proc/self/exe") == COPY_EXECUTABLE


def ptrace_reaches_us(config, capability_sets):
    """Whether a process in the container may open our /proc/PID/exe: the
    container shares the host's user namespace, has a pid namespace (one
    sharing the host's sees every host process anyway), and some process in
    it may hold CAP_SYS_PTRACE: one of CAPABILITY_SETS (None: a process that
    keeps every capability), or anyone in a pid namespace other containers
    joined."""
    linux = config.linux
    pid = linux.namespace("pid")
    if linux.namespace("user") is not None or pid is None:
        return False
    return pid.path is not None or any(
        capabilities is None or PTRACE in capabilities.bounding for capabilities in capability_sets)


def run_from_sealed_copy():
    """Execute ourselves again from a sealed memfd copy of the interpreter,
    unless this already is one. Before anything is made: the new process
    starts the command over."""
    if running_from_copy():
        return
    if not pyoci.is_the_command:
        raise NeedsSealedCopy()
    log.debug("the container can reach our /proc/PID/exe (CAP_SYS_PTRACE): executing a "
              "sealed copy of the interpreter")
    os.execve(sealed_interpreter(), sys.orig_argv, os.environ)


def sealed_interpreter():
    """A close-on-exec fd of a sealed memfd copy of our interpreter."""
    import fcntl  # only a process that makes the copy pays for it
    copy = os.memfd_create(COPY_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open("/proc/self/exe", "rb") as interpreter:
        size = os.fstat(interpreter.fileno()).st_size
        offset = 0
        while offset < size:
            offset += os.sendfile(copy, interpreter.fileno(), offset, size - offset)
    fcntl.fcntl(copy, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK |
                fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return copy
