"""pyoci.sync: the parent <-> init protocol over a real SOCK_SEQPACKET pair."""
import json
import os
import socket

import pytest
from hypothesis import given, settings, strategies as st

from pyoci import sync
from pyoci.errors import ExecError


@pytest.fixture
def pair():
    runtime, child = sync.channel()
    yield runtime, child
    runtime.close()
    child.close()


def test_channel_is_seqpacket_and_close_on_exec(pair):
    for sock in pair:
        assert sock.type == socket.SOCK_SEQPACKET
        assert sock.family == socket.AF_UNIX
        assert os.get_inheritable(sock.fileno()) is False


def test_send_receive(pair):
    runtime, child = pair
    sync.send(child, sync.INIT_PID, pid=1234)
    assert sync.receive(runtime, sync.INIT_PID) == {"type": sync.INIT_PID, "pid": 1234}


def test_both_directions_and_message_boundaries(pair):
    runtime, child = pair
    sync.send(runtime, sync.GO)
    sync.send(runtime, sync.HOOKS_DONE)
    assert sync.receive(child, sync.GO) == {"type": sync.GO}
    assert sync.receive(child, sync.HOOKS_DONE) == {"type": sync.HOOKS_DONE}
    sync.send(child, sync.ID_MAP_REQUEST)
    sync.send(child, sync.RUN_HOOKS)
    sync.send(child, sync.READY)
    assert sync.receive(runtime, sync.ID_MAP_REQUEST)["type"] == sync.ID_MAP_REQUEST
    assert sync.receive(runtime, sync.RUN_HOOKS)["type"] == sync.RUN_HOOKS
    assert sync.receive(runtime, sync.READY)["type"] == sync.READY


def test_wire_format_is_one_json_object(pair):
    runtime, child = pair
    sync.send(child, sync.INIT_PID, pid=5)
    assert json.loads(runtime.recv(65536)) == {"pid": 5, "type": "init_pid"}


def test_error_message_becomes_exec_error_with_its_text(pair):
    runtime, child = pair
    sync.send_error(child, "mount proc to /proc: permission denied")
    with pytest.raises(ExecError) as info:
        sync.receive(runtime, sync.READY)
    assert str(info.value) == "mount proc to /proc: permission denied"


def test_error_wins_over_expected_type(pair):
    runtime, child = pair
    sync.send_error(child, "boom")
    with pytest.raises(ExecError, match="^boom$"):
        sync.receive(runtime, sync.ERROR)


def test_peer_closed(pair):
    runtime, child = pair
    child.close()
    with pytest.raises(ExecError) as info:
        sync.receive(runtime, sync.INIT_PID)
    assert str(info.value) == "container init exited before sending init_pid"


def test_peer_closed_after_messages(pair):
    runtime, child = pair
    sync.send(child, sync.INIT_PID, pid=9)
    child.close()
    assert sync.receive(runtime, sync.INIT_PID)["pid"] == 9
    with pytest.raises(ExecError, match="before sending ready"):
        sync.receive(runtime, sync.READY)


def test_peer_closed_in_a_forked_child(pair):
    """The real case: the child process dies; its end closes with it."""
    runtime, child = pair
    pid = os.fork()
    if pid == 0:
        try:
            runtime.close()
            sync.send(child, sync.INIT_PID, pid=os.getpid())
        finally:
            os._exit(0)
    child.close()
    try:
        assert sync.receive(runtime, sync.INIT_PID)["pid"] == pid
        with pytest.raises(ExecError, match="exited before sending ready"):
            sync.receive(runtime, sync.READY)
    finally:
        os.waitpid(pid, 0)


def test_sending_to_a_peer_that_failed_raises_its_error(pair):
    """A child that fails before it reads what we send: its error, not EPIPE."""
    runtime, child = pair
    sync.send(child, sync.ID_MAP_REQUEST)
    sync.send_error(child, "open the namespace: no such file or directory")
    child.close()
    with pytest.raises(ExecError) as info:
        sync.send(runtime, sync.GO)
    assert str(info.value) == "open the namespace: no such file or directory"


@pytest.mark.parametrize("receive", [
    lambda sock: sync.receive(sock, sync.INIT_PID),
    lambda sock: sync.receive_maybe_fd(sock, sync.READY),
    sync.receive_end,
])
def test_a_peer_gone_with_our_message_unread_still_tells_its_error(pair, receive):
    """GO sent, and queued, just before the stage failed and went: the kernel
    resets the connection, and reports that ahead of the stage's error."""
    runtime, child = pair
    sync.send_error(child, "ipc namespace /proc/self/ns/uts: a uts namespace")
    sync.send(runtime, sync.GO)
    child.close()
    with pytest.raises(ExecError, match="^ipc namespace /proc/self/ns/uts: a uts namespace$"):
        receive(runtime)


def test_sending_to_a_peer_gone_without_a_word(pair):
    runtime, child = pair
    child.close()
    with pytest.raises(ExecError, match="^container init exited before it was sent go$"):
        sync.send(runtime, sync.GO)


def test_a_child_whose_parent_is_gone_never_unwinds(pair, tmp_path):
    """A forked child's stack holds its parent's frames (a create's undo):
    failing, with no parent left to tell, it must still leave by _exit."""
    from pyoci.process import _child
    runtime, child = pair
    unwound = tmp_path / "unwound"
    pid = os.fork()
    if pid == 0:
        try:
            runtime.close()
            _child(child, lambda: 1 / 0)
        finally:
            unwound.write_text("the child ran its caller's code")
            os._exit(3)
    runtime.close()
    child.close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert not unwound.exists()


def test_unexpected_type(pair):
    runtime, child = pair
    sync.send(child, sync.RUN_HOOKS)
    with pytest.raises(ExecError) as info:
        sync.receive(runtime, sync.READY)
    assert str(info.value) == "container init sent run_hooks, expected ready"


def test_receive_end_on_close(pair):
    runtime, child = pair
    child.close()
    assert sync.receive_end(runtime) is None


def test_receive_end_error(pair):
    runtime, child = pair
    sync.send_error(child, "exec failed: no such file or directory")
    with pytest.raises(ExecError, match="^exec failed: no such file or directory$"):
        sync.receive_end(runtime)


def test_receive_end_unexpected_message(pair):
    runtime, child = pair
    sync.send(child, sync.READY)
    with pytest.raises(ExecError) as info:
        sync.receive_end(runtime)
    assert str(info.value) == "container init sent ready after ready"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15)
field_names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: name not in ("type", "sock", "message_type", "fd"))


@settings(database=None, max_examples=100, deadline=None)
@given(message_type=st.sampled_from([sync.GO, sync.INIT_PID, sync.READY, "custom"]),
       fields=st.dictionaries(field_names, json_values, max_size=5))
def test_roundtrip_any_fields(message_type, fields):
    runtime, child = sync.channel()
    try:
        sync.send(child, message_type, **fields)
        received = sync.receive(runtime, message_type)
        assert received == {**fields, "type": message_type}
    finally:
        runtime.close()
        child.close()


@settings(database=None, max_examples=50, deadline=None)
@given(text=st.text(min_size=1, max_size=200))
def test_error_text_roundtrip(text):
    runtime, child = sync.channel()
    try:
        sync.send_error(child, text)
        with pytest.raises(ExecError) as info:
            sync.receive(runtime, sync.READY)
        assert str(info.value) == text
    finally:
        runtime.close()
        child.close()
