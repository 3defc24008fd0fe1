"""pyoci.linux.criu's RPC against a stand-in `criu swrk` (a script that
speaks the protocol: one message per datagram, a NOTIFY answered before the
next), and its proto2 encoding. The real CRIU is driven in
test_integration_checkpoint.py, in the VM."""
import os
import sys
import textwrap

import pytest

from pyoci import wire
from pyoci.linux import criu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The stand-in: answers VERSION; for DUMP sends NOTIFY pre-dump and
# post-dump, checks each is answered, writes its log (in the work dir, as
# CRIU does: given as the first argument, our test's choice) and answers
# with the outcome the environment asks for.
FAKE_CRIU = textwrap.dedent("""\
    #!{python}
    import os, sys
    sys.path.insert(0, {root!r})
    from pyoci import wire
    from pyoci.linux import criu
    sock = int(sys.argv[2])
    request = wire.decode(criu.REQUEST, os.read(sock, 65536))
    with open(os.environ["FAKE_CRIU_SEEN"], "w") as f:
        f.write(repr(request))
    def send(**fields):
        os.write(sock, wire.encode(criu.RESPONSE, fields))
    if request["type"] == criu.VERSION:
        send(type=criu.VERSION, success=True,
             version={{"major_number": 3, "minor_number": int(os.environ.get("MINOR", 17)),
                       "sublevel": 1}})
        sys.exit(0)
    for script in ("pre-dump", "post-dump"):
        send(type=criu.NOTIFY, success=True, notify={{"script": script}})
        answer = os.read(sock, 65536)
        if not answer:
            sys.exit(3)
        answer = wire.decode(criu.REQUEST, answer)
        assert answer["type"] == criu.NOTIFY and answer["notify_success"], answer
    outcome = os.environ.get("OUTCOME", "ok")
    with open(os.environ["FAKE_CRIU_LOG"], "w") as f:
        f.write("(00.000100) Version: 3.17.1\\n")
        if outcome == "refuse":
            f.write("(00.001000) Error (criu/files-ext.c:96): Can't dump file 0 of that type\\n")
            f.write("(00.001100) Error (criu/cr-dump.c:1655): Dump files failed\\n")
    send(type=request["type"], success=outcome != "refuse", cr_errno=5 if outcome == "refuse" else 0)
    os.read(sock, 1)  # the client's end of writing
    sys.exit(1 if outcome == "exit" else 0)
    """)


@pytest.fixture
def fake_criu(tmp_path, monkeypatch):
    path = tmp_path / "criu"
    path.write_text(FAKE_CRIU.format(python=sys.executable, root=ROOT))
    path.chmod(0o755)
    monkeypatch.setenv("FAKE_CRIU_SEEN", str(tmp_path / "seen"))
    monkeypatch.setenv("FAKE_CRIU_LOG", str(tmp_path / "dump.log"))
    return path


def test_proto2_sends_a_field_set_to_zero_and_leaves_out_one_not_set():
    """CRIU requires inherit_fd.fd, which is 0 for stdin; proto3 would drop it."""
    data = wire.encode(criu.INHERIT_FD, {"key": "pipe:[1]", "fd": 0})
    assert wire.decode(criu.INHERIT_FD, data) == {"key": "pipe:[1]", "fd": 0}
    assert data.endswith(b"\x10\x00")  # field 2, varint 0
    assert wire.encode(criu.OPTS, {"images_dir_fd": 5}) == b"\x08\x05"
    assert wire.encode(criu.OPTS, {"images_dir_fd": 5, "leave_running": False}) == \
        b"\x08\x05\x18\x00"


def test_request_fields_keep_their_numbers():
    opts = {"images_dir_fd": 7, "pid": 42, "root": "/r", "ext_mnt": [{"key": "/a", "val": "/a"}],
            "empty_ns": criu.CLONE_NEWNET, "manage_cgroups_mode": criu.CGROUP_MODES["full"],
            "inherit_fd": [{"key": "extRootNetNS", "fd": 4}], "lsm_mount_context": "x"}
    decoded = wire.decode(criu.REQUEST, wire.encode(criu.REQUEST, {"type": criu.DUMP,
                                                                   "opts": opts}))
    assert decoded["type"] == criu.DUMP
    for name, value in opts.items():
        assert decoded["opts"][name] == value


def test_version_is_one_number(fake_criu, monkeypatch):
    assert criu.version(str(fake_criu)) == 31701
    monkeypatch.setenv("MINOR", "0")
    monkeypatch.setattr(criu, "MIN_VERSION", 30100)
    with pytest.raises(criu.CriuError, match="CRIU version 30001 must be 30100 or higher"):
        criu.version(str(fake_criu))


def test_a_missing_criu_is_one_line(tmp_path):
    with pytest.raises(criu.CriuError) as caught:
        criu.version(str(tmp_path / "nothing"))
    assert str(caught.value) == (f"CRIU version check failed: exec {tmp_path}/nothing: "
                                 "no such file or directory")


def test_dump_answers_each_notify_and_returns_the_response(fake_criu, tmp_path):
    seen = []
    conversation = criu.Conversation(str(fake_criu), log_path=str(tmp_path / "dump.log"))
    response = conversation.request(criu.DUMP, {"images_dir_fd": 9, "pid": 1},
                                    lambda script, pid, fds: seen.append((script, fds)))
    assert response["success"] and response["type"] == criu.DUMP
    assert seen == [("pre-dump", []), ("post-dump", [])]
    assert "'images_dir_fd': 9" in (tmp_path / "seen").read_text()


def test_criu_refusal_quotes_the_first_error_of_its_log(fake_criu, tmp_path, monkeypatch):
    monkeypatch.setenv("OUTCOME", "refuse")
    conversation = criu.Conversation(str(fake_criu), log_path=str(tmp_path / "dump.log"))
    with pytest.raises(criu.CriuError) as caught:
        conversation.request(criu.DUMP, {"images_dir_fd": 9})
    assert str(caught.value) == (
        "criu failed: type DUMP errno 5: Error (criu/files-ext.c:96): Can't dump file 0 of "
        f"that type (log: {tmp_path}/dump.log)")
    assert conversation.process.returncode is not None  # no worker left


def test_a_worker_failing_after_its_answer_fails_the_dump(fake_criu, tmp_path, monkeypatch):
    monkeypatch.setenv("OUTCOME", "exit")
    conversation = criu.Conversation(str(fake_criu), log_path=str(tmp_path / "dump.log"))
    with pytest.raises(criu.CriuError, match="exit status 1"):
        conversation.request(criu.DUMP, {"images_dir_fd": 9})


def test_a_refused_notify_ends_the_worker(fake_criu, tmp_path):
    def refuse(script, pid, fds):
        raise criu.CriuError(f"hook failed at {script}")
    conversation = criu.Conversation(str(fake_criu))
    with pytest.raises(criu.CriuError, match="hook failed at pre-dump"):
        conversation.request(criu.DUMP, {"images_dir_fd": 9}, refuse)
    assert conversation.process.returncode is not None
