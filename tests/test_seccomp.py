"""The seccomp compiler, judged by the kernel: each filter is loaded in a
forked child and syscalls are made under it."""
import errno
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyoci.errors import ConfigError
from pyoci.linux import seccomp
from pyoci.linux import syscalls as sc

SHARED = Path(__file__).resolve().parents[2] / "shared"
U64 = st.integers(min_value=0, max_value=2**64 - 1)
pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="profiles below name x86_64 syscalls")


def outcome_under(profile, action):
    """Run ACTION() in a child under PROFILE; return the errno it raised, or 0."""
    compiled = seccomp.compile_filter(profile)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            sc.syscalls().prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            sc.syscalls().seccomp_load(compiled.flags, compiled.program)
            action()
        except OSError as exc:
            code = exc.errno
        except BaseException:
            code = 255
        os.write(write_end, str(code).encode())
        os._exit(0)
    os.close(write_end)
    result = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)
    return int(result)


def deny(names, args=(), default="SCMP_ACT_ALLOW"):
    return {"defaultAction": default, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
                          "args": list(args)}]}


def test_denied_syscall_returns_errno_ret():
    assert outcome_under(deny(["getcwd"]), os.getcwd) == errno.EACCES
    assert outcome_under(deny(["getppid"]), os.getcwd) == 0


def test_default_action_with_allow_list():
    allow_basics = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
                    "syscalls": [{"names": ["write", "exit_group", "exit", "getpid", "prctl",
                                            "seccomp", "rt_sigprocmask", "rt_sigaction"],
                                  "action": "SCMP_ACT_ALLOW"}]}
    assert outcome_under(allow_basics, os.getpid) == 0
    assert outcome_under(allow_basics, os.getcwd) == errno.ENOSYS


def seek_with(offset):
    with open("/dev/zero", "rb") as f:
        os.lseek(f.fileno(), offset, os.SEEK_SET)


PREDICATES = {
    "SCMP_CMP_EQ": lambda arg, value, _: arg == value,
    "SCMP_CMP_NE": lambda arg, value, _: arg != value,
    "SCMP_CMP_LT": lambda arg, value, _: arg < value,
    "SCMP_CMP_LE": lambda arg, value, _: arg <= value,
    "SCMP_CMP_GT": lambda arg, value, _: arg > value,
    "SCMP_CMP_GE": lambda arg, value, _: arg >= value,
    "SCMP_CMP_MASKED_EQ": lambda arg, mask, expected: arg & mask == expected,
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=st.sampled_from(sorted(PREDICATES)),
       value=st.one_of(U64, st.sampled_from([0, 2**32 - 1, 2**32, 2**63])),
       value_two=U64,
       offset=st.integers(min_value=0, max_value=2**63 - 1))
def test_argument_comparisons_are_unsigned_64_bit(op, value, value_two, offset):
    """lseek's offset (argument 1) is a full 64-bit value: the filter must decide
    exactly as the unsigned 64-bit comparison would."""
    profile = deny(["lseek"], [{"index": 1, "value": value, "valueTwo": value_two, "op": op}])
    expected = errno.EACCES if PREDICATES[op](offset, value, value_two) else 0
    assert outcome_under(profile, lambda: seek_with(offset)) == expected


def test_repeated_argument_index_means_any_of():
    """As runc: conditions naming one argument twice become separate rules (OR)."""
    profile = deny(["lseek"], [{"index": 1, "value": 5, "op": "SCMP_CMP_EQ"},
                               {"index": 1, "value": 7, "op": "SCMP_CMP_EQ"}])
    assert [outcome_under(profile, lambda o=o: seek_with(o)) for o in (5, 6, 7)] == \
        [errno.EACCES, 0, errno.EACCES]


@pytest.mark.parametrize("engine", ["docker", "podman", "buildah"])
def test_engine_profiles_compile_and_run(engine):
    """The engines' real profiles (hundreds of rules, far jumps) load, allow
    ordinary syscalls and refuse what they refuse."""
    sample = SHARED / "engines" / f"sample-{engine}-config.json"
    if not sample.exists():
        pytest.skip(f"{sample} not present")
    profile = json.loads(sample.read_text())["linux"]["seccomp"]
    compiled = seccomp.compile_filter(profile)
    assert len(compiled.program) // 8 <= seccomp.MAX_INSTRUCTIONS
    assert outcome_under(profile, os.getcwd) == 0
    # reboot with a bad magic number: EINVAL where allowed, else the errno of
    # the profile's rule for it, else of its default action.
    rules = [rule for rule in profile["syscalls"] if "reboot" in rule["names"] and not rule.get("args")]
    if rules and rules[0]["action"] == "SCMP_ACT_ALLOW":
        expected = errno.EINVAL
    elif rules:
        expected = rules[0].get("errnoRet") or errno.EPERM
    else:
        expected = profile.get("defaultErrnoRet") or errno.EPERM
    assert outcome_under(profile, reboot_with_bad_magic) == expected


def reboot_with_bad_magic():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(169, 0, 0, 0, 0) != 0:  # reboot(2) on x86_64
        raise OSError(ctypes.get_errno(), "reboot")


def test_unknown_names_are_skipped_and_bad_input_refused():
    seccomp.compile_filter(deny(["getcwd", "no_such_syscall"]))
    with pytest.raises(ConfigError, match="unsupported seccomp action"):
        seccomp.compile_filter({"defaultAction": "SCMP_ACT_NOPE"})
    with pytest.raises(ConfigError, match="cannot be used as the default action"):
        seccomp.compile_filter({"defaultAction": "SCMP_ACT_NOTIFY"})
    with pytest.raises(ConfigError, match="unknown flag"):
        seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["NOPE"]})
    notify_write = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
                    "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}
    with pytest.raises(ConfigError, match="cannot be used for the write syscall"):
        seccomp.compile_filter(notify_write)
    notify_write["syscalls"][0]["names"] = ["mkdir"]
    del notify_write["listenerPath"]
    with pytest.raises(ConfigError, match="listenerPath: SCMP_ACT_NOTIFY needs"):
        seccomp.compile_filter(notify_write)
    # As runc: a listener path without a notifying rule is ignored.
    plain = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"})
    assert not plain.notifies and plain.flags == 0


def test_a_syscall_newer_than_the_profile_knows_gets_enosys():
    """As runc: under a refusing default, a syscall numbered above every one
    the profile names fails with ENOSYS (libc then falls back); below, the
    default's errno."""
    allow = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
             "syscalls": [{"names": ["write", "exit_group", "exit", "getpid", "getcwd",
                                     "rt_sigprocmask", "rt_sigaction", "close"],
                           "action": "SCMP_ACT_ALLOW"}]}
    # On x86_64 getcwd is 79, the highest named; setns is 308.
    assert outcome_under(allow, lambda: sc.syscalls().setns(-1, 0)) == errno.ENOSYS
    allow["syscalls"][0]["names"].append("process_mrelease")  # 448: now setns is below
    assert outcome_under(allow, lambda: sc.syscalls().setns(-1, 0)) == errno.EPERM
