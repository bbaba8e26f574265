"""The device inventory: last seen, battery, firmware, and who has gone silent.

Pure: the gateway feeds it every observation with its receive time and calls :meth:`tick`
with the time; it answers with the status observations to turn into events. A device is
offline when its last will (or status topic) says so, or when it has been silent longer than
its expected interval; either way ``lantern.device.offline`` is emitted once per outage, and
``lantern.device.online`` when it is heard again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from devices.model import DeviceStatus, Observation, Sighting, Telemetry

# How long a device may stay silent before it is flagged, unless the registry says otherwise.
# An ESPresense room reports every few seconds and a scanner's telemetry every 30 s; a till
# scanner may idle for hours, so the registry gives those their own (or None: never flagged).
DEFAULT_EXPECTED_INTERVAL_S = 300.0
_HEALTH_KEYS = ("battery_mv", "battery_pct", "temperature_c", "firmware", "uptime_s")
# ESPresense's telemetry names its health its own way (espresense.com, "MQTT topics").
_ESPRESENSE_HEALTH_KEYS = {
    "ver": "firmware",
    "uptime": "uptime_s",
    "rssi": "wifi_rssi_dbm",
    "freeHeap": "free_heap_bytes",
}
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
    ) -> None:
        self._expected = dict(expected_interval_s or {})
        self._default = default_interval_s
        self._devices: dict[str, _DeviceState] = {}

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
            if isinstance(observation, DeviceStatus):
                if self._set_online(observation.device_id, observation.online, at):
                    kept.append(observation)
                continue
            if isinstance(observation, Sighting) and (beacon_health := _health_of(observation)):
                # A TLM beacon reports its own health; beacons come and go with shoppers, so
                # they are never flagged for silence.
                beacon = observation.subject() or observation.device_id
                self._expected.setdefault(beacon, None)
                self._set_online(beacon, True, at, health=beacon_health)
            health = _health_of(observation) if isinstance(observation, Telemetry) else None
            if self._set_online(observation.device_id, True, at, health=health):
                kept.append(DeviceStatus(device_id=observation.device_id, online=True))
            kept.append(observation)
        return kept

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
        state.last_seen = max(at, state.last_seen)
        if health:
            state.health.update(health)
        return changed


def _health_of(observation: Observation) -> dict[str, Any]:
    if isinstance(observation, Telemetry):
        values = observation.values
        health = {key: values[key] for key in _HEALTH_KEYS if key in values}
        health.update(
            {
                ours: values[theirs]
                for theirs, ours in _ESPRESENSE_HEALTH_KEYS.items()
                if theirs in values
            }
        )
        return health
    if isinstance(observation, Sighting) and observation.beacon:
        return {key: observation.beacon[key] for key in _HEALTH_KEYS if key in observation.beacon}
    return {}
