"""The protobuf wire format for the shim's messages (proto3) and CRIU's (proto2).

A message is a Message: its full name and its fields, each (name, number,
kind); a decoded one is a dict with every field (the defaults for those
absent). Kinds: the scalar names below, another Message, MapOf(kind) for a
map<string, kind>, and Repeated(kind). A proto3 field at its default is not
sent; a proto2 field is sent whenever the dict has it (not None): CRIU tells
a field set to 0 or false from one left out, and requires some that are 0.

Our own codec, not the protobuf package: a shim starts for every container
containerd runs, and importing protobuf costs it 30 ms; the few kinds the
task API and CRIU's RPC use fit here.
"""
import struct

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
SCALARS = {"string": LENGTH, "bytes": LENGTH, "bool": VARINT, "uint32": VARINT,
           "uint64": VARINT, "int32": VARINT, "int64": VARINT, "enum": VARINT,
           "double": FIXED64}
_DEFAULTS = {"string": "", "bytes": b"", "bool": False, "double": 0.0}


class DecodeError(ValueError):
    pass


class Message:
    def __init__(self, name, *fields, proto2=False):
        self.name = name
        self.fields = fields
        self.proto2 = proto2
        self.by_number = {number: (field, kind) for field, number, kind in fields}

    def __repr__(self):
        return f"Message({self.name})"

    def new(self, **values):
        """A dict of this message: VALUES over the defaults."""
        message = {field: default(kind) for field, _, kind in self.fields}
        unknown = set(values) - set(message)
        if unknown:
            raise KeyError(f"{self.name} has no field {', '.join(sorted(unknown))}")
        message.update(values)
        return message


class Repeated:
    def __init__(self, kind):
        self.kind = kind


class MapOf:
    def __init__(self, kind):
        self.entry = Message("entry", ("key", 1, "string"), ("value", 2, kind))


def default(kind):
    if isinstance(kind, Repeated):
        return []
    if isinstance(kind, MapOf):
        return {}
    if isinstance(kind, Message):
        return None
    return _DEFAULTS.get(kind, 0)


# ------------------------------------------------------------------ encoding

def encode(message_type, message):
    out = bytearray()
    for field, number, kind in message_type.fields:
        value = message.get(field)
        if value is None:
            continue
        if isinstance(kind, Repeated):
            for item in value:
                _encode_field(out, number, kind.kind, item, always=True)
        elif isinstance(kind, MapOf):
            for key, item in value.items():
                _encode_field(out, number, kind.entry, {"key": key, "value": item}, always=True)
        else:
            _encode_field(out, number, kind, value, always=message_type.proto2)
    return bytes(out)


def _encode_field(out, number, kind, value, always):
    if isinstance(kind, Message):
        body = encode(kind, value)
        _varint(out, number << 3 | LENGTH)
        _varint(out, len(body))
        out += body
        return
    if not always and value == _DEFAULTS.get(kind, 0):
        return  # proto3: a default is not sent
    wire = SCALARS[kind]
    _varint(out, number << 3 | wire)
    if wire == LENGTH:
        data = value.encode() if kind == "string" else value
        _varint(out, len(data))
        out += data
    elif wire == FIXED64:
        out += struct.pack("<d", value)
    else:
        _varint(out, int(value) & 0xFFFFFFFFFFFFFFFF)


def _varint(out, value):
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


# ------------------------------------------------------------------ decoding

def decode(message_type, data):
    message = message_type.new()
    view = memoryview(data)
    at = 0
    while at < len(view):
        key, at = _read_varint(view, at)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            raw, at = _read_varint(view, at)
        elif wire == LENGTH:
            size, at = _read_varint(view, at)
            if at + size > len(view):
                raise DecodeError(f"{message_type.name}: field {number} runs past the end")
            raw, at = view[at:at + size], at + size
        elif wire == FIXED64:
            raw, at = view[at:at + 8], at + 8
        elif wire == FIXED32:
            raw, at = view[at:at + 4], at + 4
        else:
            raise DecodeError(f"{message_type.name}: wire type {wire} of field {number}")
        known = message_type.by_number.get(number)
        if known is None:
            continue  # a newer peer's field
        field, kind = known
        if isinstance(kind, Repeated):
            message[field].extend(_decode_repeated(kind.kind, wire, raw))
        elif isinstance(kind, MapOf):
            entry = decode(kind.entry, raw)
            message[field][entry["key"]] = entry["value"]
        else:
            message[field] = _decode_value(kind, wire, raw, message_type, field)
    return message


def _decode_repeated(kind, wire, raw):
    if wire == LENGTH and not isinstance(kind, Message) and SCALARS[kind] == VARINT:
        values, at = [], 0  # packed
        while at < len(raw):
            value, at = _read_varint(raw, at)
            values.append(_scalar(kind, value))
        return values
    return [_decode_value(kind, wire, raw, None, None)]


def _decode_value(kind, wire, raw, message_type, field):
    if isinstance(kind, Message):
        if wire != LENGTH:
            raise DecodeError(f"{kind.name}: not length-delimited")
        return decode(kind, raw)
    expected = SCALARS[kind]
    if wire != expected:
        where = f"{message_type.name}.{field}" if message_type else kind
        raise DecodeError(f"{where}: wire type {wire}, expected {expected}")
    if kind == "string":
        try:
            return bytes(raw).decode()
        except UnicodeDecodeError:
            raise DecodeError(f"{kind}: not UTF-8") from None
    if kind == "bytes":
        return bytes(raw)
    if kind == "double":
        return struct.unpack("<d", raw)[0]
    return _scalar(kind, raw)


def _scalar(kind, value):
    if kind == "bool":
        return bool(value)
    if kind == "uint32":
        return value & 0xFFFFFFFF
    if kind in ("int32", "int64", "enum") and value >= 1 << 63:
        return value - (1 << 64)
    return value


def _read_varint(view, at):
    value = shift = 0
    while True:
        if at >= len(view):
            raise DecodeError("a varint runs past the end")
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise DecodeError("a varint of more than 10 bytes")
