"""Wi-Fi presence on ``lantern/{store}/wifi/{source}``: one ``WifiSighting`` per client.

Two payloads:

- a Meraki Scanning API v3 post (``version`` "3.0", ``type`` ``WiFi``, or ``BLE`` /
  ``Bluetooth`` for the APs' Bluetooth radios), as the controller POSTs it to the gateway's
  webhook (which checks the shared secret with :func:`validate_secret` and drops it) or as
  anything else publishes it. Each observation becomes a sighting: the client's address,
  the nearest AP's RSSI, the client's latest position on the floor plan (``x``, ``y`` in
  metres; Meraki sends them as strings, as it does ``nearestApRssi``) and the latest record's
  time. A Bluetooth client's beacon frame is decoded from its ``bleBeacons`` raw data.
- a generic access point observation ``{"ap": ..., "mac": ..., "rssi": ..., "time": ...}``.

The scanner (what the presence engine maps to zones) is the nearest AP's name, else its
dashboard tags as Meraki spells them (space-separated), else the source: never an address.
The AP's address goes in ``ap_mac``, which the gateway pseudonymises like ``mac``; so does
an AP name or source topic level that carries an address. ``mac_random`` is the locally
administered bit of a Wi-Fi address (set by the randomised addresses phones use while
scanning); a Bluetooth address's kind is not in Meraki's data, so it is None there.
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from devices.ble import BeaconFrame, find_mac, parse_advertisement
from devices.jsonfields import (
    json_nested_object,
    json_number,
    json_object,
    json_object_list,
    json_str,
    json_time,
)
from devices.model import Message, Observation, Sighting, normalize_mac
from lantern.errors import DecodeError

__all__ = ["WifiSighting", "parse", "validate_secret"]

_MERAKI_VERSIONS = frozenset({"3.0", "3"})  # v2 posts are per AP, not per client: not read
_MERAKI_TECHNOLOGIES: Mapping[str, Literal["ble", "wifi"]] = {
    "WiFi": "wifi",
    "BLE": "ble",
    "Bluetooth": "ble",  # what v3 controllers send in practice for their Bluetooth radios
}
_LOCALLY_ADMINISTERED_BIT = 0x02  # of the first octet: an address no vendor assigned
_TAG_SEPARATOR = " "  # Meraki's tags are one space-separated string, split into the array
_UNNAMED_SOURCE = "wifi"  # the source of a message whose topic names it only by address
# Cisco's spelling of an address, which find_mac does not look for. A Cisco AP's default name
# is "AP" and its address so spelt (``AP0c85.25c2.7f4e``): it must not become the scanner.
_DOTTED_MAC = re.compile(r"(?<![0-9a-f])(?:[0-9a-f]{4}\.){2}[0-9a-f]{4}(?![0-9a-f])", re.IGNORECASE)
_NO_TIME = datetime.min.replace(tzinfo=UTC)  # sorts a location without time before all others


class WifiSighting(Sighting, frozen=True, kw_only=True):
    """A client heard by an access point: a ``Sighting`` plus the AP's address and floor."""

    technology: Literal["ble", "wifi"] = "wifi"
    ap_mac: str | None = None
    floor_plan: str | None = None


def validate_secret(payload: Mapping[str, Any], secret: str) -> bool:
    """Whether a Meraki post carries the shared secret (compared in constant time).

    An empty configured secret accepts nothing.
    """
    given = payload.get("secret")
    if not secret or not isinstance(given, str):
        return False
    # JSON's "\ud800" escapes decode to lone surrogates, which strict UTF-8 refuses to encode:
    # a forged secret must be a mismatch, not an exception (the webhook would answer 500).
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
    )


def parse(message: Message) -> list[Observation] | None:
    """The sightings of one Wi-Fi message, or a decode error saying what is wrong."""
    document = json_object(message, "Wi-Fi message")
    source, source_mac = _named(message.fields.get("source") or message.topic.rsplit("/")[-1])
    device_id = source or _UNNAMED_SOURCE
    if "version" in document or "data" in document:
        return _meraki(document, device_id)
    if "mac" in document:
        return [_ap_observation(document, device_id, source_mac)]
    raise DecodeError(
        "neither a Meraki Scanning API post (version, type, data) nor an AP observation (mac)"
    )


def _named(name: str) -> tuple[str | None, str | None]:
    """(name, None) for a plain name; (None, its address) for one that carries an address."""
    mac = find_mac(name)
    if mac is None and (dotted := _DOTTED_MAC.search(name)) is not None:
        mac = normalize_mac(dotted.group())
    return (None, mac) if mac is not None else (name or None, None)


# --- the generic AP observation --------------------------------------------------------------


def _ap_observation(
    document: Mapping[str, Any], device_id: str, source_mac: str | None
) -> WifiSighting:
    client = json_str(document, "mac")
    if not client:
        raise DecodeError("AP observation has no mac")
    ap_name, ap_mac = _named(json_str(document, "ap") or "")
    mac = normalize_mac(client)
    return WifiSighting(
        device_id=ap_name or device_id,
        observed_at=json_time(document, "time"),
        scanner=ap_name or device_id,
        mac=mac,
        mac_random=_locally_administered(mac),
        rssi=_number(document, "rssi"),
        ap_mac=ap_mac or source_mac,
    )


# --- Meraki Scanning API v3 ------------------------------------------------------------------


class _Location(NamedTuple):
    time: datetime | None
    position: tuple[float, float] | None
    tags: str | None
    floor_plan: str | None


def _meraki(document: Mapping[str, Any], device_id: str) -> list[Observation]:
    version = document.get("version")
    if str(version) not in _MERAKI_VERSIONS:
        raise DecodeError(f"Meraki Scanning API version {str(version)[:10]!r} is not 3.0")
    kind = json_str(document, "type") or ""
    technology = _MERAKI_TECHNOLOGIES.get(kind)
    if technology is None:
        raise DecodeError(f"Meraki post type {kind[:20]!r} is not WiFi, BLE or Bluetooth")
    data = json_nested_object(document, "data")
    ap_names = _reporting_ap_names(data)
    return [
        _meraki_sighting(observation, technology, device_id, ap_names)
        for observation in json_object_list(data, "observations")
    ]


def _meraki_sighting(
    observation: Mapping[str, Any],
    technology: Literal["ble", "wifi"],
    device_id: str,
    ap_names: Mapping[str, str],
) -> WifiSighting:
    client = json_str(observation, "clientMac")
    if not client:
        raise DecodeError("Meraki observation has no clientMac")
    mac = normalize_mac(client)
    latest = json_nested_object(observation, "latestRecord")
    nearest_ap = json_str(latest, "nearestApMac")
    ap_mac = normalize_mac(nearest_ap) if nearest_ap else None
    location = _latest_location(json_object_list(observation, "locations"))
    frame = _ble_frame(observation) if technology == "ble" else None
    frame_fields = frame.fields() if frame is not None else None
    scanner = (ap_names.get(ap_mac) if ap_mac else None) or _named(location.tags or "")[0]
    return WifiSighting(
        device_id=device_id,
        observed_at=json_time(latest, "time") or location.time,
        scanner=scanner or device_id,
        identity=frame.identity() if frame is not None else None,
        mac=mac,
        mac_random=_locally_administered(mac) if technology == "wifi" else None,
        rssi=_number(latest, "nearestApRssi"),
        tx_power=frame.measured_power_1m() if frame is not None else None,
        position=location.position,
        beacon=frame_fields,
        technology=technology,
        ap_mac=ap_mac,
        floor_plan=location.floor_plan,
    )


def _reporting_ap_names(data: Mapping[str, Any]) -> dict[str, str]:
    """AP address -> its name, else its tags, for the APs a Bluetooth post lists."""
    names: dict[str, str] = {}
    for ap in json_object_list(data, "reportingAps"):
        address = json_str(ap, "mac")
        name = _named(json_str(ap, "name") or "")[0] or _named(_tags(ap, "tags") or "")[0]
        if address and name:
            names[normalize_mac(address)] = name
    return names


def _latest_location(locations: Sequence[Mapping[str, Any]]) -> _Location:
    """The most recent of a client's location estimates (Meraki sends a short history)."""
    parsed = [
        _Location(
            time=json_time(location, "time"),
            position=_position(location),
            tags=_tags(location, "nearestApTags"),
            floor_plan=json_str(location, "floorPlanName") or None,
        )
        for location in locations
    ]
    if not parsed:
        return _Location(None, None, None, None)
    return max(enumerate(parsed), key=lambda pair: (pair[1].time or _NO_TIME, pair[0]))[1]


def _position(location: Mapping[str, Any]) -> tuple[float, float] | None:
    x, y = _number(location, "x"), _number(location, "y")
    return (x, y) if x is not None and y is not None else None


def _tags(document: Mapping[str, Any], key: str) -> str | None:
    tags = document.get(key)
    if tags is None:
        return None
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise DecodeError(f"{key} must be a list of strings")
    return _TAG_SEPARATOR.join(tag for tag in tags if tag) or None


def _ble_frame(observation: Mapping[str, Any]) -> BeaconFrame | None:
    """The beacon frame in a Bluetooth client's raw advertisement data, if any."""
    fallback: BeaconFrame | None = None
    for beacon in json_object_list(observation, "bleBeacons"):
        raw = json_str(beacon, "rawData")
        if not raw:
            continue
        try:
            advertisement = bytes.fromhex(raw)
        except ValueError:
            raise DecodeError(f"bleBeacons rawData is not hex: {raw[:40]!r}") from None
        frame = parse_advertisement(advertisement).frame
        if frame is not None and frame.identity() is not None:
            return frame
        fallback = fallback or frame
    return fallback


# --- JSON --------------------------------------------------------------------------------------


def _number(document: Mapping[str, Any], key: str) -> float | None:
    """``document[key]`` as a finite float; Meraki v3 sends some numbers as strings."""
    value = document.get(key)
    if not isinstance(value, str):
        return json_number(document, key)
    try:
        number = float(value)
    except ValueError:
        raise DecodeError(f"{key} must be a number, got {value[:20]!r}") from None
    if not math.isfinite(number):
        raise DecodeError(f"{key} is out of range: {value[:20]!r}")
    return number


def _locally_administered(mac: str) -> bool:
    return bool(int(mac[:2], 16) & _LOCALLY_ADMINISTERED_BIT)
