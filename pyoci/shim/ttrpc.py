"""ttrpc, containerd's RPC over a unix socket: the server the shim serves
its task service on, and the client it forwards events with.

A frame is a 10-byte big-endian header (payload length, stream id, type,
flags) and the payload: a ttrpc Request (type 1) or Response (type 2).
Clients number their streams with odd ids; a response carries its
request's. The server runs in the shim's one event loop (a selector): a
handler answers at once, or returns LATER and answers through its Reply
when it can (Wait), while other calls go on.
"""
import _socket  # not `socket`: its enums cost every shim start milliseconds
import errno
import os
import struct
import time

from pyoci import wire
from pyoci.shim import messages as m

HEADER = struct.Struct(">IIBB")
REQUEST, RESPONSE = 1, 2
MAX_MESSAGE = 4 << 20

# gRPC status codes, as containerd's errdefs maps them
OK, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS = 0, 2, 3, 4, 5, 6
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 9, 12, 13, 14

LATER = object()


class TtrpcError(Exception):
    """An RPC's failure: a gRPC status CODE and its MESSAGE."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def frame(stream_id, message_type, payload):
    return HEADER.pack(len(payload), stream_id, message_type, 0) + payload


def _peer_is_us(sock):
    """As ttrpc's UnixSocketRequireSameUser: the peer's uid and gid are ours."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, gid = struct.unpack("3i", creds)
    return uid == os.geteuid() and gid == os.getegid()


class Reply:
    """Where one call's answer goes: answer(MESSAGE) or fail(code, text), once."""

    def __init__(self, connection, stream_id, response_type):
        self._connection = connection
        self._stream_id = stream_id
        self._response_type = response_type

    def answer(self, message):
        self._send(m.RESPONSE.new(status=m.STATUS.new(code=OK), payload=wire.encode(
            self._response_type, message)))

    def fail(self, code, text):
        self._send(m.RESPONSE.new(status=m.STATUS.new(code=code, message=text)))

    def _send(self, response):
        self._connection.send(frame(self._stream_id, RESPONSE, wire.encode(m.RESPONSE, response)))


class Service:
    """NAME's methods: {method: (request type, response type, handler)}; a
    handler takes (request, reply) and returns the response, or LATER."""

    def __init__(self, name, methods):
        self.name = name
        self.methods = methods


class Server:
    def __init__(self, loop, listener, services, on_error):
        self._loop = loop
        self._listener = listener
        self._services = {service.name: service for service in services}
        self._on_error = on_error  # (method, exception) of a handler that raised a non-ttrpc error
        self.connections = set()
        listener.setblocking(False)
        loop.watch(listener, self._accept)

    def _accept(self):
        try:
            fd, _ = self._listener._accept()
        except BlockingIOError:
            return
        sock = _socket.socket(fileno=fd)
        if not _peer_is_us(sock):
            sock.close()
            return
        self.connections.add(_ServerConnection(self, sock))

    def close(self):
        self._loop.unwatch(self._listener)
        self._listener.close()
        for connection in list(self.connections):
            connection.close()

    def dispatch(self, connection, stream_id, payload):
        request = None
        try:
            if stream_id % 2 == 0:
                raise TtrpcError(INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
            request = wire.decode(m.REQUEST, payload)
            service = self._services.get(request["service"])
            if service is None:
                raise TtrpcError(UNIMPLEMENTED, f"service {request['service']}")
            method = service.methods.get(request["method"])
            if method is None:
                raise TtrpcError(UNIMPLEMENTED, f"method {request['method']}")
            request_type, response_type, handler = method
            reply = Reply(connection, stream_id, response_type)
            try:
                message = wire.decode(request_type, request["payload"])
            except wire.DecodeError as exc:
                raise TtrpcError(INTERNAL, f"{request_type.name}: {exc}") from None
            result = handler(message, reply)
            if result is not LATER:
                reply.answer(result)
        except TtrpcError as exc:
            Reply(connection, stream_id, m.EMPTY).fail(exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - a handler's bug fails its call, not the shim
            self._on_error(request and request["method"], exc)
            Reply(connection, stream_id, m.EMPTY).fail(UNKNOWN, str(exc) or type(exc).__name__)


class _ServerConnection:
    def __init__(self, server, sock):
        self._server = server
        self._sock = sock
        self._buffer = bytearray()
        self.closed = False
        sock.setblocking(False)
        server._loop.watch(sock, self._readable)

    def _readable(self):
        try:
            data = self._sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            length, stream_id, message_type, _ = HEADER.unpack_from(self._buffer)
            if len(self._buffer) < HEADER.size + length:
                if length > MAX_MESSAGE:
                    self._refuse_oversized(stream_id, length)
                break
            payload = bytes(self._buffer[HEADER.size:HEADER.size + length])
            del self._buffer[:HEADER.size + length]
            if message_type == REQUEST:  # others are ignored, as ttrpc does (future types)
                self._server.dispatch(self, stream_id, payload)

    def _refuse_oversized(self, stream_id, length):
        Reply(self, stream_id, m.EMPTY).fail(
            RESOURCE_EXHAUSTED,
            f"message length {length} exceed maximum message size of {MAX_MESSAGE}")
        self.close()

    def send(self, data):
        if self.closed:
            return
        try:
            self._sock.setblocking(True)
            self._sock.sendall(data)
            self._sock.setblocking(False)
        except OSError:
            self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self._server._loop.unwatch(self._sock)
            self._sock.close()
            self._server.connections.discard(self)


class Client:
    """Calls, one at a time, to a ttrpc server at PATH (containerd's events service)."""

    def __init__(self, path, metadata=()):
        self.path = path
        self.metadata = [m.KEY_VALUE.new(key=key, value=value) for key, value in metadata]
        self._sock = None
        self._stream_id = 1

    def call(self, service, method, request_type, request, response_type, timeout=5.0):
        if self._sock is None:
            from pyoci.linux import unix
            self._sock = unix.connect(self.path)
        stream_id = self._stream_id
        self._stream_id += 2
        payload = wire.encode(m.REQUEST, m.REQUEST.new(
            service=service, method=method, payload=wire.encode(request_type, request),
            timeout_nano=int(timeout * 1e9), metadata=self.metadata))
        try:
            self._sock.sendall(frame(stream_id, REQUEST, payload))
            deadline = time.monotonic() + timeout
            while True:
                length, got_id, message_type, _ = HEADER.unpack(self._read(HEADER.size, deadline))
                body = self._read(length, deadline)
                if got_id == stream_id and message_type == RESPONSE:
                    break
        except (OSError, ValueError):
            self.close()
            raise
        response = wire.decode(m.RESPONSE, body)
        status = response["status"]
        if status and status["code"] != OK:
            raise TtrpcError(status["code"], status["message"])
        return wire.decode(response_type, response["payload"])

    def _read(self, size, deadline):
        data = bytearray()
        while len(data) < size:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = self._sock.recv(size - len(data))
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "ttrpc server closed the connection")
            data += chunk
        return bytes(data)

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
