"""``json_text``: msgspec's speed, the standard library's answers. Every value and body here
is answered as ``json.loads`` / ``COMPACT_JSON.encode`` answer it, errors included."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redisq.json_text import COMPACT_JSON, compact_json, read_json_text

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30)


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES)
def test_compact_json_writes_what_the_standard_library_writes(value):
    assert compact_json(value) == COMPACT_JSON.encode(value)


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES)
def test_a_body_reads_as_the_standard_library_reads_it(value):
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value, indent=2)):
        assert repr(read_json_text(text.encode())) == repr(json.loads(text))  # 1 is not 1.0, -0.0 not 0.0


@pytest.mark.parametrize("value", [1e16, 1e-7, 123456789012345680.0, -0.0, 2**64, -(2**63) - 1, "é", "\x7f", "\x1f",
                                   "\u2028", "\ud800", {"1e5": "2E3"}, [None, 1.5]])
def test_the_edges_where_msgspec_writes_otherwise(value):
    assert compact_json(value) == COMPACT_JSON.encode(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, [-math.inf]])
def test_nan_and_infinity_are_refused_as_before(value):
    with pytest.raises(ValueError):
        COMPACT_JSON.encode(value)
    with pytest.raises(ValueError):
        compact_json(value)


@pytest.mark.parametrize("body", [b"NaN", b'{"x": Infinity}', b"1" + b"0" * 400, b'"\\ud800"', b'{"a": 1, "a": 2}',
                                  b"1e400"])
def test_what_only_the_standard_library_reads_is_read_by_it(body):
    assert repr(read_json_text(body)) == repr(json.loads(body))


@pytest.mark.parametrize("body", [b"{", b"[1,]", b"\xff", b'{"a" 1}', b"", b"  "])
def test_a_body_that_is_not_json_fails_with_the_standard_librarys_message(body):
    with pytest.raises(ValueError) as expected:
        json.loads(body)
    with pytest.raises(ValueError) as seen:
        read_json_text(body)
    assert str(seen.value) == str(expected.value)
