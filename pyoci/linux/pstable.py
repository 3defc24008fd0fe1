"""`ps -ef`'s table for a container's processes, read from /proc: what
`runc ps` prints by default (it runs `ps -ef` and keeps the header and the
container's lines), without spawning ps(1), which takes longer than all
the rest of the command.

It reproduces procps's full format: UID (the effective user's name, cut to
7 characters and a '+' if longer, the number without one), PID and PPID
(as wide as pid_max's digits), C (CPU time over lifetime, in percent, at
most 99), STIME (HH:MM today, MonDD this year, else the year), TTY, TIME
(CPU time, [D-]HH:MM:SS) and CMD (the arguments). Where procps would print
what this does not reproduce (a terminal's name, a zombie, a command it
would escape, a month in another language, a width or format the
environment sets) it returns None and the caller runs ps(1) itself.
"""
import os
import pwd
import time

from pyoci.linux import procfs

# Environment variables procps reads to change its output.
PROCPS_SETTINGS = ("COLUMNS", "LINES", "PS_FORMAT", "PS_PERSONALITY", "CMD_ENV",
                   "PS_COLORS", "POSIXLY_CORRECT", "I_WANT_A_BROKEN_PS")


def full_format(pids, proc=procfs.PROC):
    """The table's text (header and one line per live pid, in pid order),
    or None where ps(1) must make it."""
    if any(name in os.environ for name in PROCPS_SETTINGS):
        return None
    with open(f"{proc}/sys/kernel/pid_max", "rb") as f:
        pid_width = len(f.read().strip())
    clock = _Clock(proc)
    lines = [f"{'UID':<8} {'PID':>{pid_width}} {'PPID':>{pid_width}}  C STIME TTY      "
             "    TIME CMD"]
    for pid in sorted(pids):
        try:
            line = _line(pid, proc, pid_width, clock)
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone: ps would not list it either
        if line is None:
            return None
        lines.append(line)
    return "\n".join(lines) + "\n"


class _Clock:
    """What procps turns ticks into times with: the tick rate, the uptime,
    the boot time, today's date, and whether its month names are ours."""

    def __init__(self, proc):
        self.hertz = os.sysconf("SC_CLK_TCK")
        with open(f"{proc}/uptime", "rb") as f:
            self.uptime = float(f.read().split()[0])
        with open(f"{proc}/stat", "rb") as f:
            self.boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        self.now = time.localtime()
        locale = os.environ.get("LC_ALL") or os.environ.get("LC_TIME") or os.environ.get("LANG")
        self.english_months = not locale or locale in ("C", "POSIX") or \
            locale.startswith(("C.", "en_"))

    def start(self, ticks):
        """STIME: procps's strftime of the start, by how long ago it was;
        None for a month name in a language procps's locale may change."""
        started = time.localtime(self.boot + ticks // self.hertz)
        if started.tm_year != self.now.tm_year:
            return time.strftime("%Y", started)
        if started.tm_yday != self.now.tm_yday:
            return time.strftime("%b%d", started) if self.english_months else None
        return time.strftime("%H:%M", started)

    def percent(self, cpu_ticks, start_ticks):
        """C: CPU time over the time lived, whole percent, at most 99."""
        lived = self.uptime * self.hertz - start_ticks
        return min(int(cpu_ticks * 100 / lived), 99) if lived > 0 else 0

    def cpu_time(self, cpu_ticks):
        days, rest = divmod(cpu_ticks // self.hertz, 86400)
        text = f"{rest // 3600:02}:{rest // 60 % 60:02}:{rest % 60:02}"
        return f"{days}-{text}" if days else text


def _line(pid, proc, pid_width, clock):
    fields = procfs.stat_fields(pid, proc)
    if fields is None:
        raise ProcessLookupError(pid)
    state, ppid, tty = fields[0], int(fields[1]), int(fields[4])
    cpu_ticks, start_ticks = int(fields[11]) + int(fields[12]), int(fields[19])
    with open(f"{proc}/{pid}/cmdline", "rb") as f:
        arguments = f.read()
    # argv's strings, each ended by a NUL; a program that rewrote them is ps's to show.
    command = arguments[:-1].replace(b"\0", b" ")
    started = clock.start(start_ticks)
    user = _user(_effective_uid(pid, proc))
    if (state in (b"Z", b"X") or tty != 0 or not arguments.endswith(b"\0") or
            b"\0\0" in arguments or not command or not _plain(command) or
            started is None or user is None):
        return None
    return (f"{user:<8} {pid:>{pid_width}} {ppid:>{pid_width}} "
            f"{clock.percent(cpu_ticks, start_ticks):>2} {started:>5} "
            f"{'?':<8} {clock.cpu_time(cpu_ticks):>8} {command.decode()}")


def _plain(data):
    """Printable ASCII only: anything else procps escapes by its locale."""
    return all(32 <= byte < 127 for byte in data)


def _effective_uid(pid, proc):
    with open(f"{proc}/{pid}/status", "rb") as f:
        return next(int(line.split()[2]) for line in f if line.startswith(b"Uid:"))


def _user(uid):
    """procps's UID column: the name, cut to 7 characters and '+' beyond 8;
    the number if the host has no name for it; None for a name it escapes."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
    if not _plain(name.encode(errors="replace")):
        return None
    return name if len(name) <= 8 else name[:7] + "+"
