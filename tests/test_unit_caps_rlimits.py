"""pyoci.linux.caps (names to masks, the five sets) and pyoci.linux.rlimits."""
import os
import resource

import pytest
from hypothesis import given, settings, strategies as st

from pyoci.errors import ConfigError
from pyoci.linux import caps, rlimits
from pyoci.spec import Capabilities, Rlimit


# ------------------------------------------------------------------- caps
class TestNames:
    def test_numbers_follow_linux_capability_h(self):
        # A few anchors from <linux/capability.h>.
        assert caps.NUMBERS["CAP_CHOWN"] == 0
        assert caps.NUMBERS["CAP_KILL"] == 5
        assert caps.NUMBERS["CAP_NET_BIND_SERVICE"] == 10
        assert caps.NUMBERS["CAP_SYS_ADMIN"] == 21
        assert caps.NUMBERS["CAP_AUDIT_WRITE"] == 29
        assert caps.NUMBERS["CAP_SETFCAP"] == 31
        assert caps.NUMBERS["CAP_AUDIT_READ"] == 37
        assert caps.NUMBERS["CAP_PERFMON"] == 38
        assert caps.NUMBERS["CAP_BPF"] == 39
        assert caps.NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40

    def test_names_are_unique(self):
        assert len(set(caps.NAMES)) == len(caps.NAMES)

    def test_last_cap_reads_the_running_kernel(self):
        last = caps.last_cap()
        assert isinstance(last, int) and last >= 36


def mask(names, kernel_last=40):
    """caps.mask's bits, and the names it left out."""
    unknown = set()
    return caps.mask(names, kernel_last, unknown), unknown


class TestMask:
    def test_empty(self):
        assert mask([]) == (0, set())

    def test_known_names(self):
        assert mask(["CAP_CHOWN"]) == (1, set())
        assert mask(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])[0] == \
            (1 << 29) | (1 << 5) | (1 << 10)

    def test_duplicates_are_harmless(self):
        assert mask(["CAP_KILL", "CAP_KILL"]) == (1 << 5, set())

    def test_every_name_up_to_the_kernel_last(self):
        assert mask(caps.NAMES) == ((1 << 41) - 1, set())

    @pytest.mark.parametrize("name", ["CAP_FOO", "cap_chown", "CHOWN", "", "CAP_CHOWN "])
    def test_unknown_name_is_left_out_and_reported(self, name):
        assert mask(["CAP_CHOWN", name]) == (1, {name})

    def test_name_beyond_the_kernel_last_is_unavailable(self):
        # An older kernel (cap_last_cap 37) does not know CAP_PERFMON.
        assert mask(["CAP_AUDIT_READ"], 37) == (1 << 37, set())
        assert mask(["CAP_PERFMON"], 37) == (0, {"CAP_PERFMON"})

    @settings(database=None, max_examples=100)
    @given(st.lists(st.sampled_from(caps.NAMES), max_size=20))
    def test_bits_are_exactly_the_names(self, names):
        result, _ = mask(names)
        assert {caps.NAMES[bit] for bit in range(41) if result >> bit & 1} == set(names)
        assert caps.names_of(result) == [name for name in caps.NAMES if name in names]


@pytest.fixture
def kernel_with_41_capabilities(monkeypatch):
    """A kernel that knows capabilities 0-40, all of them the runtime's to grant."""
    monkeypatch.setattr(caps, "last_cap", lambda: 40)
    monkeypatch.setattr(caps, "own_bounding_set", lambda: (1 << 41) - 1)


@pytest.mark.usefixtures("kernel_with_41_capabilities")
class TestCapabilitySets:
    def test_a_capability_the_runtime_lacks_is_left_out_with_the_warning(self, monkeypatch,
                                                                        capsys):
        monkeypatch.setattr(caps, "own_bounding_set", lambda: ~(1 << caps.NUMBERS["CAP_SYS_RESOURCE"]))
        sets = caps.CapabilitySets(Capabilities({"bounding": ["CAP_KILL", "CAP_SYS_RESOURCE"]}))
        assert sets.bounding == 1 << 5
        assert "[CAP_SYS_RESOURCE]" in capsys.readouterr().err

    def test_own_bounding_set_reads_this_process(self):
        assert caps.own_bounding_set() & 1  # CAP_CHOWN: the tests run as root or not, it is there

    def test_sets_left_out_are_empty(self):
        """As runc: engines write "capabilities": {} for --cap-drop ALL."""
        sets = caps.CapabilitySets(Capabilities({"bounding": ["CAP_KILL"],
                                                 "effective": []}))
        assert sets.last == 40
        assert sets.bounding == 1 << 5
        assert (sets.effective, sets.inheritable, sets.permitted, sets.ambient) == (0, 0, 0, 0)

    def test_all_sets(self):
        raw = {name: ["CAP_CHOWN", "CAP_SYS_ADMIN"] for name in
               ("bounding", "effective", "inheritable", "permitted", "ambient")}
        sets = caps.CapabilitySets(Capabilities(raw))
        for name in raw:
            assert getattr(sets, name) == 1 | 1 << 21

    def test_unknown_names_are_one_warning_as_runc(self, capsys):
        raw = {"bounding": ["CAP_CHOWN", "CAP_NOPE"], "effective": ["CAP_FOO"]}
        sets = caps.CapabilitySets(Capabilities(raw))
        assert (sets.bounding, sets.effective) == (1, 0)
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "level=warning" in lines[0]
        assert "ignoring unknown or unavailable capabilities: [CAP_FOO CAP_NOPE]" in lines[0]

    def test_ambient_outside_inheritable_is_said_under_debug(self, capsys):
        from pyoci import log
        raw = {"ambient": ["CAP_KILL", "CAP_CHOWN"], "inheritable": ["CAP_KILL"],
               "permitted": ["CAP_KILL", "CAP_CHOWN"]}
        caps.CapabilitySets(Capabilities(raw))
        assert capsys.readouterr().err == ""
        log.configure(debug=True)
        caps.CapabilitySets(Capabilities(raw))
        assert "are not raised: [CAP_CHOWN]" in capsys.readouterr().err

    def test_uses_the_kernel_last(self, monkeypatch, capsys):
        monkeypatch.setattr(caps, "last_cap", lambda: 37)
        assert caps.CapabilitySets(Capabilities({"bounding": ["CAP_BPF"]})).bounding == 0
        assert "[CAP_BPF]" in capsys.readouterr().err


class _RecordingSys:
    def __init__(self):
        self.calls = []

    def prctl(self, *args):
        self.calls.append(("prctl", *args))

    def capset(self, *args):
        self.calls.append(("capset", *args))


@pytest.mark.usefixtures("kernel_with_41_capabilities")
class TestApply:
    def test_drop_bounding_drops_exactly_the_others(self):
        sets = caps.CapabilitySets(Capabilities({"bounding": ["CAP_KILL", "CAP_CHOWN"]}))
        fake = _RecordingSys()
        caps.drop_bounding(fake, sets)
        dropped = [call[2] for call in fake.calls]
        assert all(call[1] == caps.sc.PR_CAPBSET_DROP for call in fake.calls)
        assert dropped == [n for n in range(41) if n not in (0, 5)]

    def test_empty_capabilities_drop_the_whole_bounding_set(self):
        fake = _RecordingSys()
        caps.drop_bounding(fake, caps.CapabilitySets(Capabilities({})))
        assert fake.calls == [("prctl", 24, number) for number in range(41)]

    def test_ambient_raised_only_within_permitted_and_inheritable(self):
        sets = caps.CapabilitySets(Capabilities({
            "effective": ["CAP_KILL"], "permitted": ["CAP_KILL", "CAP_CHOWN"],
            "inheritable": ["CAP_KILL", "CAP_SETUID"],
            "ambient": ["CAP_KILL", "CAP_CHOWN", "CAP_SETUID"]}))
        fake = _RecordingSys()
        caps.apply(fake, sets)
        assert fake.calls[0] == ("capset", 1 << 5, 1 << 5 | 1, 1 << 5 | 1 << 7)
        assert fake.calls[1] == ("prctl", caps.sc.PR_CAP_AMBIENT, caps.sc.PR_CAP_AMBIENT_CLEAR_ALL)
        raised = [c[3] for c in fake.calls[2:]]
        assert raised == [5]


@pytest.mark.usefixtures("kernel_with_41_capabilities")
@pytest.mark.parametrize("uid, raw, kept", [
    (0, {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]}, True),
    (0, {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"]}, False),
    (0, {"bounding": ["CAP_KILL"], "inheritable": ["CAP_CHOWN"],
         "effective": ["CAP_KILL", "CAP_CHOWN"]}, True),
    (1000, {}, True),
    (1000, {"effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}, False),
    (1000, {name: ["CAP_KILL"] for name in ("effective", "permitted", "inheritable", "ambient")},
     True),
    (1000, {"effective": ["CAP_KILL"], "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]},
     False),  # ambient not raisable without inheritable
])
def test_effective_kept_across_exec_as_the_kernel_computes_it(uid, raw, kept):
    """An exec by root gets inheritable|bounding; by another user, ambient."""
    assert caps.effective_kept_across_exec(caps.CapabilitySets(Capabilities(raw)), uid) is kept


def test_no_capabilities_object_keeps_what_the_user_switch_left():
    assert caps.effective_kept_across_exec(None, 1000) is True


# ---------------------------------------------------------------- rlimits
def rl(type_, soft, hard):
    return Rlimit({"type": type_, "soft": soft, "hard": hard})


class TestRlimits:
    def test_resolve(self):
        assert rlimits.resolve([rl("RLIMIT_NOFILE", 1024, 4096), rl("RLIMIT_CORE", 0, 0)]) == [
            (resource.RLIMIT_NOFILE, "RLIMIT_NOFILE", 1024, 4096),
            (resource.RLIMIT_CORE, "RLIMIT_CORE", 0, 0),
        ]

    def test_empty(self):
        assert rlimits.resolve([]) == []

    def test_max_uint64_is_infinity(self):
        [(_, _, soft, hard)] = rlimits.resolve([rl("RLIMIT_STACK", 2**64 - 1, 2**64 - 1)])
        assert soft == resource.RLIM_INFINITY
        assert hard == resource.RLIM_INFINITY

    def test_large_finite_value_is_kept(self):
        [(_, _, soft, hard)] = rlimits.resolve([rl("RLIMIT_FSIZE", 2**40, 2**62)])
        assert (soft, hard) == (2**40, 2**62)

    @pytest.mark.parametrize("name", ["RLIMIT_BOGUS", "NOFILE", "rlimit_nofile",
                                      "RLIM_INFINITY", "RLIMIT_", "setrlimit"])
    def test_unknown_type(self, name):
        with pytest.raises(ConfigError) as info:
            rlimits.resolve([rl(name, 1, 1)])
        assert str(info.value) == (f"config.json: process.rlimits: unknown rlimit type {name!r} "
                                   "(config.md#posix-process)")

    def test_duplicate_type(self):
        with pytest.raises(ConfigError) as info:
            rlimits.resolve([rl("RLIMIT_NOFILE", 1, 1), rl("RLIMIT_CORE", 0, 0),
                             rl("RLIMIT_NOFILE", 2, 2)])
        assert str(info.value) == ("config.json: process.rlimits: duplicate type 'RLIMIT_NOFILE' "
                                   "(config.md#posix-process)")

    def test_apply_failure_is_exec_error(self):
        # soft above hard is EINVAL (or ValueError from Python) for anyone, root included.
        from pyoci.errors import ExecError
        resolved = rlimits.resolve([rl("RLIMIT_CORE", 10, 5)])
        with pytest.raises(ExecError, match=r"^setrlimit RLIMIT_CORE: "):
            rlimits.apply(resolved)

    def test_apply_sets_the_limit(self):
        before = resource.getrlimit(resource.RLIMIT_CORE)
        try:
            soft = 0
            rlimits.apply(rlimits.resolve([rl("RLIMIT_CORE", soft, before[1]
                                               if before[1] != resource.RLIM_INFINITY
                                               else 2**64 - 1)]))
            assert resource.getrlimit(resource.RLIMIT_CORE) == (soft, before[1])
        finally:
            resource.setrlimit(resource.RLIMIT_CORE, before)


# ---------------------------------------------------------------- may_execute
class _User:
    def __init__(self, uid, gid, additional_gids=()):
        self.uid, self.gid, self.additional_gids = uid, gid, list(additional_gids)


@pytest.fixture
def program(scratch):
    """A root-owned file of mode 0750, group 50, in a directory of mode 0711."""
    path = scratch / "program"
    path.write_text("")
    os.chmod(path, 0o750)
    if os.geteuid() == 0:
        os.chown(path, 0, 50)
    return path


DAC_OVERRIDE = 1 << caps.NUMBERS["CAP_DAC_OVERRIDE"]


@pytest.mark.skipif(os.geteuid() != 0, reason="owns the file as root")
@pytest.mark.parametrize("user, effective, allowed", [
    (_User(0, 0), 0, True),                    # the owner's x bit
    (_User(1000, 50), 0, True),                # the group's
    (_User(1000, 1000, [50]), 0, True),        # an additional group's
    (_User(1000, 1000), 0, False),             # others have none
    (_User(1000, 1000), DAC_OVERRIDE, True),   # any x bit, with CAP_DAC_OVERRIDE
])
def test_may_execute_judges_as_the_kernel_does(program, user, effective, allowed):
    from pyoci.linux import credentials
    assert credentials.may_execute(str(program), user, effective) is allowed


@pytest.mark.skipif(os.geteuid() != 0, reason="owns the file as root")
def test_may_execute_needs_search_on_the_directories_and_a_regular_file(program):
    from pyoci.linux import credentials
    os.chmod(program, 0o755)
    os.chmod(program.parent, 0o700)
    assert not credentials.may_execute(str(program), _User(1000, 1000), 0)
    assert credentials.may_execute(str(program), _User(1000, 1000), DAC_OVERRIDE)
    os.chmod(program, 0o644)
    assert not credentials.may_execute(str(program), _User(0, 0), DAC_OVERRIDE)
    assert not credentials.may_execute(str(program.parent), _User(0, 0), DAC_OVERRIDE)
