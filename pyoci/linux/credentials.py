"""Switching to the process's user: its stdio, groups, gid, uid, umask;
and whether that user may execute a file."""
import errno
import os
import stat

from pyoci.errors import ExecError, errno_text
from pyoci.linux.caps import NUMBERS as CAPABILITY_NUMBERS


def switch_user(user):
    give_stdio_to(user.uid)
    try:
        os.setgroups(user.additional_gids)
    except PermissionError:
        # setgroups is denied in a user namespace whose gid_map was written
        # unprivileged; the process then simply keeps no supplementary groups.
        if user.additional_gids:
            raise ExecError("setgroups: operation not permitted") from None
    try:
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as exc:
        raise ExecError(f"set user {user.uid}:{user.gid}: {errno_text(exc.errno)}") from None
    os.umask(user.umask if user.umask is not None else 0o022)


def give_stdio_to(uid):
    """Make UID the owner of fds 0-2, as runc does, so the user may reopen
    its own terminal (/dev/tty, $(tty)) and its stdio. The group stays (the
    devpts mount's tty group); /dev/null and what UID owns are left alone,
    and so is what may not be changed: an owner or group the user namespace
    does not map, a read-only /dev."""
    try:
        null = os.stat("/dev/null").st_rdev
    except OSError:
        null = None
    for fd in (0, 1, 2):
        try:
            status = os.fstat(fd)
        except OSError:
            continue  # closed
        if status.st_uid == uid or (null is not None and status.st_rdev == null):
            continue
        try:
            os.fchown(fd, uid, status.st_gid)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise ExecError(f"chown stdio fd {fd} to {uid}: {errno_text(exc.errno)}") from None


_DAC_OVERRIDE = 1 << CAPABILITY_NUMBERS["CAP_DAC_OVERRIDE"]
_DAC_READ_SEARCH = 1 << CAPABILITY_NUMBERS["CAP_DAC_READ_SEARCH"]


def may_execute(path, user, effective_caps):
    """Whether execve(PATH) passes the kernel's permission checks for USER
    (pyoci.spec's User) holding EFFECTIVE_CAPS: search on each directory,
    then exec on a regular file (CAP_DAC_OVERRIDE: any exec bit will do).

    Judged from stat alone, as Go's LookPath falls back to doing: the
    container's seccomp filter, already loaded, may deny faccessat2."""
    gids = {user.gid, *user.additional_gids}

    def allowed(status, bit):
        if status.st_uid == user.uid:
            return bool(status.st_mode & bit << 6)
        if status.st_gid in gids:
            return bool(status.st_mode & bit << 3)
        return bool(status.st_mode & bit)

    try:
        directory = os.path.dirname(os.path.abspath(path))
        while not effective_caps & (_DAC_OVERRIDE | _DAC_READ_SEARCH):
            if not allowed(os.stat(directory), 0o1):
                return False
            if directory == "/":
                break
            directory = os.path.dirname(directory)
        status = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(status.st_mode):
        return False
    return allowed(status, 0o1) or bool(effective_caps & _DAC_OVERRIDE and
                                        status.st_mode & 0o111)


def home_of(uid, passwd="/etc/passwd"):
    """The home directory /etc/passwd gives UID in the container, else "/"
    (as runc sets HOME when the process's env has none)."""
    try:
        with open(passwd, errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"
