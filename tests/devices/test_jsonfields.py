"""The JSON reader every decoder shares: msgspec's fast parse gives exactly what json gave."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.jsonfields import _stdlib_json, json_object
from devices.model import Message
from lantern.errors import DecodeError
from tests.devices.fuzzing import ANY_JSON

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def outcome(text: str, parse: object) -> str:
    """What a parse made of a text, comparable across parsers: the document's JSON (floats
    written exactly, -0.0 apart from 0), or the decode error's reason."""
    try:
        if parse is json_object:
            document = json_object(Message("t", text.encode("utf-8", "surrogatepass"), NOW), "x")
        else:
            document = _stdlib_json(text, "x")
            if not isinstance(document, dict):
                raise DecodeError(f"x must be a JSON object, got {type(document).__name__}")
    except DecodeError as exc:
        return f"error: {exc.reason}"
    return json.dumps(document, allow_nan=True)


def same(text: str) -> None:
    fast = outcome(text, json_object)
    slow = outcome(text, _stdlib_json)
    if slow.startswith("error: x must be a JSON object"):
        assert fast.startswith("error: x must be a JSON object")
    else:
        assert fast == slow


@pytest.mark.parametrize(
    "text",
    [
        '{"rssi": -60, "distance": 1.5, "id": "iBeacon:x"}',
        '{"a": 1e999}',  # msgspec refuses an overflowing number; json makes it inf
        '{"a": -1e999, "b": 1e-400}',
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"s": "\\ud800"}',  # a lone surrogate: json keeps it, msgspec refuses it
        '{"s": "\\udc00x", "t": "\\ud83d\\ude00"}',
        '{"a": 1, "a": 2}',
        '{"n": 123456789012345678901234567890, "m": -0.0, "z": -0}',
        '{"n": ' + "9" * 5000 + "}",
        '{"a":' * 950 + "1" + "}" * 950,  # near both parsers' nesting limits
        '{"a":' * 2000 + "1" + "}" * 2000,
        '{"a": "\x01"}',
        '\ufeff{"a": 1}',
        '{"a": 1,}',
        ' {\t"a" :\r\n1 } ',
        "[1, 2]",
        "null",
        "",
    ],
)
def test_the_fast_parse_agrees_with_json_on_the_cases_where_they_could_differ(text: str) -> None:
    same(text)


@given(ANY_JSON.map(lambda value: {"v": value}))
def test_the_fast_parse_agrees_with_json_on_any_document(document: dict[str, object]) -> None:
    same(json.dumps(document, allow_nan=True))


@given(st.text(alphabet='{}[]":,0123456789.eE+-tnrufalsNIy \\u\n', max_size=40))
def test_the_fast_parse_agrees_with_json_on_near_json(text: str) -> None:
    same(text)
