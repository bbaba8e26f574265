"""The device inventory: last seen, battery, firmware, and who has gone silent.

Pure: the gateway feeds it every observation with its receive time and calls :meth:`tick`
with the time; it answers with the status observations to turn into events. A device is
offline when its last will (or status topic) says so, or when it has been silent longer than
its expected interval; either way ``lantern.device.offline`` is emitted once per outage, and
``lantern.device.online`` when it is heard again.

Health values go by one vocabulary whatever the device (:data:`HEALTH_KEYS`); decoders map
their device's own names onto it (devices/espresense.py) and read it with
:func:`health_values`.

A beacon the registry names (``beacon:`` of a device, devices/registry.py) is a device like
any other: its sightings keep it online under that name, its Eddystone TLM battery and
temperature become that device's health, and its silence is flagged. A TLM frame carries no
identity, only the sender's address (as a daily pseudonym by now): the inventory ties the
pseudonym to the beacon when a frame carrying the beacon's identity arrives from the same
address, as beacons that interleave UID and TLM frames send them. An unnamed beacon's health
is kept under its identity or pseudonym, and it is never flagged (beacons come and go with
shoppers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from devices.jsonfields import json_number, json_str
from devices.model import DeviceStatus, Observation, Sighting, Telemetry
from devices.registry import (
    DEFAULT_EXPECTED_INTERVAL_S,
    DeviceSpec,
    beacon_names,
    expected_intervals,
)

__all__ = ["HEALTH_KEYS", "LAST_WILL", "SILENT", "DeviceRecord", "Inventory", "health_values"]

# Numbers, but the firmware version (text).
HEALTH_KEYS = (
    "battery_mv",
    "battery_pct",
    "temperature_c",
    "firmware",
    "uptime_s",
    "free_heap_bytes",
    "wifi_rssi_dbm",
)
_HEALTH_TEXT_KEYS = frozenset({"firmware"})
_HEALTH_KEY_SET = frozenset(HEALTH_KEYS)


def health_values(
    document: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The health values in a device's report, each checked for its type (a decode error).

    ``names`` gives the device's own name of a health key where it differs.
    """
    values: dict[str, Any] = {}
    for key in HEALTH_KEYS:
        source = (names or {}).get(key, key)
        read = json_str if key in _HEALTH_TEXT_KEYS else json_number
        if read(document, source) is not None:
            values[key] = document[source]
    return values


LAST_WILL = "last will"  # an offline device's reason: it (or the broker for it) said so
SILENT = "silent"  # ... or it sent nothing for longer than its expected interval


class DeviceRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    device_id: str
    last_seen: datetime
    online: bool = True
    offline_reason: str | None = None  # LAST_WILL or SILENT while offline
    expected_interval_s: float | None = None  # silent longer: offline (None: never)
    health: Mapping[str, Any] = {}


@dataclass(slots=True)
class _DeviceState:
    """Mutable on purpose: it changes on every message, and a frozen copy each time costs
    more than the decode."""

    last_seen: datetime
    online: bool
    health: dict[str, Any]
    offline_reason: str | None = None


class Inventory:
    def __init__(
        self,
        expected_interval_s: Mapping[str, float | None] | None = None,
        default_interval_s: float | None = DEFAULT_EXPECTED_INTERVAL_S,
        beacons: Mapping[str, str] | None = None,
    ) -> None:
        """``beacons`` maps a beacon identity to the device id it is known by."""
        self._expected = dict(expected_interval_s or {})
        self._default = default_interval_s
        self._devices: dict[str, _DeviceState] = {}
        self._beacons = dict(beacons or {})
        # The address pseudonym each named beacon was last seen with, both ways round: one
        # entry per named beacon, so memory is bounded by the registry.
        self._beacon_of_address: dict[str, str] = {}
        self._address_of_beacon: dict[str, str] = {}

    @classmethod
    def from_registry(
        cls,
        devices: Iterable[DeviceSpec],
        default_interval_s: float | None = DEFAULT_EXPECTED_INTERVAL_S,
    ) -> Inventory:
        """The inventory of the registry's devices: their intervals and the beacons they name."""
        specs = tuple(devices)
        return cls(expected_intervals(specs), default_interval_s, beacon_names(specs))

    def devices(self) -> list[DeviceRecord]:
        return [
            DeviceRecord(
                device_id=device_id,
                last_seen=state.last_seen,
                online=state.online,
                offline_reason=state.offline_reason,
                expected_interval_s=self._expected.get(device_id, self._default),
                health=dict(state.health),
            )
            for device_id, state in sorted(self._devices.items())
        ]

    def observe(self, observations: Iterable[Observation], at: datetime) -> list[Observation]:
        """Update from a batch; returns the observations to keep, plus status changes.

        A device's own offline status is kept only if it was online: the broker's last will
        after we already flagged the silence must not make a second offline event.
        """
        kept: list[Observation] = []
        for observation in observations:
            news = self.observe_one(observation, at)
            if news is not None:
                kept.extend(news)
                kept.append(observation)
        return kept

    def observe_one(self, observation: Observation, at: datetime) -> list[Observation] | None:
        """Update from one observation: the status changes it causes besides itself, in the
        order :meth:`observe` keeps them, or None when it is a device's status that is no
        news (and is not kept)."""
        if isinstance(observation, DeviceStatus):
            return [] if self._set_online(observation.device_id, observation.online, at) else None
        health: Mapping[str, Any] | None = None
        if isinstance(observation, Sighting):
            news = self._beacon(observation, at)
        else:
            news = []
            if isinstance(observation, Telemetry):
                health = _health_of(observation)
        if self._set_online(observation.device_id, True, at, health):
            news.append(DeviceStatus(device_id=observation.device_id, online=True))
        return news

    def tick(self, now: datetime) -> list[Observation]:
        """Flag every device silent for longer than its expected interval, once."""
        flagged: list[Observation] = []
        for device_id, state in self._devices.items():
            interval = self._expected.get(device_id, self._default)
            silent = interval is not None and now - state.last_seen > timedelta(seconds=interval)
            if state.online and silent:
                state.online = False
                state.offline_reason = SILENT
                flagged.append(DeviceStatus(device_id=device_id, online=False))
        return flagged

    def _beacon(self, sighting: Sighting, at: datetime) -> list[Observation]:
        """What a sighting says of the beacon seen (not of the scanner that saw it)."""
        # Most sightings name no registered beacon and carry no health: said without a call.
        health = _health_of(sighting) if sighting.beacon else {}
        name = self._named_beacon(sighting) if self._beacons else None
        if name is not None:
            back = self._set_online(name, True, at, health=health)
            return [DeviceStatus(device_id=name, online=True)] if back else []
        if health:
            beacon = sighting.subject() or sighting.device_id
            self._expected.setdefault(beacon, None)
            self._set_online(beacon, True, at, health=health)
        return []

    def _named_beacon(self, sighting: Sighting) -> str | None:
        """The registry's name of the beacon seen, learning its address on the way."""
        name = self._beacons.get(sighting.identity or "")
        if name is not None and sighting.mac is not None:
            previous = self._address_of_beacon.get(name)
            if previous != sighting.mac:
                self._beacon_of_address.pop(previous or "", None)
                self._address_of_beacon[name] = sighting.mac
                self._beacon_of_address[sighting.mac] = name
        if name is None and sighting.identity is None and sighting.mac is not None:
            name = self._beacon_of_address.get(sighting.mac)
        return name

    def _set_online(
        self, device_id: str, online: bool, at: datetime, health: Mapping[str, Any] | None = None
    ) -> bool:
        """Record the device's state; True when it changed (a first sighting is no change)."""
        state = self._devices.get(device_id)
        reason = None if online else LAST_WILL
        if state is None:
            self._devices[device_id] = _DeviceState(at, online, dict(health or {}), reason)
            return not online
        changed = state.online != online
        if changed:
            state.offline_reason = reason
        state.online = online
        if at > state.last_seen:
            state.last_seen = at
        if health:
            state.health.update(health)
        return changed


def _health_of(observation: Observation) -> dict[str, Any]:
    if isinstance(observation, Telemetry):
        return {key: observation.values[key] for key in HEALTH_KEYS if key in observation.values}
    beacon = observation.beacon if isinstance(observation, Sighting) else None
    # Most beacons (iBeacon, Eddystone UID) carry no health: one set operation says so.
    if beacon and not _HEALTH_KEY_SET.isdisjoint(beacon):
        return {key: beacon[key] for key in HEALTH_KEYS if key in beacon}
    return {}
