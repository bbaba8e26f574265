"""ESPresense: ESP32 room scanners publishing what they hear over MQTT.

Topics: ``espresense/devices/{id}/{room}`` (a sighting), ``espresense/rooms/{room}/status``
(``online`` / ``offline``, the scanner's last will) and ``espresense/rooms/{room}/telemetry``
(every 15 s or so: ``uptime``, ``ver``, ``freeHeap``, the Wi-Fi ``rssi``, a battery's ``mV``
and ``batt`` when one is wired, and counters), whose health values reach the room's scanner
in the inventory under the inventory's names (``uptime_s``, ``firmware``...).

ESPresense has already fingerprinted the advertiser into an ``id``: a beacon id (iBeacon,
AltBeacon, Eddystone UID), a resolved IRK, or a weaker fingerprint (``name:``, ``apple:``,
``md:``, an alias...). Many ids embed the address itself (a bare MAC, ``known:<mac>``,
``tile:<mac>``, ``flora:<mac>``...): those give no identity, only ``mac``, because a raw MAC
may appear nowhere but in a ``*mac`` field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from devices.ble import (
    AltBeaconFrame,
    BeaconFrame,
    EddystoneUidFrame,
    IBeaconFrame,
    build_frame,
    find_mac,
    measured_power,
)
from devices.health import health_values
from devices.jsonfields import json_number, json_object, json_str, json_struct
from devices.model import (
    DeviceStatus,
    Message,
    Observation,
    Sighting,
    Telemetry,
    normalize_mac,
)
from lantern.errors import DecodeError

__all__ = ["parse"]

_DEVICES_LEVEL = "devices"
_ROOMS_LEVEL = "rooms"
_STATUS_LEVEL = "status"
_TELEMETRY_LEVEL = "telemetry"
_STATES = {"online": True, "offline": False}
# The inventory's health names (devices/health.py) and what ESPresense calls them in its
# telemetry (src/main.cpp sendTelemetry; battery from src/Battery.cpp, when one is wired).
_TELEMETRY_HEALTH_NAMES = {
    "uptime_s": "uptime",
    "firmware": "ver",
    "free_heap_bytes": "freeHeap",
    "wifi_rssi_dbm": "rssi",
    "battery_mv": "mV",
    "battery_pct": "batt",
}

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# iBeacon and AltBeacon ids share one shape: <uuid>-<major or id2>-<minor or id3>, decimal.
_UUID_MAJOR_MINOR = re.compile(rf"({_UUID})-(\d{{1,5}})-(\d{{1,5}})", re.IGNORECASE)
# Every ESPresense release prints the namespace's fifth byte twice (``%02x`` of
# ``serviceData[6]`` repeated), giving 11 namespace bytes; a fixed firmware would give 10.
_EDDY = re.compile(r"([0-9a-f]{20}|[0-9a-f]{22})-([0-9a-f]{12})", re.IGNORECASE)
_EDDY_DOUBLED_BYTE = slice(8, 10)
_EDDY_DOUBLE = slice(10, 12)
_IRK = re.compile(r"[0-9a-f]{32}", re.IGNORECASE)


def parse(message: Message) -> list[Observation] | None:
    """Observations of one ESPresense message; None for a topic that is not ESPresense's."""
    fields = message.fields
    topic_id, room = fields.get("id"), fields.get("room")
    if topic_id is not None and room is not None:
        return [_sighting(message, topic_id, room)]
    levels = message.topic.split("/")
    if len(levels) < 3:
        return None
    if levels[-3] == _DEVICES_LEVEL:
        return [_sighting(message, levels[-2], levels[-1])]
    if levels[-3] == _ROOMS_LEVEL:
        room = message.fields.get("room") or levels[-2]
        if levels[-1] == _STATUS_LEVEL:
            return [_status(message, _room(room))]
        if levels[-1] == _TELEMETRY_LEVEL:
            return [_telemetry(message, _room(room))]
    return None


def _room(room: str) -> str:
    if not room:
        raise DecodeError("topic names no room")
    return room


def _telemetry(message: Message, room: str) -> Telemetry:
    """The scanner's report, its health values under the inventory's names, the rest as sent."""
    document = json_object(message, "ESPresense telemetry")
    health = health_values(document, _TELEMETRY_HEALTH_NAMES)
    own_names = set(_TELEMETRY_HEALTH_NAMES.values())
    rest = {key: value for key, value in document.items() if key not in own_names}
    return Telemetry(device_id=room, values=rest | health)


def _status(message: Message, room: str) -> DeviceStatus:
    text = message.text().strip()
    online = _STATES.get(text.lower())
    if online is None:
        raise DecodeError(f"ESPresense status must be online or offline, got {text[:40]!r}")
    return DeviceStatus(device_id=room, online=online)


class _SightingFields(msgspec.Struct):
    """The fields of an ESPresense sighting the gateway reads, decoded in one typed pass."""

    id: str | None = None
    rssi: float | None = None
    distance: float | None = None
    mac: str | None = None
    rssi_1m: float | None = msgspec.field(default=None, name="rssi@1m")


_SIGHTING_FIELDS = msgspec.json.Decoder(_SightingFields)


def _sighting(message: Message, topic_id: str, room: str) -> Sighting:
    """The sighting, its fields read in one typed pass when each has its type (nearly always),
    else one by one (:func:`_read_one_by_one`), which names the first that has not."""
    fields = json_struct(message, _SIGHTING_FIELDS)
    if fields is None or not (
        _finite(fields.rssi) and _finite(fields.distance) and _finite(fields.rssi_1m)
    ):
        fields = _read_one_by_one(json_object(message, "ESPresense sighting"))
    return _sighting_of(fields, topic_id, room)


def _sighting_of(fields: _SightingFields, topic_id: str, room: str) -> Sighting:
    """The sighting the fields make, or a decode error for the first thing they lack."""
    rssi = fields.rssi
    if rssi is None:
        raise DecodeError("ESPresense sighting has no rssi")
    espresense_id = fields.id or topic_id
    if not espresense_id:
        raise DecodeError("ESPresense sighting has no id")
    identity, id_mac, beacon = _identify(espresense_id)
    rssi_1m = fields.rssi_1m  # scanners send 12.0 or 12 alike: a power is a whole dBm
    return Sighting(
        device_id=_room(room),
        scanner=room,
        identity=identity,
        mac=normalize_mac(fields.mac) if fields.mac else id_mac,
        rssi=rssi,
        distance_m=fields.distance,
        tx_power=measured_power(None if rssi_1m is None else round(rssi_1m)),
        beacon=beacon,
    )


def _finite(number: float | None) -> bool:
    return number is None or number - number == 0  # NaN and the infinities are not


def _read_one_by_one(document: Mapping[str, Any]) -> _SightingFields:
    """The fields of a payload that the typed pass refused, each read by the reader that
    raises a decode error naming its key, in the order of the fields."""
    return _SightingFields(
        rssi=json_number(document, "rssi"),
        id=json_str(document, "id"),
        mac=json_str(document, "mac"),
        distance=json_number(document, "distance"),
        rssi_1m=json_number(document, "rssi@1m"),
    )


# A scanner reports each device it hears every second or so, under the same id: an id is
# read once while it keeps coming (a few hundred bytes each; a big store has about 2,000
# devices in range, and a day's 10,000 distinct beacons still fit). The beacon's fields are
# shared by its sightings, read-only (``Sighting.beacon`` is a Mapping).
_IDS_CACHED = 16_384


@functools.lru_cache(maxsize=_IDS_CACHED)
def _identify(espresense_id: str) -> tuple[str | None, str | None, Mapping[str, Any] | None]:
    """(identity, mac, beacon fields) of an ESPresense id."""
    kind, _, rest = espresense_id.partition(":")
    if kind == "irk":
        if not _IRK.fullmatch(rest):
            raise DecodeError(f"ESPresense irk id is not 32 hex digits: {rest[:40]!r}")
        return f"irk:{rest.lower()}", None, None
    frame = _beacon(kind, rest)
    if frame is None:
        return _fingerprint(espresense_id)
    return frame.identity(), None, frame.fields()


def _beacon(kind: str, rest: str) -> BeaconFrame | None:
    if kind == "iBeacon":
        return build_frame(
            IBeaconFrame, **_uuid_major_minor(rest, kind, ("uuid", "major", "minor"))
        )
    if kind == "altBeacon":
        return build_frame(AltBeaconFrame, **_uuid_major_minor(rest, kind, ("id1", "id2", "id3")))
    if kind == "eddy":
        return _eddystone(rest)
    return None


def _uuid_major_minor(rest: str, kind: str, names: tuple[str, str, str]) -> dict[str, Any]:
    match = _UUID_MAJOR_MINOR.fullmatch(rest)
    if match is None:
        raise DecodeError(f"ESPresense {kind} id is not <uuid>-<n>-<n>: {rest[:60]!r}")
    uuid, first, second = match.groups()
    return dict(zip(names, (uuid.lower(), int(first), int(second)), strict=True))


def _eddystone(rest: str) -> EddystoneUidFrame:
    match = _EDDY.fullmatch(rest)
    if match is None:
        raise DecodeError(f"ESPresense eddy id is not <namespace>-<instance>: {rest[:60]!r}")
    namespace, instance = (group.lower() for group in match.groups())
    if len(namespace) > 20:
        if namespace[_EDDY_DOUBLED_BYTE] != namespace[_EDDY_DOUBLE]:
            raise DecodeError(f"ESPresense eddy namespace is 11 bytes: {namespace!r}")
        namespace = namespace[: _EDDY_DOUBLE.start] + namespace[_EDDY_DOUBLE.stop :]
    return build_frame(EddystoneUidFrame, namespace=namespace, instance=instance)


def _fingerprint(espresense_id: str) -> tuple[str | None, str | None, None]:
    """A non-beacon id: an address (bare, ``known:``, ``tile:``...) or an opaque name."""
    address = find_mac(espresense_id)
    if address is not None:
        return None, address, None
    return f"espresense:{espresense_id}", None, None
