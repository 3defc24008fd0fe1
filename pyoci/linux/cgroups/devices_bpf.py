"""cgroup v2 device control: the rule list compiled to an eBPF program.

cgroup v2 has no devices.allow/deny files; a BPF_PROG_TYPE_CGROUP_DEVICE
program attached to the container's cgroup decides each access instead. The
rules are those v1 would get (resources.device_rules: deny all, the config's
rules, the default devices), and as with v1's list the last matching rule
decides; nothing matching means deny.

The program sees struct bpf_cgroup_dev_ctx {u32 access_type; u32 major;
u32 minor;}, access_type being (access << 16) | type.
"""
import struct

from pyoci.linux.cgroups.resources import device_rules

DEV_TYPE = {"b": 1, "c": 2}            # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
ACCESS = {"m": 1, "r": 2, "w": 4}       # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE

# eBPF opcodes
LDX_MEM_W = 0x61      # dst = *(u32 *)(src + off)
ALU32_AND_K = 0x54    # dst &= imm
ALU32_RSH_K = 0x74    # dst >>= imm
MOV64_X = 0xBF        # dst = src
MOV64_K = 0xB7        # dst = imm
JNE_K = 0x55          # if dst != imm: pc += off
EXIT = 0x95


def _insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def parse_rule(line):
    """'c 1:3 rwm' / 'a' -> (type or None, major or None, minor or None, access mask)."""
    if line == "a":
        return None, None, None, 7
    dev_type, numbers, access = line.split()
    major, minor = numbers.split(":")
    mask = sum(ACCESS[letter] for letter in access)
    return (None if dev_type == "a" else DEV_TYPE[dev_type],
            None if major == "*" else int(major), None if minor == "*" else int(minor), mask)


def compile_program(devices):
    """eBPF bytes for linux.resources.devices (a list of rule objects)."""
    rules = [(kind == "devices.allow", parse_rule(line)) for kind, line in device_rules(devices)]
    code = [
        _insn(LDX_MEM_W, dst=2, src=1, off=0),      # r2 = access_type
        _insn(MOV64_X, dst=3, src=2),                # r3 = access_type
        _insn(ALU32_AND_K, dst=2, imm=0xFFFF),       # r2 = type
        _insn(ALU32_RSH_K, dst=3, imm=16),           # r3 = access
        _insn(LDX_MEM_W, dst=4, src=1, off=4),      # r4 = major
        _insn(LDX_MEM_W, dst=5, src=1, off=8),      # r5 = minor
    ]
    for allow, (dev_type, major, minor, mask) in reversed(rules):
        checks = []
        if dev_type is not None:
            checks.append([(JNE_K, 2, 0, dev_type)])
        if major is not None:
            checks.append([(JNE_K, 4, 0, major)])
        if minor is not None:
            checks.append([(JNE_K, 5, 0, minor)])
        if mask != 7:
            # Every requested access bit must be in the rule's mask.
            checks.append([(MOV64_X, 1, 3, None), (ALU32_AND_K, 1, 0, ~mask & 7),
                           (JNE_K, 1, 0, 0)])
        block = [insn for check in checks for insn in check]
        length = len(block) + 2  # + mov r0, exit
        for position, (op, dst, src, imm) in enumerate(block):
            if op == JNE_K:
                # Skip to the end of this block: the next rule.
                code.append(_insn(op, dst=dst, off=length - position - 1, imm=imm))
            elif op == MOV64_X:
                code.append(_insn(op, dst=dst, src=src))
            else:
                code.append(_insn(op, dst=dst, imm=imm))
        code.append(_insn(MOV64_K, dst=0, imm=int(allow)))
        code.append(_insn(EXIT))
        if not block:
            break  # a rule matching everything: earlier rules never decide (and the
            # verifier refuses unreachable code)
    else:
        code.append(_insn(MOV64_K, dst=0, imm=0))
        code.append(_insn(EXIT))
    return b"".join(code)


def attach(syscalls, directory, devices):
    """Load the program for DEVICES and attach it to the cgroup at DIRECTORY
    in place of the one pyoci attached before (update): every attached
    program must allow an access, so an old one would still deny what the
    new rules allow. Programs of others (systemd's) stay."""
    import os
    from pyoci.linux.syscalls import DEVICE_PROGRAM_NAME
    program_fd = syscalls.bpf_load_device_program(compile_program(devices))
    try:
        cgroup_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            previous = [program_id for program_id, name in syscalls.bpf_device_programs(cgroup_fd)
                        if name == DEVICE_PROGRAM_NAME]
            syscalls.bpf_attach_device_program(cgroup_fd, program_fd)
            for program_id in previous:
                syscalls.bpf_detach_device_program(cgroup_fd, program_id)
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(program_fd)  # the attachment keeps the program alive
