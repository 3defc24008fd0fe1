"""pyoci.jsontext against the json package: the same text out, the same values in."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from pyoci import jsontext

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@given(values)
def test_dumps_is_json_dumps(value):
    assert jsontext.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert jsontext.dumps(value, 2) == json.dumps(value, indent=2)
    assert jsontext.dumps(value, "\t") == json.dumps(value, indent="\t")


@given(values)
def test_loads_is_json_loads(value):
    for text in (json.dumps(value), json.dumps(value, indent=1), f" \n{json.dumps(value)}\t"):
        assert jsontext.loads(text) == json.loads(text)
        assert jsontext.loads(text.encode()) == json.loads(text)


def test_non_finite_floats_and_keys_as_json():
    value = {1: float("inf"), None: float("-inf"), True: [1.5]}
    assert jsontext.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert str(jsontext.loads("NaN")) == "nan"


@pytest.mark.parametrize("text", ["", "  ", "{", "[1] x", '{"a" 1}', "[1,]", "nul"])
def test_malformed_is_jsons_error(text):
    with pytest.raises(json.JSONDecodeError) as ours:
        jsontext.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_unknown_type_is_a_type_error():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsontext.dumps({"a": {1}})


@pytest.mark.parametrize("text", ['{"a": 1, "b"', '{', '{"a": [1, 2', '{"id": "x", "pid": 1'])
def test_truncated_before_json_is_imported(text):
    """A truncated state.json, read by a fresh `pyoci` that never imported
    the json package (whose decoder the C scanner's errors need)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pyoci import jsontext\n"
            "try:\n    jsontext.loads(sys.argv[2])\n"
            "except ValueError as exc:\n    print(type(exc).__name__)\n")
    shown = subprocess.run([sys.executable, "-I", "-S", "-c", code,
                            str(Path(jsontext.__file__).parents[1]), text],
                           capture_output=True, text=True)
    assert (shown.stdout, shown.stderr) == ("JSONDecodeError\n", "")
