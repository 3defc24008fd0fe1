"""What pyoci reads about processes from /proc, and their pidfds. The root
is a parameter so unit tests can point it at a fake tree."""
import errno
import os

PROC = "/proc"


def stat_fields(pid, proc=PROC):
    """Fields of /proc/PID/stat after the command name, or None if gone.

    Index 0 is the state letter, index 19 the start time in clock ticks.
    """
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return data[data.rindex(b")") + 2:].split()


def start_time(pid, proc=PROC):
    """The process's start time in clock ticks, or None if it does not exist."""
    fields = stat_fields(pid, proc)
    return int(fields[19]) if fields else None


def is_alive(pid, expected_start_time, proc=PROC):
    """True if PID is the same process (by start time) and not a zombie."""
    fields = stat_fields(pid, proc)
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    return int(fields[19]) == expected_start_time


def open_pidfd(pid):
    """A pidfd of the process PID, or None if there is no such process:
    ESRCH; ENOENT (kernels since 6.15) or EINVAL (before) when PID is a
    thread's; EINVAL too, before 6.15, when the process was reaped but its
    pid lives on as a session or group id, or is being reaped right then."""
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, FileNotFoundError):
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise


def write_in_procfs(path, text):
    """Write TEXT to PATH, a file of the procfs mounted at /proc, and only
    there: not through a link, nor into what a mount over part of /proc
    (a bind of a host file, or of another procfs file) put in its place.
    The open file and /proc must be on the same mount (fdinfo's mnt_id)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        proc_fd = os.open(PROC, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if mount_id(fd) != mount_id(proc_fd):
                from pyoci.errors import ExecError
                raise ExecError(f"{path}: not a file of the procfs at /proc: something is "
                                "mounted over it")
        finally:
            os.close(proc_fd)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def mount_id(fd):
    """The id of the mount the object open at FD is on (fdinfo's mnt_id)."""
    info = read_file(f"{PROC}/self/fdinfo/{fd}")
    start = info.index(b"\nmnt_id:") + len(b"\nmnt_id:")
    return int(info[start:info.index(b"\n", start)])


def read_file(path):
    """A /proc file's bytes. Raw reads: a mount's check reads three files,
    for each of the mounts init makes and checks (eleven by default)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_all(fd)
    finally:
        os.close(fd)


def read_all(fd):
    """Everything left to read on FD."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def executable(pid, proc=PROC):
    """What /proc/PID/exe names, or None where it cannot be read (gone, or
    not ours to look at)."""
    try:
        return os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return None


def children_pids(pid, proc=PROC):
    """Every pid whose parent is PID (for `ps`-style walks)."""
    result = []
    for entry in os.listdir(proc):
        if entry.isdigit():
            fields = stat_fields(entry, proc)
            if fields and int(fields[1]) == pid:
                result.append(int(entry))
    return result


def in_user_namespace(proc=PROC):
    """Whether this process runs in a user namespace other than the host's
    (whose uid_map is the identity of every id)."""
    try:
        with open(f"{proc}/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except FileNotFoundError:
        return False


def mount_parent(mount, path="/proc/self/mountinfo"):
    """The id of the parent of our mount MOUNT (by id), from mountinfo; None
    if we have no such mount."""
    table = b"\n" + read_file(path)
    start = table.find(b"\n%d " % mount)
    return None if start < 0 else int(table[start + 1:].split(b" ", 2)[1])


def mount_table(path="/proc/self/mountinfo"):
    """(mount point, fs type, super options) of every mount of ours, in mount
    order, from mountinfo (octal escapes in mount points undone)."""
    table = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            table.append((_unescape(fields[4]), fields[separator + 1], fields[separator + 3]))
    return table


def _unescape(field):
    """A mountinfo field with the kernel's escapes (\\040 for a space, of
    space, tab, newline and backslash) undone."""
    if "\\" not in field:
        return field
    first, *escaped = field.split("\\")
    return first + "".join(chr(int(part[:3], 8)) + part[3:] for part in escaped)


def stdio_targets(pid, proc=PROC):
    """What PID's fds 0, 1 and 2 are ("/dev/null", "pipe:[1234]"), "" where
    one cannot be read: runc's descriptors.json, which tells a restore which
    of them to give new pipes."""
    targets = []
    for fd in range(3):
        try:
            targets.append(os.readlink(f"{proc}/{pid}/fd/{fd}"))
        except OSError:
            targets.append("")
    return targets
