"""CloudEvents 1.0 (structured JSON) and the ids that make them time-ordered and unique.

An id is a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter that keeps
ids from one generator strictly increasing within a millisecond, then 62 random bits that keep
two gateways (or a gateway before and after a restart) from colliding. ``(source, id)`` is the
receiver's dedup key.
"""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from devices.model import Observation
from gateway.batch import EventRow

__all__ = [
    "ACTION_PUBLISH_TYPE",
    "BATCH_CONTENT_TYPE",
    "SIGHTING_TYPE",
    "CloudEvent",
    "EventFactory",
    "IdGenerator",
    "format_time",
    "store_source",
]

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
SIGHTING_TYPE = "lantern.presence.sighted"
# A rule's local publish, kept in the outbox like any event so that it survives a crash; the
# MQTT action sink publishes it, and no sink to the central record takes it.
ACTION_PUBLISH_TYPE = "lantern.action.publish"

_COUNTER_MAX = 0xFFF  # the 12 rand_a bits of UUIDv7 serve as the in-millisecond counter
_RANDOM_BITS = 62


class CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]


class IdGenerator:
    """Strictly increasing UUIDv7 strings.

    Live, the random bits come from the OS; the backtest passes a seeded ``random.Random``
    so that the same recording always gives the same ids.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random_bits = rng.getrandbits if rng is not None else secrets.randbits
        self._last_ms = -1
        self._counter = 0

    def next_id(self, at: datetime) -> str:
        millis = int(at.timestamp() * 1000)
        if millis <= self._last_ms:
            millis = self._last_ms
            self._counter += 1
            if self._counter > _COUNTER_MAX:  # 4096 ids in one millisecond: borrow the next
                millis += 1
                self._counter = 0
        else:
            self._counter = 0
        self._last_ms = millis
        value = (
            (millis << 80)
            | (0x7 << 76)
            | (self._counter << 64)
            | (0b10 << 62)
            | self._random_bits(_RANDOM_BITS)
        )
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def store_source(store_id: str, device_id: str | None = None) -> str:
    """The CloudEvents ``source`` of a device of the store, or of the gateway itself."""
    if device_id is None:
        return f"/stores/{store_id}/gateway"
    return f"/stores/{store_id}/devices/{device_id}"


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, the form every event and recording line uses."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventFactory:
    """The outbox rows of one store's events, with ids from one generator.

    The pipeline mints an observation's id once, as it enters the batch; the stages are handed
    this factory to make the rows of what they derive (a rule's action, an emitted event).
    """

    def __init__(self, store_id: str, ids: IdGenerator) -> None:
        self._store_id = store_id
        self._ids = ids

    def mint(self, at: datetime) -> str:
        return self._ids.next_id(at)

    def row(
        self,
        event_type: str,
        time: datetime,
        subject: str | None,
        data: dict[str, Any],
        device_id: str | None = None,
        event_id: str | None = None,
    ) -> EventRow:
        event = CloudEvent(
            id=event_id or self._ids.next_id(time),
            source=store_source(self._store_id, device_id),
            type=event_type,
            time=time,
            subject=subject,
            data=data,
        )
        return EventRow(event.id, event_type, event.model_dump_json(exclude_none=True))

    def observed(self, observation: Observation, event_id: str, at: datetime) -> EventRow:
        """The row of an (already pseudonymised) observation received at ``at``."""
        return self.row(
            observation.cloud_event_type(),
            observation.observed_at or at,
            observation.subject(),
            observation.event_data(),
            observation.device_id,
            event_id,
        )
