"""The local action sink: rules' ``publish`` actions from the outbox to the store's broker.

Actions are committed with the messages that caused them (so a crash neither loses nor
invents one) and published here after commit, in order, at the rule's QoS (1 by default);
the cursor moves once the broker has acknowledged each publish. A crash between a publish and
the cursor's move repeats that publish: at least once, as QoS 1 promises.

While the store's broker is down an action waits for it, until its expiry (the rule's
``ttl``, 5 minutes by default, as ``expires_at`` in the action's data): an offer for a shopper
who has left is worthless, so an expired action is dropped and counted, never published late.
An action already handed to the broker connection when it drops is resent with the session
(QoS 1), which is not late in that sense: the broker had it in time or nearly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.config import ActionSinkSettings
from gateway.events import ACTION_PUBLISH_TYPE
from gateway.mqtt import MqttClient, NotConnectedError
from gateway.outbox import Outbox, PendingRow, TypeFilter
from gateway.sinks.base import Sink
from lantern.errors import RejectedBatchError, RetryableSinkError

log = logging.getLogger(__name__)

# On loopback a PUBACK takes milliseconds; this long without one, the publish is tried again
# (the broker may then see it twice: QoS 1 is at least once).
_PUBACK_TIMEOUT_S = 30.0
_BROKER_DOWN = "the store's broker is not connected"


@dataclass(frozen=True, slots=True)
class _Publish:
    rule: str
    topic: str
    text: str
    qos: int
    retain: bool
    expires_at: float | None  # epoch seconds; None for an action committed before expiries

    @classmethod
    def from_body(cls, body: str) -> _Publish:
        data: dict[str, Any] = json.loads(body)["data"]
        payload = data["payload"]
        expires = data.get("expires_at")
        return cls(
            rule=str(data.get("rule", "")),
            topic=str(data["topic"]),
            text=payload if isinstance(payload, str) else json.dumps(payload),
            qos=int(data.get("qos", 1)),
            retain=bool(data.get("retain", False)),
            expires_at=None if expires is None else datetime.fromisoformat(expires).timestamp(),
        )

    def seconds_left(self, now: float) -> float | None:
        return None if self.expires_at is None else self.expires_at - now


class MqttActionSink(Sink):
    name = "mqtt-actions"
    local = True  # delivers inside the store (rule actions), not to the central record
    label = "action sink"
    target = "the store's broker"

    def __init__(
        self, outbox: Outbox, mqtt: MqttClient, settings: ActionSinkSettings | None = None
    ) -> None:
        super().__init__(
            settings or ActionSinkSettings(), outbox, TypeFilter(include=(ACTION_PUBLISH_TYPE,))
        )
        self._mqtt = mqtt

    async def deliver(self, rows: Sequence[PendingRow]) -> None:
        expired: Counter[str] = Counter()
        try:
            for index, row in enumerate(rows):
                try:
                    action = _Publish.from_body(row.body)
                except (ValueError, KeyError, TypeError) as exc:
                    raise RejectedBatchError(
                        f"not a publish action: {type(exc).__name__}: {exc}",
                        confirmed=index,
                        refused=1,
                    ) from exc
                if not await self._broker_in_time(action, len(rows) - index):
                    expired[action.rule] += 1
                    continue
                try:
                    async with asyncio.timeout(_PUBACK_TIMEOUT_S):
                        await self._mqtt.publish(
                            action.topic, action.text, action.qos, action.retain
                        )
                except (NotConnectedError, TimeoutError) as exc:  # lost meanwhile, or no PUBACK
                    raise RetryableSinkError(
                        f"publish to {action.topic}: {exc or 'no PUBACK'}", confirmed=index
                    ) from exc
        finally:
            if expired:
                self.dropped += sum(expired.values())
                log.warning(
                    "%s: dropped %d actions past their expiry, unpublished (by rule: %s)",
                    self.label,
                    sum(expired.values()),
                    ", ".join(f"{rule} {count}" for rule, count in sorted(expired.items())),
                )

    async def _broker_in_time(self, action: _Publish, waiting: int) -> bool:
        """Wait for the broker while the action is fresh; whether it still is."""
        left = action.seconds_left(time.time())
        if left is not None and left <= 0:
            return False
        if self._mqtt.connected:
            return True
        if self.last_error != _BROKER_DOWN:  # once an outage, not once an action
            self.last_error = _BROKER_DOWN
            log.warning(
                "%s: %s; %d actions wait for it, each until its expiry",
                self.label,
                _BROKER_DOWN,
                waiting,
            )
        try:
            async with asyncio.timeout(left):
                await self._mqtt.wait_connected()
        except TimeoutError:
            return False
        log.info("%s: the store's broker is back", self.label)
        return True
