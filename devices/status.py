"""Any device's last will or status topic: ``online`` / ``offline`` (also as JSON)."""

from __future__ import annotations

import json

from devices.model import DeviceStatus, Message, Observation
from lantern.errors import DecodeError

__all__ = ["parse"]

_STATES = {"online": True, "offline": False, "connected": True, "disconnected": False}


def parse(message: Message) -> list[Observation] | None:
    text = message.text().strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DecodeError(f"status is not valid JSON: {exc.msg} at {exc.pos}") from None
        state = document.get("status") if isinstance(document, dict) else None
        text = state if isinstance(state, str) else ""
    online = _STATES.get(text.lower())
    if online is None:
        raise DecodeError(f"status must be online or offline, got {text[:40]!r}")
    device_id = message.fields.get("device") or message.topic.rstrip("/").split("/")[-2]
    return [DeviceStatus(device_id=device_id, online=online)]
