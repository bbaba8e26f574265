"""Theengs Gateway and OpenMQTTGateway: BLE advertisements relayed over MQTT.

Topics: ``home/{gw}/BTtoMQTT/{mac}`` for what the gateway decoded itself (``brand``,
``model_id``, sensor values, or ``uuid`` / ``major`` / ``minor`` for an iBeacon) and
``home/{gw}/BTtoMQTT/undecoded`` for the rest. Either may carry the raw advertisement
(``manufacturerdata`` hex starting with the little-endian company id; ``servicedata`` hex
with its ``servicedatauuid``), which goes through devices/ble.py so a beacon gets the same
identity here as from ESPresense or the local radio.

Raw hex and device names are never copied into ``beacon``: both often embed the address
(Xiaomi and Qingping service data carry it; ATC firmware names carry half of it).

A raw field that cannot be read (not hex, a beacon layout gone wrong) drops the message only
when nothing else in it can be read: when the gateway decoded the device itself (``model_id``
and its values) or another raw field gives a frame, the sighting stands on those and names
the bad field in ``raw_errors`` with the reason (never its content). Theengs Decoder's own
tests feed it service data with placeholder digits (``8816xxxxxxxxxxxx0104f400...``) that
it still decodes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from devices.ble import (
    BeaconFrame,
    IBeaconFrame,
    build_frame,
    find_mac,
    frame_from_advertisement,
    uuid_text,
)
from devices.jsonfields import json_number, json_object, json_str, json_type
from devices.model import Message, Observation, Sighting, normalize_mac
from lantern.errors import DecodeError

__all__ = ["parse"]

_BLE_LEVEL = "BTtoMQTT"
_UNDECODED_LEVEL = "undecoded"
_COMPANY_ID_BYTES = 2
# NimBLE address types as the gateways publish them: public, random, public identity,
# random identity (an address resolved through an IRK).
_MAC_TYPE_RANDOM = {0: False, 1: True, 2: False, 3: True}
_IBEACON_MODEL_ID = "IBEACON"
_IBEACON_TX_POWER_KEYS = ("txpower", "power")  # Theengs Decoder before 1.0 said "power"
_UNDASHED_UUID = re.compile(r"[0-9a-f]{32}", re.IGNORECASE)
# The advertisement's own fields (address, radio, raw data, name) and our format tag: not
# values the device reported.
_REPORTED_ELSEWHERE = frozenset(
    {
        "format",
        "id",
        "mac_type",
        "adv_type",
        "name",
        "rssi",
        "txpower",
        "distance",
        "manufacturerdata",
        "servicedata",
        "servicedatauuid",
    }
)
_SENSOR_FORMAT = "theengs"


def parse(message: Message) -> list[Observation] | None:
    """The sighting of one Theengs / OpenMQTTGateway BLE message; None for other topics."""
    route = _route(message)
    if route is None:
        return None
    gateway, last_level = route
    if not gateway:
        raise DecodeError("topic names no gateway")
    document = json_object(message, "Theengs BLE message")
    rssi = json_number(document, "rssi")
    if rssi is None:
        raise DecodeError("Theengs BLE message has no rssi")
    raw_frame, raw_errors = _raw_frame(document)
    if raw_errors and raw_frame is None and not _decoded_by_gateway(document):
        raise DecodeError(next(iter(raw_errors.values())))
    frame = raw_frame or _decoded_frame(document)
    frame_fields = frame.fields() if frame is not None else None
    return [
        Sighting(
            device_id=gateway,
            scanner=gateway,
            identity=frame.identity() if frame is not None else None,
            mac=_mac(document, last_level),
            mac_random=_mac_random(document),
            rssi=rssi,
            distance_m=json_number(document, "distance"),
            tx_power=frame.measured_power_1m() if frame is not None else None,
            beacon=frame_fields if frame_fields is not None else _sensor_values(document),
            raw_errors=raw_errors or None,
        )
    ]


def _route(message: Message) -> tuple[str, str] | None:
    """(gateway, last topic level), from the router's fields or else the topic."""
    levels = message.topic.split("/")
    if "gw" in message.fields:
        return message.fields["gw"], message.fields.get("id", levels[-1])
    if len(levels) >= 3 and levels[-2] == _BLE_LEVEL:
        return levels[-3], levels[-1]
    return None


def _mac(document: Mapping[str, Any], last_level: str) -> str:
    address = json_str(document, "id") or (last_level if last_level != _UNDECODED_LEVEL else "")
    if not address:
        raise DecodeError("Theengs BLE message has no id (device address)")
    return normalize_mac(address)


def _mac_random(document: Mapping[str, Any]) -> bool | None:
    mac_type = document.get("mac_type")
    if mac_type is None:
        return None
    if isinstance(mac_type, bool) or not isinstance(mac_type, int):
        raise DecodeError(f"mac_type must be an integer, got {json_type(mac_type)}")
    return _MAC_TYPE_RANDOM.get(mac_type)


def _hex_bytes(document: Mapping[str, Any], key: str) -> bytes | None:
    text = json_str(document, key)
    if not text:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        # Not quoted: the reason may be kept with the sighting, and raw data embeds addresses.
        raise DecodeError(f"{key} is not hex") from None


def _raw_frame(document: Mapping[str, Any]) -> tuple[BeaconFrame | None, dict[str, str]]:
    """The beacon frame of the raw fields, and each raw field that could not be read, why.

    As in an advertisement, a frame with an identity wins over one without.
    """
    frames: list[BeaconFrame] = []
    errors: dict[str, str] = {}
    for key, read in (("manufacturerdata", _manufacturer_frame), ("servicedata", _service_frame)):
        try:
            frame = read(document)
        except DecodeError as exc:
            errors[key] = exc.reason
            continue
        if frame is not None:
            frames.append(frame)
    with_identity = next((frame for frame in frames if frame.identity() is not None), None)
    return with_identity or next(iter(frames), None), errors


def _manufacturer_frame(document: Mapping[str, Any]) -> BeaconFrame | None:
    manufacturer = _hex_bytes(document, "manufacturerdata")
    if manufacturer is None:
        return None
    if len(manufacturer) < _COMPANY_ID_BYTES:
        raise DecodeError("manufacturerdata is shorter than its company id")
    company_id = int.from_bytes(manufacturer[:_COMPANY_ID_BYTES], "little")
    return frame_from_advertisement({company_id: manufacturer[_COMPANY_ID_BYTES:]}, {})


def _service_frame(document: Mapping[str, Any]) -> BeaconFrame | None:
    service = _hex_bytes(document, "servicedata")
    if service is None:
        return None
    service_uuid = json_str(document, "servicedatauuid")
    if not service_uuid:
        raise DecodeError("servicedata has no servicedatauuid")
    return frame_from_advertisement({}, {service_uuid: service})


def _decoded_by_gateway(document: Mapping[str, Any]) -> bool:
    """Whether the gateway recognised the device and published its decoded fields."""
    return isinstance(document.get("model_id"), str)


def _decoded_frame(document: Mapping[str, Any]) -> BeaconFrame | None:
    """An iBeacon the gateway decoded itself (its raw data not published)."""
    if document.get("model_id") != _IBEACON_MODEL_ID:
        return None
    uuid = json_str(document, "uuid") or ""
    if _UNDASHED_UUID.fullmatch(uuid):
        uuid = uuid_text(bytes.fromhex(uuid))
    tx_power = next(
        (document[key] for key in _IBEACON_TX_POWER_KEYS if document.get(key) is not None), None
    )
    return build_frame(
        IBeaconFrame,
        uuid=uuid.lower(),
        major=document.get("major"),
        minor=document.get("minor"),
        tx_power_1m=tx_power,
    )


def _sensor_values(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a recognised device reported (``tempc``, ``batt``...), free of addresses."""
    if not _decoded_by_gateway(document):
        return None
    return {
        "format": _SENSOR_FORMAT,
        **{
            key: value
            for key, value in document.items()
            if key not in _REPORTED_ELSEWHERE and not key.lower().endswith("mac") and _plain(value)
        },
    }


def _plain(value: object) -> bool:
    if isinstance(value, str):
        return find_mac(value) is None
    return isinstance(value, int | float)
