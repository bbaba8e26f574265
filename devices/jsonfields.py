"""Reading the JSON payloads of devices: one typed field at a time, every bad value a decode error.

Each helper takes a decoded document and a key and answers the field as the type the decoder
needs, None (or an empty object or list) when the field is absent or null, and raises
:class:`DecodeError` naming the key for a value of another type (by its JSON name: ``a
string``, ``an object``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from devices.model import Message
from lantern.errors import DecodeError

__all__ = [
    "json_nested_object",
    "json_number",
    "json_object",
    "json_object_list",
    "json_str",
    "json_struct",
    "json_time",
    "json_type",
]

_JSON_TYPE_NAMES: Mapping[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error reasons."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _no_constant(name: str) -> float:
    raise DecodeError(f"{name} is not a JSON number")


# msgspec parses a payload in C, several times faster than json. A payload it refuses goes
# through json, which gives the result or the refusal reason this module has always given: every
# document both parse is the same dict, and the two differ only on payloads msgspec refuses and
# json takes (NaN, 1e999, lone surrogates: json then refuses those, see _stdlib_json) or words
# its refusal otherwise. They also reach
# their nesting limits a few levels apart, so a payload with this many brackets goes to json
# alone; every real device's payload has far fewer.
_MSGSPEC_MAX_BRACKETS = 900
_FAST_DECODER = msgspec.json.Decoder()
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_Struct = TypeVar("_Struct", bound=msgspec.Struct)
_Decoded = TypeVar("_Decoded")


def json_object(message: Message, what: str) -> dict[str, Any]:
    """The payload as a JSON object, or a decode error saying why it is not one."""
    text = message.text()
    document = _fast_decode(text, _FAST_DECODER)
    if not isinstance(document, dict):
        document = _stdlib_json(text, what)
    if not isinstance(document, dict):
        raise DecodeError(f"{what} must be a JSON object, got {json_type(document)}")
    return document


def json_struct(message: Message, decoder: msgspec.json.Decoder[_Struct]) -> _Struct | None:
    """The payload as the decoder's typed Struct, in one pass; None when it does not fit (a
    value of another type, a non-object, anything :func:`json_object` would refuse), and the
    decoder then reads it with :func:`json_object` and the typed readers, which say why.

    A Struct's numbers are as :func:`json_number` reads them (an integer as a float) but may
    be non-finite: the caller checks. A payload that is not UTF-8 is a decode error here too.
    """
    return _fast_decode(message.text(), decoder)


def _fast_decode(text: str, decoder: msgspec.json.Decoder[_Decoded]) -> _Decoded | None:
    """What msgspec makes of the text, or None if it refuses it."""
    if len(text) >= _MSGSPEC_MAX_BRACKETS and (
        text.count("{") + text.count("[") >= _MSGSPEC_MAX_BRACKETS
    ):
        return None
    try:
        return decoder.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None


def _stdlib_json(text: str, what: str) -> Any:
    try:
        # Infinity from an overflowing exponent is caught where a number is read (json_number):
        # a parse_float hook here would call Python for every number of every message.
        document = json.loads(text, parse_constant=_no_constant)
        if _SURROGATE_ESCAPE.search(text):
            # json takes "\ud800" alone, and no event could carry the string it makes: it
            # cannot be written as UTF-8. Caught here, it is this message's dead letter.
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        return document
    except UnicodeEncodeError:
        raise DecodeError(f"{what} has a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc.msg} at {exc.pos}") from None
    except (ValueError, RecursionError) as exc:
        # int() refuses more than 4300 digits; deep nesting exhausts the parser's stack.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DecodeError(f"{what} is not valid JSON: {reason[:80]}") from None


def json_number(document: Mapping[str, Any], key: str) -> float | None:
    """``document[key]`` as a float, None when absent or null, a decode error otherwise."""
    value = document.get(key)
    if type(value) is float and value - value == 0:  # finite: most numbers devices send
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{key} must be a number, got {json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise DecodeError(f"{key} is out of range") from None
    if not math.isfinite(number):
        raise DecodeError(f"{key} is out of range")
    return number


def json_str(document: Mapping[str, Any], key: str) -> str | None:
    """``document[key]`` as a string, None when absent or null, a decode error otherwise."""
    value = document.get(key)
    if value is None or isinstance(value, str):
        return value
    raise DecodeError(f"{key} must be a string, got {json_type(value)}")


def json_nested_object(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``document[key]`` as an object; absent or null is an empty one."""
    value = document.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"{key} must be an object, got {json_type(value)}")
    return value


def json_object_list(document: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """``document[key]`` as a list of objects; absent or null is an empty list."""
    value = document.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise DecodeError(f"{key} must be a list of objects")
    return value


def json_time(document: Mapping[str, Any], key: str) -> datetime | None:
    """``document[key]`` as an aware datetime (RFC 3339), None when absent or null."""
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{key} must be an RFC 3339 time, got {json_type(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError(f"{key} is not an RFC 3339 time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise DecodeError(f"{key} has no time zone: {value[:40]!r}")
    return moment
