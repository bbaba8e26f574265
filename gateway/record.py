"""``lantern record``: live traffic to a file in the recording format (docs/architecture.md).

One JSON object a line: ``{"t": receive time, "topic", "qos", "payload"}`` (``payload_b64``
for bytes that are not UTF-8). The rule backtest replays such a file. MAC addresses in topics
and text payloads are replaced by MAC-shaped pseudonyms: the file keeps no raw address, yet
decodes exactly as live traffic did (the same address always gets the same stand-in that day).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import TextIO

from gateway.batch import Inbound
from gateway.clock import SystemClock
from gateway.config import Settings
from gateway.events import format_time
from gateway.mqtt import MqttClient
from gateway.privacy import Pseudonymizer, load_or_create_secret
from gateway.router import Router, default_decoders
from lantern.errors import BrokerUnreachable

__all__ = ["Recorder", "http_mirror_topic", "record", "recording_line"]

log = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 5.0
_CONNECT_TIMEOUT_S = 5.0  # a broker on the store's own box answers in milliseconds


def http_mirror_topic(store_id: str, topic: str) -> str:
    """Where the gateway republishes what it received over HTTP (a Meraki post, as ingested
    on ``topic``) for a recorder to see: outside every source's topics, so never ingested."""
    return f"lantern/{store_id}/gateway/http/{topic}"


def _unmirrored(store_id: str, topic: str) -> str:
    """The topic the gateway ingested a mirrored message on; any other topic as it is."""
    return topic.removeprefix(http_mirror_topic(store_id, ""))


def recording_line(inbound: Inbound, pseudonymizer: Pseudonymizer) -> str:
    at = inbound.received_at
    line: dict[str, object] = {
        "t": format_time(at),
        "topic": pseudonymizer.scrub_mac_shaped(inbound.topic, at),
        "qos": inbound.qos,
    }
    try:
        line["payload"] = pseudonymizer.scrub_mac_shaped(inbound.payload.decode("utf-8"), at)
    except UnicodeDecodeError:
        line["payload_b64"] = base64.b64encode(inbound.payload).decode("ascii")
    return json.dumps(line, ensure_ascii=False)


class Recorder:
    def __init__(self, out: TextIO, pseudonymizer: Pseudonymizer, store_id: str) -> None:
        self._out = out
        self._store_id = store_id
        self._pseudonymizer = pseudonymizer
        self._mqtt: MqttClient | None = None
        self.lines = 0

    def attach(self, mqtt: MqttClient) -> None:
        self._mqtt = mqtt

    def receive(self, inbound: Inbound) -> None:
        inbound = inbound._replace(topic=_unmirrored(self._store_id, inbound.topic))
        self._out.write(recording_line(inbound, self._pseudonymizer) + "\n")
        self.lines += 1
        if self._mqtt is not None:
            self._mqtt.ack(inbound)  # the recorder's own session: written is enough


async def record(
    settings: Settings,
    out_path: Path,
    stop: asyncio.Event,
    connect_timeout_s: float = _CONNECT_TIMEOUT_S,
) -> int:
    """Record until ``stop``; returns the number of lines written. BrokerUnreachable when the
    broker does not accept the connection in time: a recording of nothing is no recording."""
    router = Router(settings.sources, settings.store_id, default_decoders())
    pseudonymizer = Pseudonymizer(load_or_create_secret(settings.data_dir))
    with out_path.open("a", encoding="utf-8", buffering=1) as out:
        recorder = Recorder(out, pseudonymizer, settings.store_id)
        recorder_settings = settings.mqtt.model_copy(update={"session_expiry_s": 60})
        mqtt = MqttClient(
            recorder_settings,
            f"lantern-recorder-{settings.store_id}",
            f"lantern/{settings.store_id}/recorder/status",
            [*router.subscriptions(), (http_mirror_topic(settings.store_id, "#"), 0)],
            recorder.receive,
            SystemClock(),
        )
        recorder.attach(mqtt)
        async with asyncio.TaskGroup() as tasks:
            connection = tasks.create_task(mqtt.run(), name="mqtt")
            try:
                async with asyncio.timeout(connect_timeout_s):
                    await mqtt.wait_connected()
            except TimeoutError:
                reached = False
            else:
                reached = True
                progress = tasks.create_task(_progress(recorder, out_path), name="progress")
                await stop.wait()
                await mqtt.close()
                progress.cancel()
            connection.cancel()
    if not reached:
        raise BrokerUnreachable(
            f"mqtt.url: cannot reach the broker at {settings.mqtt.host}:{settings.mqtt.port}"
            f" ({mqtt.last_error or 'no answer'})"
        )
    return recorder.lines


async def _progress(recorder: Recorder, out_path: Path) -> None:
    while True:
        await asyncio.sleep(_PROGRESS_INTERVAL_S)
        log.info("recorded %d messages to %s", recorder.lines, out_path)
