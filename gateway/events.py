"""CloudEvents 1.0 (structured JSON) and the ids that make them time-ordered and unique.

An id is a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter that keeps
ids from one generator strictly increasing within a millisecond, then 62 random bits that keep
two gateways (or a gateway before and after a restart) from colliding. ``(source, id)`` is the
receiver's dedup key.

A body is encoded by msgspec straight from the observation's values, byte for byte the JSON the
pydantic ``CloudEvent.model_dump_json(exclude_none=True)`` of earlier versions wrote (the
receivers and tests/fixtures/golden_events.jsonl hold it to that): the same field order, no
``subject`` when there is none, non-finite numbers as ``null``, and the two places where the
encoders differ written as pydantic wrote them (a float's positive exponent with its sign,
``1e+16``; a time zone offset of seconds, cut to its minutes).
"""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from devices.model import KindCache, Observation, data_fields, json_convertible_fields
from gateway.batch import EventRow

__all__ = [
    "ACTION_PUBLISH_TYPE",
    "BATCH_CONTENT_TYPE",
    "SIGHTING_TYPE",
    "CloudEvent",
    "EventFactory",
    "IdGenerator",
    "format_time",
    "store_source",
]

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
SIGHTING_TYPE = "lantern.presence.sighted"
# A rule's local publish, kept in the outbox like any event so that it survives a crash; the
# MQTT action sink publishes it, and no sink to the central record takes it.
ACTION_PUBLISH_TYPE = "lantern.action.publish"

_COUNTER_MAX = 0xFFF  # the 12 rand_a bits of UUIDv7 serve as the in-millisecond counter
_RANDOM_BITS = 62
_VERSION_BITS = 0x7 << 12  # over the counter's 12 bits
_VARIANT_BITS = 0b10 << _RANDOM_BITS  # over the random ones
_VARIANT_AND_RANDOM_BITS = 64
_TAIL_BYTES = 10  # version and counter (16 bits), variant and random bits (64)
_SEED_BITS = 128  # of OS randomness for a live generator: no two gateways share a sequence
# msgspec writes a float from 1e16 on as 1e16, pydantic wrote 1e+16; below, the two agree.
_PLAIN_FLOAT_LIMIT = 1e16
_MINUTE = timedelta(minutes=1)
_ENVELOPE_FIELDS = 2  # device_id and observed_at lead every observation's fields
_CONTAINERS = frozenset({dict, list, tuple})


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A structured CloudEvent 1.0, its fields in the order the outbox has always had them.

    Only ``subject`` has a default (None), so ``omit_defaults`` leaves out just an absent
    subject. ``time`` is a string only for an offset of seconds (:func:`_event_time`).
    """

    specversion: Literal["1.0"]
    id: str
    source: str
    type: str
    time: datetime | str
    subject: str | None = None
    datacontenttype: Literal["application/json"]
    data: Any  # a dict, or an observation's data Struct (_data_layout), written as an object


_ENCODER = msgspec.json.Encoder()


class IdGenerator:
    """Strictly increasing UUIDv7 strings.

    The random bits come from a ``random.Random``: live, one seeded once from the OS (an
    ``os.urandom`` call per id cost more than the rest of the id); the backtest passes one with
    a fixed seed so that the same recording always gives the same ids. The bits keep
    generators apart; they are not a secret, and nothing is derived from them.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        if rng is None:
            rng = random.Random(secrets.randbits(_SEED_BITS))
        self._random_bits = rng.getrandbits
        self._last_ms = -1
        self._counter = 0
        self._prefix = ""  # the id's text up to the version, the same all millisecond long
        self._last_at: datetime | None = None
        self._last_at_ms = 0

    def next_id(self, at: datetime) -> str:
        if at is not self._last_at:  # the messages of one socket read share their time
            self._last_at, self._last_at_ms = at, int(at.timestamp() * 1000)
        millis = self._last_at_ms
        if millis <= self._last_ms:
            millis = self._last_ms
            self._counter += 1
            if self._counter > _COUNTER_MAX:  # 4096 ids in one millisecond: borrow the next
                millis += 1
                self._counter = 0
        else:
            self._counter = 0
        if millis != self._last_ms:
            self._prefix = f"{millis >> 16:08x}-{millis & 0xFFFF:04x}-"
            self._last_ms = millis
        # The last 80 bits at once, as hex: version, counter, variant, then the random bits
        # (one conversion: formatting three numbers took half of minting an id).
        tail = (
            (_VERSION_BITS | self._counter) << _VARIANT_AND_RANDOM_BITS
            | _VARIANT_BITS
            | self._random_bits(_RANDOM_BITS)
        )
        hex_tail = tail.to_bytes(_TAIL_BYTES, "big").hex()
        return f"{self._prefix}{hex_tail[:4]}-{hex_tail[4:8]}-{hex_tail[8:]}"


def store_source(store_id: str, device_id: str | None = None) -> str:
    """The CloudEvents ``source`` of a device of the store, or of the gateway itself."""
    if device_id is None:
        return f"/stores/{store_id}/gateway"
    return f"/stores/{store_id}/devices/{device_id}"


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, the form every event and recording line uses."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventFactory:
    """The outbox rows of one store's events, with ids from one generator.

    The pipeline mints an observation's id once, as it enters the batch; the stages are handed
    this factory to make the rows of what they derive (a rule's action, an emitted event).
    """

    def __init__(self, store_id: str, ids: IdGenerator) -> None:
        self._store_id = store_id
        self._ids = ids

    def mint(self, at: datetime) -> str:
        return self._ids.next_id(at)

    def row(
        self,
        event_type: str,
        time: datetime,
        subject: str | None,
        data: dict[str, Any],
        device_id: str | None = None,
        event_id: str | None = None,
    ) -> EventRow:
        """The row of an event made by a stage (a rule's action, an emitted event)."""
        return self._row(event_type, time, subject, _exact_floats(data), device_id, event_id)

    def observed(self, observation: Observation, event_id: str, at: datetime) -> EventRow:
        """The row of an (already pseudonymised) observation received at ``at``."""
        wire, convertible = _DATA_LAYOUTS[type(observation)]
        values = msgspec.structs.astuple(observation)
        data: Any = None
        for index in convertible:
            value = values[index]
            if type(value) is float and -_PLAIN_FLOAT_LIMIT < value < _PLAIN_FLOAT_LIMIT:
                continue  # the common case, without a call
            if value is not None and _has_long_float(value):
                data = _exact_floats(observation.data_values())
                break
        if data is None:
            data = wire(*values[_ENVELOPE_FIELDS:])
        return self._row(
            observation.cloud_event_type(),
            observation.observed_at or at,
            observation.subject(),
            data,
            observation.device_id,
            event_id,
        )

    def _row(
        self,
        event_type: str,
        time: datetime,
        subject: str | None,
        data: Any,
        device_id: str | None,
        event_id: str | None,
    ) -> EventRow:
        event_id = event_id or self._ids.next_id(time)
        event = CloudEvent(
            specversion="1.0",
            id=event_id,
            source=store_source(self._store_id, device_id),
            type=event_type,
            time=_event_time(time),
            subject=subject,
            datacontenttype="application/json",
            data=data,
        )
        body = _ENCODER.encode(event).decode()
        return tuple.__new__(EventRow, (event_id, event_type, body))  # see Inbound.delivered


def _event_time(at: datetime) -> datetime | str:
    """The time as msgspec writes it, unless its zone's offset has seconds (a device's own
    clock may say ``+00:00:30``): then as pydantic wrote it, the offset cut to its minutes."""
    if at.tzinfo is UTC:  # receive times, and devices' own times in Z
        return at
    offset = at.utcoffset()
    if offset is None or not offset % _MINUTE:
        return at
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{at.replace(tzinfo=None).isoformat()}{sign}{hours:02d}:{minutes:02d}"


def _data_layout(kind: type[Observation]) -> tuple[type[msgspec.Struct], tuple[int, ...]]:
    """A Struct of the kind's data fields that msgspec writes straight from the observation's
    values (each defaults to None, and ``omit_defaults`` leaves the None ones out, as the
    event's data does), and the positions of the values to look into for long floats."""
    names = data_fields(kind)
    assert kind.__struct_fields__[_ENVELOPE_FIELDS:] == names
    wire = msgspec.defstruct(
        f"{kind.__name__}Data", [(name, Any, None) for name in names], omit_defaults=True
    )
    convertible = json_convertible_fields(kind)
    positions = tuple(
        index
        for index, name in enumerate(names, start=_ENVELOPE_FIELDS)
        if name in convertible  # the envelope's time is not data: it is never looked into
    )
    return wire, positions


_DATA_LAYOUTS = KindCache(_data_layout)


def _has_long_float(value: Any) -> bool:
    """Whether a value holds a finite float that msgspec and pydantic write differently."""
    kind = type(value)
    if kind is float:
        return not -_PLAIN_FLOAT_LIMIT < value < _PLAIN_FLOAT_LIMIT and value - value == 0
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return False
    for item in items:  # without a call for each text or integer: most values are those
        item_kind = type(item)
        if item_kind is float:
            if not -_PLAIN_FLOAT_LIMIT < item < _PLAIN_FLOAT_LIMIT and item - item == 0:
                return True
        elif item_kind in _CONTAINERS and _has_long_float(item):
            return True
    return False


def _exact_floats(value: Any) -> Any:
    """The value with each float msgspec would write otherwise as pydantic wrote it."""
    if not _has_long_float(value):
        return value
    if type(value) is float:
        return msgspec.Raw(_ENCODER.encode(value).replace(b"e", b"e+"))
    if type(value) is dict:
        return {key: _exact_floats(item) for key, item in value.items()}
    return [_exact_floats(item) for item in value]
