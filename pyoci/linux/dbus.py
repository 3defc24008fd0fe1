"""A minimal D-Bus client: enough to call systemd's manager as root.

Speaks the wire protocol directly (little-endian marshalling, EXTERNAL
authentication by uid) over systemd's private socket, /run/systemd/private:
a peer-to-peer connection to PID 1 that needs no dbus-daemon, no Hello and no
match rules (systemd sends its signals to every private connection).

Values are Python objects shaped by a D-Bus signature: ints, bools and
strings for basic types, lists for arrays, tuples for structs, and for a
variant a ``(signature, value)`` pair when sending (a plain value when
received).
"""
import os
import socket
import struct

SYSTEMD_PRIVATE_SOCKET = "/run/systemd/private"

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
_PATH, _INTERFACE, _MEMBER, _ERROR_NAME, _REPLY_SERIAL, _DESTINATION, _SENDER, _SIGNATURE = \
    range(1, 9)
_HEADER_FIELD_TYPES = {_PATH: "o", _INTERFACE: "s", _MEMBER: "s", _ERROR_NAME: "s",
                       _REPLY_SERIAL: "u", _DESTINATION: "s", _SENDER: "s", _SIGNATURE: "g"}
_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q",
          "d": "d", "h": "I"}
_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "h": 4,
          "s": 4, "o": 4, "g": 1, "v": 1, "a": 4, "(": 8, "{": 8}


class DBusError(Exception):
    """An error reply (``name``: e.g. org.freedesktop.systemd1.NoSuchUnit) or a
    broken connection (``name`` None)."""

    def __init__(self, name, message):
        super().__init__(message)
        self.name = name


def split_signature(signature):
    """The complete types in SIGNATURE: 'sa(sv)u' -> ['s', 'a(sv)', 'u']."""
    types, index = [], 0
    while index < len(signature):
        end = _complete_type_end(signature, index)
        types.append(signature[index:end])
        index = end
    return types


def _complete_type_end(signature, index):
    char = signature[index]
    if char == "a":
        return _complete_type_end(signature, index + 1)
    if char in "({":
        closing = ")" if char == "(" else "}"
        index += 1
        while signature[index] != closing:
            index = _complete_type_end(signature, index)
        return index + 1
    return index + 1


class _Writer:
    def __init__(self):
        self.data = bytearray()

    def align(self, boundary):
        self.data += b"\0" * (-len(self.data) % boundary)

    def write(self, signature, values):
        for type_code, value in zip(split_signature(signature), values, strict=True):
            self.value(type_code, value)

    def value(self, type_code, value):
        first = type_code[0]
        self.align(_ALIGN[first])
        if first in _FIXED:
            self.data += struct.pack("<" + _FIXED[first], value)
        elif first in "so":
            encoded = value.encode()
            self.data += struct.pack("<I", len(encoded)) + encoded + b"\0"
        elif first == "g":
            self.data += bytes([len(value)]) + value.encode() + b"\0"
        elif first == "v":
            signature, inner = value
            self.value("g", signature)
            self.value(signature, inner)
        elif first == "a":
            element = type_code[1:]
            length_at = len(self.data)
            self.data += b"\0\0\0\0"
            self.align(_ALIGN[element[0]])
            start = len(self.data)
            for item in value:
                self.value(element, item)
            struct.pack_into("<I", self.data, length_at, len(self.data) - start)
        else:  # struct or dict entry
            self.write(type_code[1:-1], value)


class _Reader:
    def __init__(self, data):
        self.data = data
        self.offset = 0

    def align(self, boundary):
        self.offset += -self.offset % boundary

    def read(self, signature):
        return [self.value(type_code) for type_code in split_signature(signature)]

    def value(self, type_code):
        first = type_code[0]
        self.align(_ALIGN[first])
        if first in _FIXED:
            fmt = "<" + _FIXED[first]
            (result,) = struct.unpack_from(fmt, self.data, self.offset)
            self.offset += struct.calcsize(fmt)
            return bool(result) if first == "b" else result
        if first in "sog":
            if first == "g":
                length = self.data[self.offset]
                self.offset += 1
            else:
                (length,) = struct.unpack_from("<I", self.data, self.offset)
                self.offset += 4
            text = bytes(self.data[self.offset:self.offset + length]).decode()
            self.offset += length + 1
            return text
        if first == "v":
            return self.value(self.value("g"))
        if first == "a":
            (length,) = struct.unpack_from("<I", self.data, self.offset)
            self.offset += 4
            element = type_code[1:]
            self.align(_ALIGN[element[0]])
            end = self.offset + length
            items = []
            while self.offset < end:
                items.append(self.value(element))
            return dict(items) if element[0] == "{" else items
        return tuple(self.read(type_code[1:-1]))


def encode_message(message_type, serial, fields, signature="", body=()):
    """One message: header (with FIELDS {code: value}) and body, as bytes."""
    body_writer = _Writer()
    body_writer.write(signature, body)
    if signature:
        fields = {**fields, _SIGNATURE: signature}
    header = _Writer()
    header.write("yyyyuua(yv)", [
        ord("l"), message_type, 0, 1, len(body_writer.data), serial,
        [(code, (_HEADER_FIELD_TYPES[code], value)) for code, value in fields.items()]])
    header.align(8)
    return bytes(header.data + body_writer.data)


def decode_message(data):
    """(message_type, fields, body values) from one whole message; None if
    DATA does not yet hold a whole message, else also the bytes it used."""
    if len(data) < 16:
        return None
    if data[0:1] != b"l":
        raise DBusError(None, "big-endian D-Bus messages are not supported")
    body_length, _, fields_length = struct.unpack_from("<III", data, 4)
    header_end = 16 + fields_length + (-(16 + fields_length) % 8)
    total = header_end + body_length
    if len(data) < total:
        return None
    reader = _Reader(data[:header_end])
    message_type = reader.read("yyyyuu")[1]
    fields = dict(reader.value("a(yv)"))
    body_reader = _Reader(data[header_end:total])
    body = body_reader.read(fields.get(_SIGNATURE, ""))
    return message_type, fields, body, total


class Connection:
    """A blocking connection that calls methods and collects signals."""

    def __init__(self, path=SYSTEMD_PRIVATE_SOCKET, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self.buffer = bytearray()
        self.serial = 0
        self.signals = []
        try:
            self.sock.connect(path)
            self._authenticate()
        except OSError as exc:
            self.sock.close()
            raise DBusError(None, f"connect to {path}: {exc.strerror or exc}") from None

    def _authenticate(self):
        # BEGIN goes with AUTH, as sd-bus clients send it: systemd's server
        # can miss a first message that arrives in the same read as BEGIN.
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\nBEGIN\r\n")
        line = self._read_line()
        if not line.startswith(b"OK "):
            raise DBusError(None, f"authentication refused: {line.decode(errors='replace')}")

    def _read_line(self):
        while b"\r\n" not in self.buffer:
            self._receive()
        line, _, rest = bytes(self.buffer).partition(b"\r\n")
        self.buffer = bytearray(rest)
        return line

    def _receive(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise DBusError(None, "connection closed by the peer")
        self.buffer += chunk

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, path, interface, member, signature="", *args,
             destination="org.freedesktop.systemd1"):
        """Call a method and return its reply's values; raises DBusError."""
        self.serial += 1
        serial = self.serial
        fields = {_PATH: path, _INTERFACE: interface, _MEMBER: member,
                  _DESTINATION: destination}
        self.sock.sendall(encode_message(METHOD_CALL, serial, fields, signature, args))
        while True:
            message_type, fields, body = self.next_message()
            if fields.get(_REPLY_SERIAL) != serial:
                continue
            if message_type == ERROR:
                raise DBusError(fields.get(_ERROR_NAME), body[0] if body else fields.get(_ERROR_NAME))
            return body

    def next_message(self):
        """The next message; signals are also kept in ``signals``."""
        while True:
            decoded = decode_message(self.buffer)
            if decoded is not None:
                message_type, fields, body, used = decoded
                del self.buffer[:used]
                if message_type == SIGNAL:
                    self.signals.append((fields.get(_MEMBER), body))
                return message_type, fields, body
            try:
                self._receive()
            except socket.timeout:
                raise DBusError(None, "timed out waiting for systemd") from None

    def wait_for_signal(self, member, matches):
        """Wait for signal MEMBER whose body MATCHES(body); return the body."""
        seen = 0
        while True:
            for name, body in self.signals[seen:]:
                if name == member and matches(body):
                    return body
            seen = len(self.signals)
            self.next_message()
