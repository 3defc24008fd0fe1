"""pyoci.shim's parts on their own: the protobuf codec, ttrpc over a real
socket, the loop, stdio from fifos, the command line. (The shim under
containerd: conformance/engines/test_containerd_shim.py.)"""
import os
import threading

import pytest
from hypothesis import given, settings, strategies as st

from pyoci import wire
from pyoci.shim import main as shim_main, messages as m, ttrpc
from pyoci.shim.loop import Loop
from pyoci.shim.stdio import Stdio


# ------------------------------------------------------------------ wire

def test_known_encodings():
    """Bytes as Go's gogo/protobuf writes them."""
    assert wire.encode(m.DELETE_RESPONSE, m.DELETE_RESPONSE.new(
        exit_status=137, exited_at=m.TIMESTAMP.new(seconds=1, nanos=2))) == \
        bytes.fromhex("108901" "1a04" "0801" "1002")
    # Go's zero time.Time (a non-nullable exited_at before the exit), as protobuf writes it
    assert wire.encode(m.TIMESTAMP, {"seconds": -62135596800, "nanos": 0}) == \
        bytes.fromhex("088092b8c398feffffff01")
    assert wire.decode(m.TIMESTAMP, bytes.fromhex("088092b8c398feffffff01"))["seconds"] == \
        -62135596800
    assert wire.encode(m.KILL_REQUEST, m.KILL_REQUEST.new(id="c", signal=9, all=True)) == \
        bytes.fromhex("0a0163" "1809" "2001")


def test_defaults_are_not_sent_and_absent_fields_decode_to_them():
    assert wire.encode(m.STATE_RESPONSE, m.STATE_RESPONSE.new()) == b""
    state = wire.decode(m.STATE_RESPONSE, b"")
    assert (state["id"], state["pid"], state["terminal"], state["exited_at"]) == ("", 0, False, None)


def test_repeated_packed_and_unpacked_maps_and_unknown_fields():
    packed = bytes.fromhex("2203010203")  # per_cpu = [1, 2, 3], packed
    unpacked = bytes.fromhex("200120022003")
    assert wire.decode(m.V1_CPU_USAGE, packed)["per_cpu"] == [1, 2, 3]
    assert wire.decode(m.V1_CPU_USAGE, unpacked)["per_cpu"] == [1, 2, 3]
    update = m.UPDATE_TASK_REQUEST.new(id="c", annotations={"a": "1", "b": "2"})
    assert wire.decode(m.UPDATE_TASK_REQUEST, wire.encode(m.UPDATE_TASK_REQUEST, update)) == update
    newer = wire.encode(m.START_REQUEST, {"id": "c"}) + bytes.fromhex("f807" "05" "fa0701" "41")
    assert wire.decode(m.START_REQUEST, newer) == {"id": "c", "exec_id": ""}


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x08", b"\x08" + b"\xff" * 11, b"\x0f"])
def test_malformed_input_is_a_decode_error(data):
    with pytest.raises(wire.DecodeError):
        wire.decode(m.START_REQUEST, data)


def test_a_message_has_only_its_fields():
    with pytest.raises(KeyError, match="no field nope"):
        m.START_REQUEST.new(nope=1)


mounts = st.builds(lambda kind, source, options: m.MOUNT.new(type=kind, source=source,
                                                             options=options),
                   st.text(), st.text(), st.lists(st.text(), max_size=4))


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.lists(mounts, max_size=3), st.booleans(),
       st.integers(0, 2**32 - 1), st.binary())
def test_roundtrip(container_id, bundle, rootfs, terminal, pid, value):
    request = m.CREATE_TASK_REQUEST.new(id=container_id, bundle=bundle, rootfs=rootfs,
                                        terminal=terminal,
                                        options=m.ANY.new(type_url="x", value=value))
    assert wire.decode(m.CREATE_TASK_REQUEST, wire.encode(m.CREATE_TASK_REQUEST, request)) == \
        request
    assert wire.decode(m.CREATE_TASK_RESPONSE, wire.encode(m.CREATE_TASK_RESPONSE,
                                                           {"pid": pid})) == {"pid": pid}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_fail_cleanly(data):
    try:
        wire.decode(m.STATE_RESPONSE, data)
    except wire.DecodeError:
        pass


# ------------------------------------------------------------------ ttrpc

@pytest.fixture
def served(tmp_path):
    """A ttrpc server in a loop thread at tmp_path/s, with an Echo service."""
    import _socket
    path = str(tmp_path / "s")
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    loop = Loop()
    later = []
    errors = []

    def state(request, reply):
        if request["id"] == "wait":
            later.append(reply)
            return ttrpc.LATER
        if request["id"] == "boom":
            raise RuntimeError("a bug")
        if request["id"] == "missing":
            raise ttrpc.TtrpcError(ttrpc.NOT_FOUND, "container not created")
        if later:
            later.pop().answer({"id": "answered later"})
        return {"id": request["id"], "pid": 42}
    service = ttrpc.Service(m.TASK_SERVICE, {"State": (m.STATE_REQUEST, m.STATE_RESPONSE, state)})
    server = ttrpc.Server(loop, listener, [service], lambda method, exc: errors.append(method))
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            loop.turn(0.05)
    thread = threading.Thread(target=serve)
    thread.start()
    yield path, errors
    stop.set()
    thread.join()
    server.close()


def call(client, container_id):
    return client.call(m.TASK_SERVICE, "State", m.STATE_REQUEST,
                       m.STATE_REQUEST.new(id=container_id), m.STATE_RESPONSE)


def test_ttrpc_calls_errors_and_codes(served):
    path, errors = served
    client = ttrpc.Client(path)
    try:
        assert call(client, "c")["pid"] == 42
        with pytest.raises(ttrpc.TtrpcError) as info:
            call(client, "missing")
        assert (info.value.code, info.value.message) == (ttrpc.NOT_FOUND, "container not created")
        with pytest.raises(ttrpc.TtrpcError) as info:
            call(client, "boom")
        assert (info.value.code, info.value.message, errors) == (ttrpc.UNKNOWN, "a bug", ["State"])
        with pytest.raises(ttrpc.TtrpcError) as info:
            client.call(m.TASK_SERVICE, "Nope", m.EMPTY, {}, m.EMPTY)
        assert (info.value.code, info.value.message) == (ttrpc.UNIMPLEMENTED, "method Nope")
        with pytest.raises(ttrpc.TtrpcError) as info:
            client.call("other.Service", "State", m.EMPTY, {}, m.EMPTY)
        assert info.value.message == "service other.Service"
        assert call(client, "still serving")["id"] == "still serving"
    finally:
        client.close()


def test_a_later_answer_goes_to_its_stream_while_other_calls_go_on(served):
    path, _ = served
    waiting, other = ttrpc.Client(path), ttrpc.Client(path)
    result = {}
    thread = threading.Thread(target=lambda: result.update(call(waiting, "wait")))
    try:
        thread.start()
        import time
        time.sleep(0.3)
        assert call(other, "x")["pid"] == 42  # and its call answers the waiting one
        thread.join(10)
        assert result["id"] == "answered later"
    finally:
        waiting.close()
        other.close()


def test_even_stream_ids_and_oversized_frames_are_refused(served):
    from pyoci.linux import unix
    path, _ = served
    sock = unix.connect(path)
    try:
        request = wire.encode(m.REQUEST, m.REQUEST.new(service=m.TASK_SERVICE, method="State"))
        sock.sendall(ttrpc.frame(2, ttrpc.REQUEST, request))
        status = _response(sock, 2)["status"]
        assert (status["code"], status["message"]) == (
            ttrpc.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
        sock.sendall(ttrpc.HEADER.pack(ttrpc.MAX_MESSAGE + 1, 3, ttrpc.REQUEST, 0))
        assert _response(sock, 3)["status"]["code"] == ttrpc.RESOURCE_EXHAUSTED
    finally:
        sock.close()


def _response(sock, stream_id):
    header = sock.recv(ttrpc.HEADER.size)
    length, got, message_type, _ = ttrpc.HEADER.unpack(header)
    assert (got, message_type) == (stream_id, ttrpc.RESPONSE)
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return wire.decode(m.RESPONSE, body)


# ------------------------------------------------------------------ stdio

def test_stdin_fifo_to_the_process_until_the_writer_closes(tmp_path):
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)
    loop = Loop()
    stdio = Stdio(loop, str(fifo), "", "", terminal=False)
    try:
        stdin, _, _ = stdio.for_process()
        child_end = os.dup(stdin)
        stdio.handed_over()
        loop.turn(0.1)  # no writer yet: nothing, no end of file
        os.set_blocking(child_end, False)
        with pytest.raises(BlockingIOError):
            os.read(child_end, 10)
        writer = os.open(fifo, os.O_WRONLY)
        os.write(writer, b"late input")
        os.close(writer)
        for _ in range(5):
            loop.turn(0.1)
        os.set_blocking(child_end, True)
        assert os.read(child_end, 100) == b"late input"
        assert os.read(child_end, 100) == b""  # the writer's close reached the process
        os.close(child_end)
    finally:
        stdio.close()


def test_close_io_ends_stdin_and_outputs_go_to_their_fifos(tmp_path):
    paths = [tmp_path / name for name in ("in", "out", "err")]
    for path in paths:
        os.mkfifo(path)
    readers = [os.open(path, os.O_RDONLY | os.O_NONBLOCK) for path in paths[1:]]
    loop = Loop()
    stdio = Stdio(loop, *map(str, paths), terminal=False)
    try:
        stdin, stdout, stderr = (os.dup(fd) for fd in stdio.for_process())
        stdio.handed_over()
        writer = os.open(paths[0], os.O_WRONLY)
        os.write(writer, b"some")
        loop.turn(0.1)
        stdio.close_stdin()  # CloseIO, the writer still open
        assert os.read(stdin, 100) == b"some" and os.read(stdin, 100) == b""
        os.write(stdout, b"out")
        os.write(stderr, b"err")
        for fd in (stdin, stdout, stderr, writer):
            os.close(fd)
        assert [os.read(fd, 100) for fd in readers] == [b"out", b"err"]
        assert [os.read(fd, 100) for fd in readers] == [b"", b""]  # the shim holds none
    finally:
        stdio.close()
        for fd in readers:
            os.close(fd)


def test_a_uri_the_shim_does_not_take_is_refused():
    with pytest.raises(ttrpc.TtrpcError, match=r"not binary://") as info:
        Stdio(Loop(), "", "binary:///usr/bin/logger?x=1", "", terminal=False)
    assert info.value.code == ttrpc.INVALID_ARGUMENT


def test_file_uris(tmp_path):
    log = tmp_path / "logs" / "out.log"
    stdio = Stdio(Loop(), "", f"file://{log}", f"file://{log}", terminal=False)
    try:
        _, stdout, stderr = stdio.for_process()
        os.write(stdout, b"a")
        os.write(stderr, b"b")
    finally:
        stdio.close()
    assert log.read_bytes() == b"ab"


# ------------------------------------------------------------------ the command line

def test_flags_as_go_parses_them():
    flags, action = shim_main.parse(["-namespace", "k8s.io", "--address=/run/c.sock",
                                     "-publish-binary", "/usr/bin/containerd", "-id", "x",
                                     "-debug", "start"])
    assert (flags["namespace"], flags["address"], flags["id"], flags["debug"], action) == (
        "k8s.io", "/run/c.sock", "x", True, "start")
    assert shim_main.parse(["-debug=false", "-namespace", "n", "delete"])[0]["debug"] is False
    with pytest.raises(shim_main.Usage, match="flag provided but not defined: -nope"):
        shim_main.parse(["-nope", "start"])
    with pytest.raises(shim_main.Usage, match="flag needs an argument: -id"):
        shim_main.parse(["-id"])


def test_a_group_has_one_socket_and_it_fits_a_unix_address():
    one = shim_main.socket_address("/run/containerd/containerd.sock", "k8s.io", "a" * 64)
    assert one == shim_main.socket_address("/run/containerd/containerd.sock", "k8s.io", "a" * 64)
    assert one != shim_main.socket_address("/run/containerd/containerd.sock", "k8s.io", "b" * 64)
    assert one != shim_main.socket_address("/run/containerd/containerd.sock", "moby", "a" * 64)
    assert one.startswith("unix:///run/containerd/s/") and len(one) - len("unix://") < 108


def test_a_bad_command_line_is_one_line_and_exit_2(capsys):
    assert shim_main.main(["-namespace", "n", "frobnicate"]) == 2
    assert capsys.readouterr().err == \
        "containerd-shim-pyoci-v2: unknown action 'frobnicate': start or delete\n"
    assert shim_main.main(["start"]) == 2
    assert "namespace cannot be empty" in capsys.readouterr().err
