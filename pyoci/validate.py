"""Validate config.json, state and features documents against pyoci's schemas.

The schemas in ``schemas/`` accept exactly what the official runtime-spec
schemas accept (tests/test_schema.py proves it).  Validity is decided here by
a small interpreter of just the JSON-schema keywords those files use, because
importing jsonschema costs 45-65 ms and a valid ``create`` must not pay it.
Only an invalid document imports jsonschema, to word the one-line error the
same way every schema tool does.

The interpreter follows draft-04 as jsonschema implements it: 1.0 and True
are not integers, ``pattern`` is ``re.search`` on strings, and every keyword
other than ``type`` ignores values of the kinds it does not apply to. It
imports neither json nor re (nor what they import): a create would pay
several milliseconds for them.
"""
import os

from pyoci import jsontext
from pyoci.errors import ConfigError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# Keywords that never change a verdict.
_ANNOTATIONS = frozenset({"$schema", "title", "description", "definitions"})
# Keywords about an object's members: they decide together which schema a key gets.
_MEMBER_KEYWORDS = frozenset({"properties", "patternProperties", "additionalProperties"})

# JSON types as the Python types json.load produces; "integer" also excludes bool.
_PYTHON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}


def validate_config(doc):
    """Raise ConfigError unless ``doc`` is a valid runtime-spec config.json."""
    _validate(doc, "config.schema.json", "config.json")


def config_problems(doc):
    """Every way DOC breaks the config schema, a ConfigError each (pyoci
    check): jsonschema's errors, each worded by its best match, where it is
    installed; the fast verdict alone where it is not."""
    schema_name = "config.schema.json"
    failure = _checker(schema_name)(doc)
    if failure is None:
        return []
    fast = ConfigError(f"config.json: {format_path(reversed(failure.reversed_path))}: "
                       f"{failure.message}")
    try:
        from jsonschema.exceptions import best_match
        from jsonschema.validators import validator_for
    except ImportError:
        return [fast]
    schema = load_schema(schema_name)
    errors = sorted(validator_for(schema)(schema).iter_errors(doc),
                    key=lambda error: [str(key) for key in error.absolute_path])
    explained = (best_match([error]) for error in errors)
    return [ConfigError(f"config.json: {format_path(error.absolute_path)}: {error.message}")
            for error in explained] or [fast]


def validate_state(doc):
    """Raise ConfigError unless ``doc`` is a valid runtime-spec state."""
    _validate(doc, "state.schema.json", "state.json")


def validate_features(doc):
    """Raise ConfigError unless ``doc`` is a valid runtime-spec features document."""
    _validate(doc, "features.schema.json", "features.json")


def schema_path(name):
    """Where schema ``name`` lives: package data once installed, else the source tree."""
    installed = os.path.join(_PACKAGE_DIR, "schemas", name)
    if os.path.isfile(installed):
        return installed
    return os.path.join(os.path.dirname(_PACKAGE_DIR), "schemas", name)


_schemas = {}


def load_schema(name):
    if name not in _schemas:
        with open(schema_path(name), "rb") as schema_file:
            _schemas[name] = jsontext.loads(schema_file.read())
    return _schemas[name]


def _validate(doc, schema_name, label):
    failure = _checker(schema_name)(doc)
    if failure is not None:
        raise ConfigError(f"{label}: {_explain(doc, load_schema(schema_name), failure)}")


def _explain(doc, schema, failure):
    """``<path>: <message>`` for an invalid ``doc``, worded by jsonschema's best match."""
    fast_explanation = f"{format_path(reversed(failure.reversed_path))}: {failure.message}"
    try:
        from jsonschema.exceptions import best_match
        from jsonschema.validators import validator_for
    except ImportError:  # jsonschema only words the error; the verdict stands without it
        return fast_explanation
    error = best_match(validator_for(schema)(schema).iter_errors(doc))
    if error is None:  # jsonschema disagrees, but the fast verdict stands
        return fast_explanation
    return f"{format_path(error.absolute_path)}: {error.message}"


def format_path(keys):
    """``linux.namespaces[2].type`` for a path of keys and indices; ``(root)`` if empty."""
    text = ""
    for key in keys:
        if isinstance(key, int):
            text += f"[{key}]"
        elif key and key.isprintable():
            text += f".{key}" if text else key
        else:
            text += f"[{jsontext.dumps(key)}]"  # keeps the message on one line
    return text or "(root)"


class _Failure:
    """Why a value failed; parents push their key onto the path as it travels up."""

    __slots__ = ("reversed_path", "message")

    def __init__(self, message):
        self.reversed_path = []
        self.message = message

    def at(self, key):
        self.reversed_path.append(key)
        return self


_checkers = {}


def _checker(schema_name):
    """The compiled check of a whole schema: value -> _Failure or None."""
    if schema_name not in _checkers:
        schema = load_schema(schema_name)
        _checkers[schema_name] = _Compiler(schema).compile(schema)
    return _checkers[schema_name]


def _searcher(pattern):
    """re.search(PATTERN, text) is not None, as a predicate. The patterns our
    schemas use are matched here: a lone ".", or "^...$" around literals and
    [classes] (ranges, negation, the escapes \\n \\t \\\\ \\- \\]), each
    once, or with * or +. Any other pattern is left to re."""
    if pattern == ".":
        return lambda text: any(char != "\n" for char in text)
    items = _sequence(pattern)
    if items is None:
        import re
        compiled = re.compile(pattern)
        return lambda text: compiled.search(text) is not None

    def search(text):
        # re's "$" also matches before a final newline.
        return _match(items, text, 0, 0) or (text.endswith("\n")
                                             and _match(items, text[:-1], 0, 0))
    return search


_CLASS_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "-": "-", "]": "]"}


def _sequence(pattern):
    """[(ranges, negated, least, most)] for "^...$", or None if unsupported."""
    if len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$":
        return None
    body, index, items = pattern[1:-1], 0, []
    while index < len(body):
        char = body[index]
        if char == "[":
            end = body.find("]", index + 1)
            while end > 0 and body[end - 1] == "\\":
                end = body.find("]", end + 1)
            members = body[index + 1:end] if end > 0 else ""
            negated = members.startswith("^")
            ranges = _ranges(members[1:] if negated else members)
            if ranges is None:
                return None
            index = end + 1
        elif char in ".()|?{}\\*+$^":
            return None
        else:
            ranges, negated = ((char, char),), False
            index += 1
        least, most = 1, 1
        if index < len(body) and body[index] in "*+":
            least, most = (0 if body[index] == "*" else 1), None
            index += 1
        items.append((ranges, negated, least, most))
    return items


def _ranges(members):
    """((low, high), ...) of a class's members, or None if unsupported."""
    chars = []
    index = 0
    while index < len(members):
        if members[index] == "\\":
            escaped = _CLASS_ESCAPES.get(members[index + 1:index + 2])
            if escaped is None:
                return None
            chars.append((escaped, True))
            index += 2
        else:
            chars.append((members[index], False))
            index += 1
    if not chars:
        return None
    ranges = []
    index = 0
    while index < len(chars):
        low = chars[index][0]
        if index + 2 < len(chars) and chars[index + 1] == ("-", False):
            ranges.append((low, chars[index + 2][0]))
            index += 3
        else:
            ranges.append((low, low))
            index += 1
    return tuple(ranges)


def _match(items, text, start, position):
    """Whether ITEMS from POSITION match TEXT from START to its end (greedy, backtracking)."""
    if position == len(items):
        return start == len(text)
    ranges, negated, least, most = items[position]
    end = start
    limit = len(text) if most is None else min(len(text), start + most)
    while end < limit and any(low <= text[end] <= high for low, high in ranges) != negated:
        end += 1
    for stop in range(end, start + least - 1, -1):
        if _match(items, text, stop, position + 1):
            return True
    return False


class _Compiler:
    """Turns schema nodes into closures; ``$ref`` targets compile on first use."""

    def __init__(self, root_schema):
        self._root_schema = root_schema
        self._compiled_refs = {}

    def compile(self, schema):
        if "$ref" in schema:
            if schema.keys() - {"$ref", "description"}:
                raise ValueError(f"draft-04 ignores keywords beside $ref: {sorted(schema)}")
            return self._ref(schema["$ref"])
        checks = []
        if "type" in schema:  # first, so a value of the wrong kind is reported as such
            checks.append(_type_check(schema["type"]))
        if schema.keys() & _MEMBER_KEYWORDS:
            checks.append(self._members(schema))
        for keyword, argument in schema.items():
            if keyword == "type" or keyword in _MEMBER_KEYWORDS or keyword in _ANNOTATIONS:
                continue
            compile_keyword = self._KEYWORDS.get(keyword)
            if compile_keyword is None:
                raise ValueError(f"schema keyword {keyword!r} is not supported by pyoci.validate")
            checks.append(compile_keyword(self, argument))
        if len(checks) == 1:
            return checks[0]

        def check_all(value):
            for check in checks:
                failure = check(value)
                if failure is not None:
                    return failure
            return None
        return check_all

    def _ref(self, reference):
        if not reference.startswith("#/"):
            raise ValueError(f"only local $refs are supported: {reference!r}")
        compiled_refs = self._compiled_refs

        def check_ref(value):
            check = compiled_refs.get(reference)
            if check is None:
                check = compiled_refs[reference] = self.compile(self._resolve(reference))
            return check(value)
        return check_ref

    def _resolve(self, reference):
        node = self._root_schema
        for token in reference[2:].split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node

    def _members(self, schema):
        named = {name: self.compile(subschema) for name, subschema in schema.get("properties", {}).items()}
        patterned = [(_searcher(pattern), self.compile(subschema))
                     for pattern, subschema in schema.get("patternProperties", {}).items()]
        additional = schema.get("additionalProperties")
        if additional is not None and not isinstance(additional, dict):
            raise ValueError("only a schema is supported as additionalProperties")
        other = None if additional is None else self.compile(additional)

        def check_members(value):
            if not isinstance(value, dict):
                return None
            for key, member in value.items():
                check = named.get(key)
                matched = check is not None
                if matched:
                    failure = check(member)
                    if failure is not None:
                        return failure.at(key)
                for search, check in patterned:
                    if search(key):
                        matched = True
                        failure = check(member)
                        if failure is not None:
                            return failure.at(key)
                if not matched and other is not None:
                    failure = other(member)
                    if failure is not None:
                        return failure.at(key)
            return None
        return check_members

    def _items(self, item_schema):
        if not isinstance(item_schema, dict):
            raise ValueError("only a single schema is supported as items")
        check_item = self.compile(item_schema)

        def check_items(value):
            if not isinstance(value, list):
                return None
            for index, item in enumerate(value):
                failure = check_item(item)
                if failure is not None:
                    return failure.at(index)
            return None
        return check_items

    def _required(self, names):
        def check_required(value):
            if isinstance(value, dict):
                for name in names:
                    if name not in value:
                        return _Failure(f"{name!r} is a required property")
            return None
        return check_required

    def _enum(self, allowed):
        if not all(isinstance(choice, str) for choice in allowed):
            raise ValueError("only enums of strings are supported")  # equality is then plain ==
        allowed_set = frozenset(allowed)

        def check_enum(value):
            if isinstance(value, str) and value in allowed_set:
                return None
            return _Failure(f"{value!r} is not one of {allowed!r}")
        return check_enum

    def _pattern(self, pattern):
        search = _searcher(pattern)

        def check_pattern(value):
            if isinstance(value, str) and not search(value):
                return _Failure(f"{value!r} does not match {pattern!r}")
            return None
        return check_pattern

    def _minimum(self, minimum):
        def check_minimum(value):
            if _is_number(value) and value < minimum:
                return _Failure(f"{value!r} is less than the minimum of {minimum!r}")
            return None
        return check_minimum

    def _maximum(self, maximum):
        def check_maximum(value):
            if _is_number(value) and value > maximum:
                return _Failure(f"{value!r} is greater than the maximum of {maximum!r}")
            return None
        return check_maximum

    def _min_items(self, min_items):
        def check_min_items(value):
            if isinstance(value, list) and len(value) < min_items:
                return _Failure(f"{value!r} has fewer than {min_items} items")
            return None
        return check_min_items

    _KEYWORDS = {
        "items": _items,
        "required": _required,
        "enum": _enum,
        "pattern": _pattern,
        "minimum": _minimum,
        "maximum": _maximum,
        "minItems": _min_items,
    }


def _type_check(type_name):
    python_type = _PYTHON_TYPES[type_name]
    excluded_type = bool if type_name == "integer" else ()  # isinstance(x, ()) is always False

    def check_type(value):
        if isinstance(value, python_type) and not isinstance(value, excluded_type):
            return None
        return _Failure(f"{value!r} is not of type {type_name!r}")
    return check_type


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
