"""Any device's last will or status topic, ``lantern/{store}/device/{device}/status``.

The payload is ``online`` / ``offline`` (also ``connected`` / ``disconnected``), or JSON
``{"status": "online", ...}`` that may carry the device's health under the inventory's names
(devices/health.py): ``battery_pct``, ``battery_mv``, ``uptime_s``, ``firmware``,
``free_heap_bytes``, ``wifi_rssi_dbm``... Lantern's firmware stubs (firmware_stubs/micropython/)
publish that form, retained, as their birth message and periodic report, and plain
``offline`` as their last will. The health, and any other value of the report (``queued``,
``capacity``...), becomes a ``Telemetry`` observation beside the status.
"""

from __future__ import annotations

from devices.health import health_values
from devices.jsonfields import json_object, json_str
from devices.model import DeviceStatus, Message, Observation, Telemetry
from lantern.errors import DecodeError

__all__ = ["parse"]

_STATES = {"online": True, "offline": False, "connected": True, "disconnected": False}
_STATUS_KEY = "status"


def parse(message: Message) -> list[Observation] | None:
    device_id = message.fields.get("device") or message.topic.rstrip("/").split("/")[-2]
    text = message.text().strip()
    if not text.startswith("{"):
        return [DeviceStatus(device_id=device_id, online=_online(text))]
    document = json_object(message, "status JSON")
    state = json_str(document, _STATUS_KEY) or ""
    status = DeviceStatus(device_id=device_id, online=_online(state))
    report = {key: value for key, value in document.items() if key != _STATUS_KEY}
    if not report:
        return [status]
    values = report | health_values(report)  # each health value checked for its type
    return [status, Telemetry(device_id=device_id, values=values)]


def _online(state: str) -> bool:
    online = _STATES.get(state.lower())
    if online is None:
        raise DecodeError(f"status must be online or offline, got {state[:40]!r}")
    return online
