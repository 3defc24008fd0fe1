"""Switching to the process's user: its stdio, groups, gid, uid, umask."""
import errno
import os

from pyoci.errors import ExecError, errno_text


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
