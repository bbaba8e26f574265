"""The device registry in ``store.yaml``: what the gateway knows of each device beforehand.

```yaml
devices:
  - id: coffee-1                 # the {device} topic level
    expected_interval_s: 900     # silent longer than this: flagged offline (null: never)
    slots:                       # consumables to reorder (devices/reorder.py)
      - {slot: pods, gtin: "07612100055557", threshold: 10, rearm_level: 40}
  - id: shelf-tag-12             # a store-owned beacon, named by its identity
    beacon: "eddystone:12345678901234678901-000000000001"
```

A device's ``id`` is the name its topics carry, never its address: gateway/privacy.py turns an
address in a topic level into a daily pseudonym, which no registry entry could name. A slot's
``device_id`` is its device's ``id``; the registry fills it in, so a slot is written
once, under its device. A ``beacon`` is a beacon identity as devices/model.py spells them
(``ibeacon:<uuid>-<major>-<minor>``, ``altbeacon:<id1>-<id2>-<id3>``,
``eddystone:<namespace>-<instance>``): the inventory keeps that beacon's battery (Eddystone
TLM) and silence under the device's ``id`` instead of under a visitor identity or a daily
pseudonym. Each beacon is named by one device at most.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.ble import find_mac
from devices.reorder import SlotConfig

__all__ = [
    "DEFAULT_EXPECTED_INTERVAL_S",
    "DeviceSpec",
    "beacon_names",
    "expected_intervals",
    "slot_configs",
]

# How long a device may stay silent before it is flagged, unless the registry says otherwise.
# An ESPresense room reports every few seconds and a scanner's telemetry every 30 s; a till
# scanner may idle for hours, so the registry gives those their own (or None: never flagged).
DEFAULT_EXPECTED_INTERVAL_S = 300.0

_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UINT16 = "[0-9]{1,5}"
# The identities a beacon keeps for ever (devices/ble.py); an Eddystone-EID rotates, a
# phone's address pseudonym changes daily: neither can be named beforehand.
_BEACON_IDENTITY = re.compile(
    rf"(?:ibeacon:{_UUID}|altbeacon:{_UUID})-{_UINT16}-{_UINT16}"
    r"|eddystone:[0-9a-f]{20}-[0-9a-f]{12}"
)


class DeviceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1)
    expected_interval_s: float | None = Field(default=DEFAULT_EXPECTED_INTERVAL_S, gt=0)
    slots: tuple[SlotConfig, ...] = ()
    beacon: str | None = None

    @field_validator("id")
    @classmethod
    def _not_an_address(cls, device_id: str) -> str:
        if find_mac(device_id) is not None:
            raise ValueError(
                "is a MAC address, which becomes a daily pseudonym on every topic level:"
                " give the device a name in its topic (lantern/{store}/scanner/till-3)"
            )
        return device_id

    @field_validator("beacon")
    @classmethod
    def _beacon_identity(cls, beacon: str | None) -> str | None:
        if beacon is None:
            return None
        identity = beacon.strip().lower()
        if not _BEACON_IDENTITY.fullmatch(identity):
            raise ValueError(
                "must be a beacon identity: ibeacon:<uuid>-<major>-<minor>,"
                " altbeacon:<id1>-<id2>-<id3> or eddystone:<namespace>-<instance>"
            )
        return identity

    @model_validator(mode="before")
    @classmethod
    def _slots_belong_to_device(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("slots"), list | tuple):
            return data
        device_id = data.get("id")
        slots = [
            {"device_id": device_id, **slot} if isinstance(slot, dict) else slot
            for slot in data["slots"]
        ]
        return {**data, "slots": slots}

    @model_validator(mode="after")
    def _unique_slots(self) -> DeviceSpec:
        names = [slot.slot for slot in self.slots]
        if len(names) != len(set(names)):
            raise ValueError(f"device {self.id}: a slot is listed twice")
        if any(slot.device_id != self.id for slot in self.slots):
            raise ValueError(f"device {self.id}: a slot names another device_id")
        return self


def slot_configs(devices: Iterable[DeviceSpec]) -> list[SlotConfig]:
    return [slot for device in devices for slot in device.slots]


def expected_intervals(devices: Iterable[DeviceSpec]) -> dict[str, float | None]:
    return {device.id: device.expected_interval_s for device in devices}


def beacon_names(devices: Iterable[DeviceSpec]) -> dict[str, str]:
    """Beacon identity -> the id of the device that names it; ValueError for one named twice."""
    names: dict[str, str] = {}
    for device in devices:
        if device.beacon is None:
            continue
        if device.beacon in names:
            raise ValueError(
                f"beacon {device.beacon} is named by two devices: {names[device.beacon]}"
                f" and {device.id}"
            )
        names[device.beacon] = device.id
    return names
