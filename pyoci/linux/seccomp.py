"""linux.seccomp compiled to a classic BPF program, without libseccomp.

Layout of the program (as libseccomp lays it out, simplified):

    ld arch
    per listed architecture:  jeq AUDIT_ARCH -> its section
    ret KILL_THREAD                          (an architecture not listed)
    section:  ld nr
              [x86_64: nr >= X32 bit -> the x32 section, or KILL_THREAD]
              per rule: jeq nr -> [argument checks] -> ret action
              ret defaultAction

Arguments are 64-bit and classic BPF compares 32-bit words, so each check
compares the high word, then the low one (little-endian layout). Several
rules for one syscall are tried in order; a syscall that names one argument
index twice becomes one rule per condition (OR), as runc does.
"""
import errno
import os
import struct

from pyoci import jsontext
from pyoci.errors import ConfigError, ExecError, errno_text

# BPF opcodes (linux/bpf_common.h).
LD_W_ABS = 0x20
ALU_AND_K = 0x54
JMP_JA = 0x05
JMP_JEQ_K = 0x15
JMP_JGT_K = 0x25
JMP_JGE_K = 0x35
RET_K = 0x06

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000

FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32}
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8  # set by pyoci when a rule notifies
AUDIT_ARCH = {"SCMP_ARCH_X86_64": 0xC000003E, "SCMP_ARCH_X86": 0x40000003,
              "SCMP_ARCH_AARCH64": 0xC00000B7}
NATIVE_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
X32 = "SCMP_ARCH_X32"
X32_SYSCALL_BIT = 0x40000000
ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
           "SCMP_ACT_NOTIFY")
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
             "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
MAX_INSTRUCTIONS = 4096
SYSCALL_TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "syscalls.json")


class Filter:
    """A compiled filter: the program's bytes and the seccomp() flags; with
    a notifying rule, the agent's socket (listenerPath) and its metadata."""
    __slots__ = ("program", "flags", "listener_path", "listener_metadata")

    def __init__(self, program, flags, listener_path=None, listener_metadata=""):
        self.program = program
        self.flags = flags
        self.listener_path = listener_path
        self.listener_metadata = listener_metadata

    @property
    def notifies(self):
        return self.listener_path is not None


def action_value(name, errno_ret, where):
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return SECCOMP_RET_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return SECCOMP_RET_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return SECCOMP_RET_TRAP
    if name == "SCMP_ACT_ERRNO":
        return SECCOMP_RET_ERRNO | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return SECCOMP_RET_TRACE | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_LOG":
        return SECCOMP_RET_LOG
    if name == "SCMP_ACT_ALLOW":
        return SECCOMP_RET_ALLOW
    if name == "SCMP_ACT_NOTIFY":
        return SECCOMP_RET_USER_NOTIF
    raise ConfigError(f"config.json: {where}: unsupported seccomp action {name!r}")


# How /proc/sys/kernel/seccomp/actions_avail names each action.
KERNEL_ACTION_NAMES = {
    "SCMP_ACT_KILL": "kill_thread", "SCMP_ACT_KILL_THREAD": "kill_thread",
    "SCMP_ACT_KILL_PROCESS": "kill_process", "SCMP_ACT_TRAP": "trap", "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_TRACE": "trace", "SCMP_ACT_ALLOW": "allow", "SCMP_ACT_LOG": "log",
    "SCMP_ACT_NOTIFY": "user_notif",
}


def unavailable_actions(seccomp, available_file="/proc/sys/kernel/seccomp/actions_avail"):
    """A refusal for each action of linux.seccomp (the raw dict) this
    kernel does not have; none where the kernel does not say."""
    try:
        with open(available_file) as f:
            available = set(f.read().split())
    except OSError:
        return []
    actions = [("linux.seccomp.defaultAction", seccomp["defaultAction"])]
    actions += [(f"linux.seccomp.syscalls[{index}].action", entry["action"])
                for index, entry in enumerate(seccomp.get("syscalls") or ())]
    return [ConfigError(f"config.json: {where}: this kernel has no seccomp action {action}")
            for where, action in actions if KERNEL_ACTION_NAMES.get(action) not in available]


def load_tables():
    with open(SYSCALL_TABLE) as f:
        return jsontext.loads(f.read())


def compile_filter(seccomp, machine=None, tables=None):
    """linux.seccomp (the raw dict) -> Filter. Unknown syscall names are skipped,
    as runc does: a profile may list syscalls newer than this kernel's headers."""
    machine = machine or os.uname().machine
    tables = load_tables() if tables is None else tables
    native = NATIVE_ARCH.get(machine)
    if native is None or native not in tables:
        raise ConfigError(f"config.json: linux.seccomp: no syscall table for {machine}")
    flags = 0
    for name in seccomp.get("flags") or ():
        if name not in FLAGS:
            raise ConfigError(f"config.json: linux.seccomp.flags: unknown flag {name!r}")
        flags |= FLAGS[name]
    default = action_value(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"),
                           "linux.seccomp.defaultAction")
    if default == SECCOMP_RET_USER_NOTIF:
        raise ConfigError("config.json: linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be "
                          "used as the default action")
    rules = list(_rules(seccomp))
    listener_path = None
    if any(action == SECCOMP_RET_USER_NOTIF for _, action, _ in rules):
        if any(name == "write" and action == SECCOMP_RET_USER_NOTIF for name, action, _ in rules):
            # The runtime's own writes, once the filter is on, would wait for the agent.
            raise ConfigError("config.json: linux.seccomp.syscalls: SCMP_ACT_NOTIFY cannot be "
                              "used for the write syscall")
        listener_path = seccomp.get("listenerPath")
        if not listener_path:
            raise ConfigError("config.json: linux.seccomp.listenerPath: SCMP_ACT_NOTIFY needs the "
                              "socket of a seccomp agent")
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER
    elif seccomp.get("listenerPath"):
        from pyoci import log
        log.debug("linux.seccomp.listenerPath: no rule notifies, so no agent is told (as runc)")
    # As runc: where the default refuses, a syscall newer than every one the
    # profile names gets ENOSYS, so that libc falls back to an older one.
    enosys = default not in (SECCOMP_RET_ALLOW, SECCOMP_RET_LOG)
    listed = seccomp.get("architectures") or [native]
    arches = [a for a in dict.fromkeys([native, *listed]) if a in tables]
    program = _Assembler()
    program.load(4)
    for arch in arches:
        if arch == X32:
            continue  # x32 shares x86_64's audit arch; its section hangs off that one
        program.jump_if_equal(AUDIT_ARCH[arch], f"arch:{arch}")
    program.ret(SECCOMP_RET_KILL_THREAD)
    for arch in arches:
        if arch == X32:
            continue
        program.label(f"arch:{arch}")
        program.load(0)
        if arch == "SCMP_ARCH_X86_64":
            program.jump_if_at_least(X32_SYSCALL_BIT, f"arch:{X32}" if X32 in arches else "kill")
        if enosys:
            _emit_enosys(program, rules, tables[arch])
        _emit_rules(program, rules, tables[arch], default)
    if X32 in arches:
        program.label(f"arch:{X32}")
        if enosys:
            _emit_enosys(program, rules, tables[X32])
        _emit_rules(program, rules, tables[X32], default)
    program.label("kill")
    program.ret(SECCOMP_RET_KILL_THREAD)
    program.label("enosys")
    program.ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    code = program.assemble()
    if len(code) // 8 > MAX_INSTRUCTIONS:
        raise ConfigError(f"config.json: linux.seccomp: filter too large ({len(code) // 8} instructions)")
    return Filter(code, flags, listener_path, seccomp.get("listenerMetadata") or "")


def _rules(seccomp):
    """(name, action value, [conditions]) in the order the profile gives them."""
    for index, entry in enumerate(seccomp.get("syscalls") or ()):
        where = f"linux.seccomp.syscalls[{index}]"
        action = action_value(entry["action"], entry.get("errnoRet"), where)
        args = entry.get("args") or []
        for arg in args:
            if arg["op"] not in OPERATORS:
                raise ConfigError(f"config.json: {where}: unknown operator {arg['op']!r}")
            if not 0 <= arg["index"] < 6:
                raise ConfigError(f"config.json: {where}: argument index {arg['index']} out of range")
        indexes = [arg["index"] for arg in args]
        groups = [[arg] for arg in args] if len(set(indexes)) < len(indexes) else [args]
        for name in entry["names"]:
            for group in groups:
                yield name, action, group


def _emit_enosys(program, rules, table):
    """ENOSYS for a syscall number above the highest the rules name in TABLE."""
    named = [table[name] for name, _, _ in rules if name in table]
    if named:
        program.jump_if_greater(max(named), "enosys")


def send_to_agent(seccomp_filter, listener_fd, pid, container_state):
    """The notify fd and the spec's seccomp state, over the agent's socket."""
    from pyoci import OCI_VERSION
    from pyoci.linux import unix
    message = {"ociVersion": OCI_VERSION, "fds": ["seccompFd"], "pid": pid,
               "metadata": seccomp_filter.listener_metadata, "state": container_state}
    path = seccomp_filter.listener_path
    try:
        sock = unix.connect(path)
        try:
            unix.send_fds(sock, jsontext.dumps(message).encode(), [listener_fd])
        finally:
            sock.close()
    except OSError as exc:
        raise ExecError(f"failed to connect with seccomp agent specified in the seccomp "
                        f"profile ({path}): {errno_text(exc.errno)}") from None


def _emit_rules(program, rules, table, default):
    for number, (name, action, conditions) in enumerate(rules):
        nr = table.get(name)
        if nr is None:
            continue
        next_rule = program.new_label()
        if conditions:
            program.load(0)
        program.jump_unless_equal(nr, next_rule)
        for condition in conditions:
            _emit_condition(program, condition, next_rule)
        program.ret(action)
        program.label(next_rule)
    program.ret(default)


def _emit_condition(program, condition, fail):
    """Code that falls through when CONDITION holds and jumps to FAIL otherwise."""
    low_offset = 16 + 8 * condition["index"]
    high_offset = low_offset + 4
    value = condition["value"]
    op = condition["op"]
    passed = program.new_label()
    if op == "SCMP_CMP_MASKED_EQ":
        expected = condition.get("valueTwo", 0)
        for offset, shift in ((high_offset, 32), (low_offset, 0)):
            program.load(offset)
            program.and_(value >> shift & 0xFFFFFFFF)
            program.jump_unless_equal(expected >> shift & 0xFFFFFFFF, fail)
    elif op in ("SCMP_CMP_EQ", "SCMP_CMP_NE"):
        differ = fail if op == "SCMP_CMP_EQ" else passed
        program.load(high_offset)
        program.jump_unless_equal(value >> 32, differ)
        program.load(low_offset)
        if op == "SCMP_CMP_EQ":
            program.jump_unless_equal(value & 0xFFFFFFFF, fail)
        else:
            program.jump_if_equal(value & 0xFFFFFFFF, fail)
    else:
        # Unsigned 64-bit order: the high words decide unless they are equal.
        greater_is_pass = op in ("SCMP_CMP_GT", "SCMP_CMP_GE")
        program.load(high_offset)
        program.jump_if_greater(value >> 32, passed if greater_is_pass else fail)
        program.jump_unless_equal(value >> 32, fail if greater_is_pass else passed)
        program.load(low_offset)
        low = value & 0xFFFFFFFF
        if op == "SCMP_CMP_GT":
            program.jump_if_greater(low, passed, otherwise=fail)
        elif op == "SCMP_CMP_GE":
            program.jump_if_at_least(low, passed, otherwise=fail)
        elif op == "SCMP_CMP_LT":
            program.jump_if_at_least(low, fail, otherwise=passed)
        else:  # SCMP_CMP_LE
            program.jump_if_greater(low, fail, otherwise=passed)
    program.label(passed)


class _Assembler:
    """Classic BPF with symbolic labels; far jumps go through `ja`."""

    def __init__(self):
        self.items = []  # (code, true target, false target, k) or ("label", name)
        self.labels = 0

    def new_label(self):
        self.labels += 1
        return f"L{self.labels}"

    def label(self, name):
        self.items.append(("label", name))

    def load(self, offset):
        self.items.append((LD_W_ABS, None, None, offset))

    def and_(self, mask):
        self.items.append((ALU_AND_K, None, None, mask))

    def ret(self, value):
        self.items.append((RET_K, None, None, value))

    def jump_if_equal(self, k, target, otherwise=None):
        self.items.append((JMP_JEQ_K, target, otherwise, k))

    def jump_unless_equal(self, k, target):
        self.items.append((JMP_JEQ_K, None, target, k))

    def jump_if_greater(self, k, target, otherwise=None):
        self.items.append((JMP_JGT_K, target, otherwise, k))

    def jump_if_at_least(self, k, target, otherwise=None):
        self.items.append((JMP_JGE_K, target, otherwise, k))

    def assemble(self):
        instructions = self._with_far_jumps()
        positions = _label_positions(instructions)
        code, index = [], 0
        for item in instructions:
            if item[0] == "label":
                continue
            op, true, false, k = item
            if op == JMP_JA:
                k = positions[true] - index - 1
                true = false = None
            jt = positions[true] - index - 1 if true is not None else 0
            jf = positions[false] - index - 1 if false is not None else 0
            code.append(struct.pack("=HBBI", op, jt, jf, k & 0xFFFFFFFF))
            index += 1
        return b"".join(code)

    def _with_far_jumps(self):
        """Conditional jumps reach at most 255 instructions ahead: route a
        longer one through an unconditional `ja` placed right after it."""
        items = list(self.items)
        while True:
            far = self._first_far_jump(items)
            if far is None:
                return items
            index, (op, true, false, k), true_far, false_far = far
            land = self.new_label()
            if true_far and false_far:
                replacement = [(op, None, land, k), (JMP_JA, true, None, 0),
                               ("label", land), (JMP_JA, false, None, 0)]
            elif true_far:
                replacement = [(op, None, false or land, k), (JMP_JA, true, None, 0),
                               ("label", land)]
            else:
                replacement = [(op, true or land, None, k), (JMP_JA, false, None, 0),
                               ("label", land)]
            items[index:index + 1] = replacement

    @staticmethod
    def _first_far_jump(items):
        positions = _label_positions(items)
        count = 0
        for index, item in enumerate(items):
            if item[0] == "label":
                continue
            op, true, false, _ = item
            if op != JMP_JA:
                true_far = true is not None and positions[true] - count - 1 > 255
                false_far = false is not None and positions[false] - count - 1 > 255
                if true_far or false_far:
                    return index, item, true_far, false_far
            count += 1
        return None


def _label_positions(items):
    """{label: index of the instruction it precedes}."""
    positions, count = {}, 0
    for item in items:
        if item[0] == "label":
            positions[item[1]] = count
        else:
            count += 1
    return positions
