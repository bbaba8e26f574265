"""The device registry in ``store.yaml``: what the gateway knows of each device beforehand.

```yaml
devices:
  - id: coffee-1                 # the {device} topic level
    expected_interval_s: 900     # silent longer than this: flagged offline (null: never)
    slots:                       # consumables to reorder (devices/reorder.py)
      - {slot: pods, gtin: "07612100055557", threshold: 10, rearm_level: 40}
```

A slot's ``device_id`` is its device's ``id``; the registry fills it in, so a slot is written
once, under its device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.health import DEFAULT_EXPECTED_INTERVAL_S
from devices.reorder import SlotConfig

__all__ = ["DeviceSpec", "expected_intervals", "slot_configs"]


class DeviceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1)
    expected_interval_s: float | None = Field(default=DEFAULT_EXPECTED_INTERVAL_S, gt=0)
    slots: tuple[SlotConfig, ...] = ()

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
