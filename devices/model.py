"""The values every decoder speaks: an inbound message in, typed observations out.

A decoder's ``parse(message)`` returns a list of observations, ``None`` when the message is
not of its family ("not mine"), or raises :class:`DecodeError` with a reason ("mine, but
broken"). Nothing else may escape a decoder; the fuzz tests hold every family to that.

Raw MAC addresses appear only in fields whose name ends in ``mac`` (normalised to 12
lowercase hex digits by :func:`normalize_mac`); ``gateway/privacy.py`` replaces exactly
those fields by keyed pseudonyms before anything is stored, logged or forwarded.

Observations are frozen ``msgspec.Struct`` values, not pydantic models: a decoder builds one or
more per message, and a Struct is built in C without validation (about a tenth of a model's
cost, and half a slotted class's with a Python ``__init__``). Nothing checks the field types at
construction, so a decoder hands each field the type it declares (a float for a float, never
an int: the event's JSON would say ``-60`` for ``-60.0``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

import msgspec
import msgspec.inspect

from lantern.errors import DecodeError

_Value = TypeVar("_Value")

__all__ = [
    "DeviceStatus",
    "KindCache",
    "Message",
    "Observation",
    "ScanRead",
    "Sighting",
    "Telemetry",
    "data_fields",
    "json_convertible_fields",
    "json_ready",
    "normalize_mac",
]


class Message(msgspec.Struct, frozen=True):
    """One inbound message as received, before any decoding.

    ``fields`` holds the named parts of the topic (``{"device": "scanner-1"}`` for
    ``lantern/{store}/scanner/{device}``), filled in by the gateway's topic router.
    """

    topic: str
    payload: bytes
    received_at: datetime
    fields: Mapping[str, str] = {}

    def text(self) -> str:
        """The payload as UTF-8 text, or a decode error saying it is not."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"payload is not UTF-8 (byte {exc.start})") from None


# The envelope's own fields: the event's source and time, never part of its data.
_ENVELOPE_FIELDS = frozenset({"device_id", "observed_at"})


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """What one device said, decoded. The gateway turns each into one CloudEvent.

    ``device_id`` is the device that reported it (the scanner, access point or smart
    device); ``observed_at`` is the device's own time when it gave one, otherwise None and
    the receive time is used.
    """

    event_type: ClassVar[str]

    device_id: str
    observed_at: datetime | None = None

    def cloud_event_type(self) -> str:
        """The CloudEvent ``type`` this observation becomes."""
        return self.event_type

    def subject(self) -> str | None:
        """The CloudEvent subject: who or what the observation is about."""
        return self.device_id

    def event_data(self) -> dict[str, Any]:
        """The CloudEvent ``data``: JSON-ready, without the envelope fields and the fields
        that are None (tuples as lists, a non-finite float as None, as JSON has it)."""
        data = self.data_values()
        for name in json_convertible_fields(type(self)):
            if name in data:
                data[name] = json_ready(data[name])
        return data

    def data_values(self) -> dict[str, Any]:
        """The data's fields that are not None, as they are: for an encoder that makes them
        JSON exactly as :meth:`event_data` does (the CloudEvent body, gateway/events.py)."""
        return {
            name: value
            for name in data_fields(type(self))
            if (value := getattr(self, name)) is not None
        }


class KindCache(dict[type, _Value]):
    """What ``make`` says of each kind, made once: ``cache[type(value)]``, as a plain dict
    lookup. Per message, where ``functools.cache`` would build a key object for each call."""

    def __init__(self, make: Callable[[type], _Value]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, kind: type) -> _Value:
        value = self[kind] = self._make(kind)
        return value


@functools.cache
def data_fields(kind: type[Observation]) -> tuple[str, ...]:
    """The fields of a kind's event data, in declaration order (a subclass's after its
    parent's, a field it redefines where the parent had it): all but the first two, the
    envelope's."""
    return tuple(name for name in kind.__struct_fields__ if name not in _ENVELOPE_FIELDS)


@functools.cache
def json_convertible_fields(kind: type[Observation]) -> frozenset[str]:
    """The data fields of a kind whose JSON form may differ from their value: those that may
    hold a float (non-finite, or written in either of two ways) or a container. The others
    (text, integers, booleans) are JSON as they are."""
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    return frozenset(field.name for field in info.fields if _may_convert(field.type))


def _may_convert(kind: msgspec.inspect.Type) -> bool:
    if isinstance(kind, msgspec.inspect.UnionType):
        return any(_may_convert(member) for member in kind.types)
    plain = (
        msgspec.inspect.StrType,
        msgspec.inspect.IntType,
        msgspec.inspect.BoolType,
        msgspec.inspect.LiteralType,
        msgspec.inspect.NoneType,
    )
    return not isinstance(kind, plain)


def json_ready(value: Any) -> Any:
    """A value as JSON has it: mappings as dicts, tuples as lists, NaN and infinities as None."""
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


class Sighting(Observation, frozen=True, kw_only=True):
    """A visitor or tag seen by a BLE scanner or a Wi-Fi access point.

    ``identity`` is a stable beacon identity when the advertisement carries one
    (``ibeacon:<uuid>-<major>-<minor>``, ``eddystone:<namespace>-<instance>``,
    ``altbeacon:<id1>-<id2>-<id3>``, or a scanner-given name such as ``espresense:<id>``);
    otherwise None, and the gateway identifies the visitor by the pseudonym of ``mac``.
    ``mac_random`` flags a randomised address (BLE random address type, or the locally
    administered bit of a Wi-Fi address). ``raw_errors`` names each raw field the scanner
    relayed that could not be decoded, with the reason, when the sighting stands on the
    scanner's own decoding instead; never the field's content, which may embed the address.
    """

    event_type: ClassVar[str] = "lantern.presence.sighted"

    scanner: str
    identity: str | None = None
    mac: str | None = None
    mac_random: bool | None = None
    rssi: float | None = None
    distance_m: float | None = None
    tx_power: int | None = None
    position: tuple[float, float] | None = None
    beacon: Mapping[str, Any] | None = None
    technology: Literal["ble", "wifi"] = "ble"
    raw_errors: Mapping[str, str] | None = None

    def subject(self) -> str | None:
        return self.identity or self.mac


class ScanRead(Observation, frozen=True, kw_only=True):
    """A barcode read: the raw ``code``, its symbology and, for GS1 data, GTIN and AIs."""

    event_type: ClassVar[str] = "lantern.scan.read"

    code: str
    symbology: str | None = None
    gtin: str | None = None
    ai: Mapping[str, str] = {}


class DeviceStatus(Observation, frozen=True, kw_only=True):
    """A device said it is online or offline (its MQTT last will, or a status topic)."""

    event_type: ClassVar[str] = "lantern.device.online"

    online: bool

    def cloud_event_type(self) -> str:
        return "lantern.device.online" if self.online else "lantern.device.offline"


class Telemetry(Observation, frozen=True, kw_only=True):
    """A device's own health report: battery, temperature, firmware, consumable levels."""

    event_type: ClassVar[str] = "lantern.device.telemetry"

    values: Mapping[str, Any]


_MAC_SEPARATORS = re.compile(r"[:\-.\s]")
_MAC_HEX = re.compile(r"[0-9a-f]{12}")
_MAC_DIGITS = 12
_LOWER_HEX_DIGITS = "0123456789abcdef"


def normalize_mac(text: str) -> str:
    """A MAC address in any common spelling as 12 lowercase hex digits, or a decode error."""
    if len(text) == _MAC_DIGITS and not text.strip(_LOWER_HEX_DIGITS):  # already so spelt,
        return text  # as most scanners send it: checked without the regular expression's cost
    mac = _MAC_SEPARATORS.sub("", text).lower()
    if not _MAC_HEX.fullmatch(mac):
        raise DecodeError(f"not a MAC address: {text!r}")
    return mac
