"""Switching to the process's user: groups, gid, uid, umask."""
import os

from pyoci.errors import ExecError, errno_text


def switch_user(user):
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
