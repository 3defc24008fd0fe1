"""The systemd cgroup driver without systemd: D-Bus marshalling (and a
connection to a fake peer on a socketpair), cgroupsPath parsing, and
linux.resources as unit properties. tests/test_integration_systemd.py runs
the same against a real systemd."""
import os
import socket
import struct
import threading

import pytest
from hypothesis import given, settings, strategies as st

from pyoci.errors import ConfigError
from pyoci.linux import dbus
from pyoci.linux.cgroups import systemd
from pyoci.linux.cgroups.systemd import (UNLIMITED, device_properties, expand_slice,
                                         parse_cgroups_path, resource_properties,
                                         unit_cgroup, unit_property_annotations)


# ------------------------------------------------------------------ marshalling
class TestMarshalling:
    def test_split_signature(self):
        assert dbus.split_signature("ssa(sv)a(sa(sv))") == ["s", "s", "a(sv)", "a(sa(sv))"]
        assert dbus.split_signature("a{sv}uo") == ["a{sv}", "u", "o"]

    def test_start_transient_unit_call_as_systemd_expects(self):
        """Header fields, padding to 8, and an array of structs aligned to 8
        (the length excludes the padding after it), by hand from the spec."""
        data = dbus.encode_message(dbus.METHOD_CALL, 7, {3: "M"}, "a(sv)", [[("P", ("u", 5))]])
        header_fields = struct.unpack_from("<I", data, 12)[0]
        body = data[(16 + header_fields + 7) // 8 * 8:]
        assert struct.unpack_from("<I", data, 4)[0] == len(body)
        assert body == (struct.pack("<I", 16) + b"\0" * 4        # array length, pad to 8
                        + struct.pack("<I", 1) + b"P\0"           # s
                        + b"\1u\0" + b"\0" * 3                    # v: g "u", pad to 4
                        + struct.pack("<I", 5))                   # u

    values = st.recursive(
        st.one_of(st.tuples(st.just("s"), st.text(max_size=8)),
                  st.tuples(st.just("t"), st.integers(0, 2**64 - 1)),
                  st.tuples(st.just("b"), st.booleans()),
                  st.tuples(st.just("y"), st.integers(0, 255)),
                  st.tuples(st.just("x"), st.integers(-2**63, 2**63 - 1))),
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda pair: (f"({pair[0][0]}{pair[1][0]})",
                                                      (pair[0][1], pair[1][1]))),
            inner.flatmap(lambda item: st.lists(st.just(item[1]), max_size=3).map(
                lambda items: (f"a{item[0]}", items)))),
        max_leaves=6)

    @settings(database=None, max_examples=300)
    @given(st.lists(values, max_size=4))
    def test_round_trip(self, typed_values):
        signature = "".join(sig for sig, _ in typed_values)
        body = [value for _, value in typed_values]
        data = dbus.encode_message(dbus.METHOD_RETURN, 1, {5: 1}, signature, body)
        message_type, fields, decoded, used = dbus.decode_message(data)
        assert (message_type, used, fields[5]) == (dbus.METHOD_RETURN, len(data), 1)
        assert decoded == body

    def test_partial_message_waits_for_more(self):
        data = dbus.encode_message(dbus.SIGNAL, 3, {3: "JobRemoved"}, "uoss",
                                   (1, "/job/1", "u.scope", "done"))
        assert dbus.decode_message(data[:-1]) is None
        assert dbus.decode_message(data)[2] == [1, "/job/1", "u.scope", "done"]


# ------------------------------------------------------- a connection to a fake peer
class FakeSystemd(threading.Thread):
    """Answers AUTH, then each call with REPLY(member, body) -> (type, body);
    sends a JobRemoved signal before the reply of a Start call, as systemd
    may order them."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen()
        self.auth = b""

    def run(self):
        peer, _ = self.server.accept()
        while b"BEGIN\r\n" not in self.auth:
            self.auth += peer.recv(1024)
        peer.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        buffer = bytearray()
        while True:
            chunk = peer.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while (decoded := dbus.decode_message(buffer)) is not None:
                serial = struct.unpack_from("<I", buffer, 8)[0]
                _, fields, body, used = decoded
                del buffer[:used]
                member = fields[3]
                if member == "Fail":
                    peer.sendall(dbus.encode_message(
                        dbus.ERROR, 90, {4: "org.example.Nope", 5: serial}, "s", ["no way"]))
                    continue
                peer.sendall(dbus.encode_message(dbus.SIGNAL, 91, {3: "JobRemoved"}, "uoss",
                                                 (1, "/job/1", body[0], "done")))
                peer.sendall(dbus.encode_message(dbus.METHOD_RETURN, 92, {5: serial}, "o",
                                                 ["/job/1"]))


@pytest.fixture
def fake_systemd(tmp_path):
    path = str(tmp_path / "private")
    server = FakeSystemd(path)
    server.start()
    yield path, server
    server.server.close()


def test_connection_calls_and_collects_signals(fake_systemd):
    path, server = fake_systemd
    with dbus.Connection(path, timeout=5) as bus:
        (job,) = bus.call("/org/freedesktop/systemd1", "M", "Start", "s", "u.scope")
        assert job == "/job/1"
        assert bus.wait_for_signal("JobRemoved", lambda body: body[1] == job)[3] == "done"
        with pytest.raises(dbus.DBusError) as error:
            bus.call("/", "M", "Fail")
        assert (error.value.name, str(error.value)) == ("org.example.Nope", "no way")
    # AUTH and BEGIN in one write: systemd misses a call that arrives with BEGIN.
    assert server.auth == b"\0AUTH EXTERNAL " + str(os.geteuid()).encode().hex().encode() + \
        b"\r\nBEGIN\r\n"


def test_no_peer_is_a_clear_error(tmp_path):
    with pytest.raises(dbus.DBusError, match="connect to .*: No such file or directory"):
        dbus.Connection(str(tmp_path / "absent"))


def test_without_systemd_running_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(systemd, "RUNNING_MARKER", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="^--systemd-cgroup: systemd is not running on this "
                                          "host"):
        systemd.check_running()
    monkeypatch.setattr(systemd, "RUNNING_MARKER", str(tmp_path))
    systemd.check_running()


# ------------------------------------------------------------------ cgroupsPath
class TestCgroupsPath:
    @pytest.mark.parametrize("cgroups_path,expected", [
        (None, ("system.slice", "runc-ctr.scope")),
        ("", ("system.slice", "runc-ctr.scope")),
        ("machine.slice:libpod:abc", ("machine.slice", "libpod-abc.scope")),
        ("::abc", ("system.slice", "abc.scope")),
        ("-:p:abc", ("-.slice", "p-abc.scope")),
        ("system.slice:p:kube-pod.slice", ("system.slice", "kube-pod.slice")),
    ])
    def test_parse(self, cgroups_path, expected):
        assert parse_cgroups_path(cgroups_path, "ctr") == expected

    @pytest.mark.parametrize("cgroups_path,message", [
        ("/abs/path", 'expected "slice:prefix:name"'),
        ("a:b", 'expected "slice:prefix:name"'),
        ("a:b:c:d", 'expected "slice:prefix:name"'),
        ("notaslice:p:n", "invalid slice name"),
        ("a--b.slice:p:n", "invalid slice name"),
        ("-a.slice:p:n", "invalid slice name"),
        ("a/b.slice:p:n", "invalid slice name"),
        ("system.slice:p:", "bad unit name"),
        ("system.slice:p/q:n", "bad unit name"),
    ])
    def test_refused(self, cgroups_path, message):
        with pytest.raises(ConfigError, match=message):
            parse_cgroups_path(cgroups_path, "ctr")

    @pytest.mark.parametrize("slice_name,path", [
        ("-.slice", "/"),
        ("system.slice", "/system.slice"),
        ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"),
    ])
    def test_expand_slice(self, slice_name, path):
        assert expand_slice(slice_name) == path

    def test_unit_cgroup(self):
        assert unit_cgroup("a-b.slice", "p-x.scope") == "/a.slice/a-b.slice/p-x.scope"
        assert unit_cgroup("-.slice", "p-x.scope") == "/p-x.scope"
        assert unit_cgroup("system.slice", "k-pod.slice") == "/k.slice/k-pod.slice"


# ------------------------------------------------------------------ properties
def _props(properties):
    return dict(properties)


class TestResourceProperties:
    RESOURCES = {"memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": 2 << 30},
                 "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-2,9"},
                 "pids": {"limit": -1}, "blockIO": {"weight": 500}}

    def test_v1(self):
        props = _props(resource_properties(self.RESOURCES, unified=False))
        assert props["MemoryLimit"] == ("t", 1 << 30)
        assert props["CPUShares"] == ("t", 1024)
        assert props["BlockIOWeight"] == ("t", 500)
        assert props["TasksMax"] == ("t", UNLIMITED)
        assert props["CPUQuotaPerSecUSec"] == ("t", 500000)
        assert props["CPUQuotaPeriodUSec"] == ("t", 100000)
        assert props["AllowedCPUs"] == ("ay", [0b111, 0b10])
        assert "MemoryMax" not in props and "CPUWeight" not in props

    def test_v2_from_the_same_writes_as_the_files(self):
        props = _props(resource_properties(self.RESOURCES, unified=True))
        assert props["MemoryMax"] == ("t", 1 << 30)
        assert props["MemoryLow"] == ("t", 1 << 29)
        assert props["MemorySwapMax"] == ("t", 1 << 30)  # swap counts memory too
        assert props["CPUWeight"] == ("t", 39)           # runc's shares conversion
        assert props["TasksMax"] == ("t", UNLIMITED)
        assert "MemoryLimit" not in props and "CPUShares" not in props

    def test_unified_keys_systemd_knows(self):
        props = _props(resource_properties({"unified": {
            "memory.high": "max", "memory.min": "4096", "cpu.max": "max 20000",
            "io.max": "8:0 rbps=1"}}, unified=True))
        assert props["MemoryHigh"] == ("t", UNLIMITED)
        assert props["MemoryMin"] == ("t", 4096)
        assert props["CPUQuotaPerSecUSec"] == ("t", UNLIMITED)
        assert props["CPUQuotaPeriodUSec"] == ("t", 20000)
        assert len(props) == 4  # io.max: no property, the file alone

    @pytest.mark.parametrize("quota,period,per_second", [
        (50000, 100000, 500000), (1, 100000, 10000), (33333, 100000, 340000),
        (150000, 100000, 1500000), (20000, None, 200000)])
    def test_cpu_quota_rounds_up_to_whole_percents(self, quota, period, per_second):
        cpu = {"quota": quota, **({"period": period} if period else {})}
        props = _props(resource_properties({"cpu": cpu}, unified=False))
        assert props["CPUQuotaPerSecUSec"] == ("t", per_second)

    def test_nothing_to_set(self):
        assert resource_properties({}, unified=True) == []


class TestDeviceProperties:
    def test_allow_list_is_strict(self, monkeypatch):
        monkeypatch.setattr(systemd, "_major_name", lambda kind, major: {136: "pts"}.get(major))
        props = device_properties([
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "r"},
            {"allow": True, "type": "c", "major": 99, "access": "rwm"},  # no name: left to the cgroup
        ])
        assert props[0] == ("DevicePolicy", ("s", "strict"))
        entries = props[1][1][1]
        assert entries[:2] == [("/dev/char/1:3", "rw"), ("/dev/block/8:0", "r")]
        assert ("char-*", "m") in entries and ("block-*", "m") in entries
        assert ("char-pts", "rwm") in entries
        assert not [node for node, _ in entries if "99" in node]

    def test_deny_removes_access(self):
        props = device_properties([
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
        ])
        assert ("/dev/char/1:3", "rm") in props[1][1][1]

    def test_allow_all_is_auto(self):
        assert device_properties([{"allow": True, "access": "rwm"}])[0] == \
            ("DevicePolicy", ("s", "auto"))

    def test_deny_list_cannot_be_said(self):
        props = device_properties([{"allow": True, "access": "rwm"},
                                   {"allow": False, "type": "c", "major": 1, "minor": 3}])
        assert props[0] == ("DevicePolicy", ("s", "strict"))

    def test_major_name_from_proc_devices(self):
        assert systemd._major_name("char", 1) == "mem"


class TestAnnotations:
    def test_gvariant_values(self):
        props = _props(unit_property_annotations({
            "org.systemd.property.TimeoutStopUSec": "uint64 123456789",
            "org.systemd.property.CollectMode": "'inactive-or-failed'",
            "org.systemd.property.SendSIGKILL": "false",
            "org.systemd.property.Nice": "@i -5",
            "org.systemd.property.After": "['a.service', 'b.service']",
            "org.systemd.property.CPUWeight": "100",
            "other.annotation": "ignored",
        }))
        assert props == {"TimeoutStopUSec": ("t", 123456789),
                         "CollectMode": ("s", "inactive-or-failed"),
                         "SendSIGKILL": ("b", False), "Nice": ("i", -5),
                         "After": ("as", ["a.service", "b.service"]),
                         "CPUWeight": ("i", 100)}

    @pytest.mark.parametrize("text", ["uint64 ten", "{'a': 1}", "(1, 2)", "nothing"])
    def test_unsupported_value_is_refused(self, text):
        with pytest.raises(ConfigError, match="org.systemd.property.X: unsupported GVariant"):
            unit_property_annotations({"org.systemd.property.X": text})
