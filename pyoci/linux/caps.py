"""Capabilities: names to numbers, and applying the five sets.

Order matters (as in runc): drop the bounding set while still privileged,
keep capabilities across the uid change, then set effective, permitted and
inheritable with capset, then raise the ambient ones.
"""
from pyoci import log
from pyoci.linux import syscalls as sc

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: number for number, name in enumerate(NAMES)}


def last_cap():
    """The highest capability number the running kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def own_bounding_set():
    """The runtime's own bounding set: what it can grant at all (a host may
    withhold some, as this project's CI machine does CAP_SYS_RESOURCE)."""
    return _own_set("CapBnd", ~0)


def own_effective(name):
    """Whether the runtime itself has capability NAME in effect."""
    return bool(_own_set("CapEff", 0) & (1 << NUMBERS[name]))


def _own_set(field, missing):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return missing


def mask(names, kernel_last, unknown, available=~0):
    """Bit mask of NAMES; a name this kernel does not know, or one outside
    AVAILABLE, is added to UNKNOWN instead."""
    result = 0
    for name in names:
        number = NUMBERS.get(name)
        if number is None or number > kernel_last or not available & (1 << number):
            unknown.add(name)
        else:
            result |= 1 << number
    return result


class CapabilitySets:
    """Bit masks per set. A set the capabilities object leaves out is empty,
    as runc has it: engines write `"capabilities": {}` for --cap-drop ALL.

    As the spec says (and runc does), a capability unknown to pyoci or to
    this kernel is a warning and is left out, not a failure; so is one the
    runtime itself lacks, which runc fails on ("unable to apply caps")."""
    __slots__ = ("bounding", "effective", "inheritable", "permitted", "ambient", "last")

    def __init__(self, capabilities):
        self.last = last_cap()
        available = own_bounding_set()
        unknown = set()
        for set_name in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            setattr(self, set_name, mask(getattr(capabilities, set_name) or (), self.last,
                                         unknown, available))
        if unknown:
            log.warning(f"ignoring unknown or unavailable capabilities: [{' '.join(sorted(unknown))}]")
        not_raisable = self.ambient & ~(self.inheritable & self.permitted)
        if not_raisable:
            # runc 1.1.5 says nothing; a warning would be a second line on every error.
            log.debug("ambient capabilities not in both the inheritable and the permitted set "
                      f"are not raised: [{' '.join(names_of(not_raisable))}]")


def names_of(bits):
    return [name for number, name in enumerate(NAMES) if bits & (1 << number)]


def effective(sets, uid):
    """The effective set of the process once it is UID with SETS applied:
    without a capabilities object root keeps the runtime's, another user
    has them all dropped by the uid change."""
    if sets is None:
        return own_bounding_set() if uid == 0 else 0
    return sets.effective


def effective_after_exec(sets, uid):
    """The effective set of a program without file capabilities (pyoci-
    waiter) that the process executes: root gets its inheritable and
    bounding sets, another user its ambient one."""
    if sets is None:
        return effective(sets, uid)
    if uid == 0:
        return sets.inheritable | sets.bounding
    return sets.ambient & sets.permitted & sets.inheritable


def effective_kept_across_exec(sets, uid):
    """Whether such a program holds exactly the process's effective set, so
    that its own execve of the container's program is judged as the
    process's would be."""
    return effective_after_exec(sets, uid) == effective(sets, uid)


def drop_bounding(sys, sets):
    for number in range(sets.last + 1):
        if not sets.bounding & (1 << number):
            sys.prctl(sc.PR_CAPBSET_DROP, number)


def apply(sys, sets):
    """capset the three classic sets and raise the ambient ones.

    The kernel keeps ambient within permitted and inheritable; like runc,
    ambient names outside both are left out rather than failing the container.
    """
    sys.capset(sets.effective, sets.permitted, sets.inheritable)
    sys.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    raisable = sets.ambient & sets.permitted & sets.inheritable
    for number in range(sets.last + 1):
        if raisable & (1 << number):
            sys.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, number)
