"""JSON without the json package, whose import (it brings `re`) costs a
short command more than all the work it does: the C scanner and string
escaping of the built-in _json, and a small encoder for the plain values
pyoci writes. Output is what json.dumps gives for the same arguments."""
import _json

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _ScannerContext:
    """The attributes _json.make_scanner reads (json.JSONDecoder's defaults)."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo = None


_scan = _json.make_scanner(_ScannerContext())
_escape = _json.encode_basestring_ascii


def loads(text):
    """json.loads of a str, or of UTF-8 bytes (a byte order mark allowed, as
    json.loads allows it); errors are json's JSONDecodeError."""
    if isinstance(text, (bytes, bytearray)):
        # Not the utf-8-sig codec: looking it up imports a module.
        text = (text[3:] if text.startswith(b"\xef\xbb\xbf") else text).decode("utf-8")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        _fail("Expecting value", text, stop.value)
    except SystemError:
        # The scanner raises its other errors as json.decoder's
        # JSONDecodeError, but finds it only once that module is loaded.
        import json.decoder  # noqa: F401
        value, end = _scan(text, start)  # raises it this time
    if text[end:].strip(_WHITESPACE):
        _fail("Extra data", text, len(text) - len(text[end:].lstrip(_WHITESPACE)))
    return value


def _fail(message, text, position):
    from json.decoder import JSONDecodeError  # only a malformed document pays for it
    raise JSONDecodeError(message, text, position) from None


def dumps(value, indent=None):
    """json.dumps(VALUE, indent=INDENT) for INDENT given (spaces, or a
    string); compact (separators "," and ":") without."""
    if isinstance(indent, int):
        indent = " " * indent
    out = []
    _encode(value, out, indent, "\n")
    return "".join(out)


def _encode(value, out, indent, newline):
    if isinstance(value, str):
        out.append(_escape(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, dict):
        _container(out, "{", "}", indent, newline, value.items(), value)
    elif isinstance(value, (list, tuple)):
        _container(out, "[", "]", indent, newline, None, value)
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _container(out, opening, closing, indent, newline, items, value):
    if not value:
        out.append(opening + closing)
        return
    inner = None if indent is None else newline + indent
    separator = "," if indent is None else "," + inner
    out.append(opening if inner is None else opening + inner)
    for index, element in enumerate(items if items is not None else value):
        if index:
            out.append(separator)
        if items is not None:
            key, element = element
            out.append(_escape(key if isinstance(key, str) else _key(key)))
            out.append(":" if indent is None else ": ")
        _encode(element, out, indent, inner)
    out.append(closing if indent is None else newline + closing)


def _key(key):
    """json.dumps's text for a non-string key."""
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, float):
        return _float(key)
    if isinstance(key, int):
        return int.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _float(value):
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)
