"""pstable: `ps -ef`'s table from a fake /proc, and where it leaves the
table to ps(1). tests/test_integration_cgroups.py compares it with the real
ps -ef on real containers, beside runc's (which runs ps -ef)."""
import time

import pytest

from pyoci.linux import pstable

HERTZ = 100
UPTIME = 100000.0
DAY = 86400


@pytest.fixture
def proc(tmp_path, monkeypatch):
    for name in pstable.PROCPS_SETTINGS + ("LC_ALL", "LC_TIME", "LANG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/pid_max").write_text("4194304\n")
    (tmp_path / "uptime").write_text(f"{UPTIME:.2f} 12.00\n")
    return tmp_path


def boot_at(proc, seconds):
    (proc / "stat").write_text(f"cpu  1 2 3 4\nbtime {int(seconds)}\nprocesses 9\n")


def add(proc, pid, args, started_ticks, ppid=1, uid=0, state="S", tty=0, cpu_ticks=(0, 0)):
    directory = proc / str(pid)
    directory.mkdir()
    after = [state, ppid, pid, pid, tty, -1, 0, 0, 0, 0, 0, *cpu_ticks, 0, 0, 20, 0, 1, 0,
             started_ticks]
    (directory / "stat").write_text(f"{pid} (a b) {' '.join(map(str, after))} 1 2 3\n")
    (directory / "cmdline").write_bytes(args)
    (directory / "status").write_text(f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")


# As ps -ef printed it here with pid_max 4194304.
HEADER = "UID          PID    PPID  C STIME TTY          TIME CMD"


def test_the_full_format_of_ps_ef(proc):
    boot_at(proc, time.time() - UPTIME - 400 * DAY)  # so each start is over a year ago
    add(proc, 7, b"sh\0-c\0sleep 1 & wait\0", 500, cpu_ticks=(3, 150), ppid=0)
    add(proc, 12, b"sleep\0001\0", 90000, ppid=7, uid=4242424)
    started_year = time.strftime("%Y", time.localtime(time.time() - 400 * DAY))
    assert pstable.full_format([12, 7, 99], proc=str(proc)).splitlines() == [
        HEADER,
        # 153 ticks of 99500 lived: C 0; 1.53 s of CPU time.
        f"root           7       0  0  {started_year} ?        00:00:01 sh -c sleep 1 & wait",
        f"4242424       12       7  0  {started_year} ?        00:00:00 sleep 1"]


def test_cpu_percent_is_capped_and_cpu_time_counts_days(proc):
    boot_at(proc, time.time() - UPTIME - 400 * DAY)
    lived = int(UPTIME * HERTZ) - 2 * DAY * HERTZ
    add(proc, 5, b"spin\0", lived, cpu_ticks=(2 * DAY * HERTZ, 3661 * HERTZ))
    line = pstable.full_format([5], proc=str(proc)).splitlines()[1]
    assert line.split()[3] == "99" and line.split()[6] == "2-01:01:01"


def test_a_long_user_name_is_cut_as_procps_cuts_it(proc, monkeypatch):
    class Entry:
        def __init__(self, name):
            self.pw_name = name
    names = {1: "eightchr", 2: "averyverylongusername"}
    monkeypatch.setattr(pstable.pwd, "getpwuid", lambda uid: Entry(names[uid]))
    boot_at(proc, time.time() - UPTIME - 400 * DAY)
    add(proc, 3, b"a\0", 10, uid=1)
    add(proc, 4, b"b\0", 10, uid=2)
    users = [line.split()[0] for line in pstable.full_format([3, 4], proc=str(proc)).splitlines()]
    assert users == ["UID", "eightchr", "averyve+"]


@pytest.mark.parametrize("process", [
    {"state": "Z"},                                # ps shows "[comm] <defunct>"
    {"tty": 34816},                                # pts/0: ps names it by its devices
    {"args": b""},                                 # ps shows "[comm]"
    {"args": b"caf\xc3\xa9\0"},                     # escaped by ps's locale
    {"args": b"a\tb\0"},
    {"args": b"rewritten title"},                  # no NUL: a program that set its title
    {"args": b"a\0\0\0"},
])
def test_what_procps_would_print_otherwise_is_left_to_ps(proc, process):
    boot_at(proc, time.time() - UPTIME - 400 * DAY)
    add(proc, 3, b"plain\0", 10)
    add(proc, 4, process.pop("args", b"x\0"), 10, **process)
    assert pstable.full_format([3], proc=str(proc)) is not None
    assert pstable.full_format([3, 4], proc=str(proc)) is None


@pytest.mark.parametrize("name", ["COLUMNS", "PS_FORMAT", "PS_PERSONALITY"])
def test_an_environment_that_changes_ps_leaves_the_table_to_ps(proc, monkeypatch, name):
    boot_at(proc, time.time() - UPTIME - 400 * DAY)
    add(proc, 3, b"plain\0", 10)
    monkeypatch.setenv(name, "80")
    assert pstable.full_format([3], proc=str(proc)) is None


@pytest.mark.parametrize("locale, ours", [("de_DE.UTF-8", False), ("C.UTF-8", True),
                                           ("en_GB.UTF-8", True), ("POSIX", True)])
def test_a_month_name_is_ours_only_in_an_english_or_c_locale(proc, monkeypatch, locale, ours):
    two_days_ago = time.time() - 2 * DAY
    boot_at(proc, two_days_ago - 1)
    add(proc, 3, b"plain\0", 100)
    monkeypatch.setenv("LANG", locale)
    table = pstable.full_format([3], proc=str(proc))
    if time.localtime(two_days_ago).tm_year != time.localtime().tm_year:
        assert table is not None  # early January: the year, in digits
    elif ours:
        assert table.splitlines()[1].split()[4] == time.strftime(
            "%b%d", time.localtime(two_days_ago))
    else:
        assert table is None


def test_the_pid_columns_are_as_wide_as_pid_max(proc):
    (proc / "sys/kernel/pid_max").write_text("32768\n")
    boot_at(proc, time.time() - UPTIME - 400 * DAY)
    add(proc, 3, b"plain\0", 10)
    header, line = pstable.full_format([3], proc=str(proc)).splitlines()
    assert header == "UID        PID  PPID  C STIME TTY          TIME CMD"
    assert line.startswith("root         3     1  0 ")
