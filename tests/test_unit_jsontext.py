"""pyoci.jsontext against the json package: the same text out, the same values in."""
import json

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
