"""The local action sink: rules' ``publish`` actions from the outbox to the store's broker.

Actions are committed with the messages that caused them (so a crash neither loses nor
invents one) and published here after commit, in order, at the rule's QoS (1 by default);
the cursor moves once the broker has acknowledged each publish. A crash between a publish and
the cursor's move repeats that publish: at least once, as QoS 1 promises.
"""

from __future__ import annotations

import json
import logging

from gateway.events import ACTION_PUBLISH_TYPE
from gateway.mqtt import MqttClient
from gateway.outbox import Outbox, TypeFilter

log = logging.getLogger(__name__)

_IDLE_POLL_S = 1.0
_PAGE_EVENTS = 100


class MqttActionSink:
    name = "mqtt-actions"
    local = True
    types = TypeFilter(include=(ACTION_PUBLISH_TYPE,))

    def __init__(self, outbox: Outbox, mqtt: MqttClient) -> None:
        self._outbox = outbox
        self._mqtt = mqtt
        self.delivered = 0
        self.parked = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        while True:
            page = await self._outbox.read_pending(self.name, self.types, _PAGE_EVENTS)
            for _, body in page.rows:
                action = json.loads(body)["data"]
                payload = action["payload"]
                text = payload if isinstance(payload, str) else json.dumps(payload)
                await self._mqtt.publish(
                    action["topic"],
                    text,
                    qos=action.get("qos", 1),
                    retain=action.get("retain", False),
                )
                self.delivered += 1
            await self._outbox.advance(self.name, page.upto)
            if not page.rows:
                await self._outbox.wait_for_commit(_IDLE_POLL_S)
