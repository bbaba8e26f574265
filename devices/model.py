"""The values every decoder speaks: an inbound message in, typed observations out.

A decoder's ``parse(message)`` returns a list of observations, ``None`` when the message is
not of its family ("not mine"), or raises :class:`DecodeError` with a reason ("mine, but
broken"). Nothing else may escape a decoder; the fuzz tests hold every family to that.

Raw MAC addresses appear only in fields whose name ends in ``mac`` (normalised to 12
lowercase hex digits by :func:`normalize_mac`); ``gateway/privacy.py`` replaces exactly
those fields by keyed pseudonyms before anything is stored, logged or forwarded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from lantern.errors import DecodeError

__all__ = [
    "DeviceStatus",
    "Message",
    "Observation",
    "ScanRead",
    "Sighting",
    "Telemetry",
    "normalize_mac",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One inbound message as received, before any decoding.

    ``fields`` holds the named parts of the topic (``{"device": "scanner-1"}`` for
    ``lantern/{store}/scanner/{device}``), filled in by the gateway's topic router.
    """

    topic: str
    payload: bytes
    received_at: datetime
    fields: Mapping[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """The payload as UTF-8 text, or a decode error saying it is not."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"payload is not UTF-8 (byte {exc.start})") from None


class Observation(BaseModel):
    """What one device said, decoded. The gateway turns each into one CloudEvent.

    ``device_id`` is the device that reported it (the scanner, access point or smart
    device); ``observed_at`` is the device's own time when it gave one, otherwise None and
    the receive time is used.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

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
        """The CloudEvent ``data``: JSON-ready, without the envelope fields."""
        return self.model_dump(mode="json", exclude={"device_id", "observed_at"}, exclude_none=True)


class Sighting(Observation):
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


class ScanRead(Observation):
    """A barcode read: the raw ``code``, its symbology and, for GS1 data, GTIN and AIs."""

    event_type: ClassVar[str] = "lantern.scan.read"

    code: str
    symbology: str | None = None
    gtin: str | None = None
    ai: Mapping[str, str] = {}


class DeviceStatus(Observation):
    """A device said it is online or offline (its MQTT last will, or a status topic)."""

    event_type: ClassVar[str] = "lantern.device.online"

    online: bool

    def cloud_event_type(self) -> str:
        return "lantern.device.online" if self.online else "lantern.device.offline"

    def event_data(self) -> dict[str, Any]:
        return {"online": self.online}


class Telemetry(Observation):
    """A device's own health report: battery, temperature, firmware, consumable levels."""

    event_type: ClassVar[str] = "lantern.device.telemetry"

    values: Mapping[str, Any]


_MAC_SEPARATORS = re.compile(r"[:\-.\s]")
_MAC_HEX = re.compile(r"[0-9a-f]{12}")


def normalize_mac(text: str) -> str:
    """A MAC address in any common spelling as 12 lowercase hex digits, or a decode error."""
    mac = _MAC_SEPARATORS.sub("", text).lower()
    if not _MAC_HEX.fullmatch(mac):
        raise DecodeError(f"not a MAC address: {text!r}")
    return mac
