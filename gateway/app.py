"""The running gateway: one TaskGroup owns every long-running task.

Tasks (each named): ``mqtt`` (connection and reconnects), ``ingest`` (batch, commit, ack),
``sink:<name>`` per sink, ``outbox-retention``. Stopping (SIGTERM, SIGINT, Ctrl-C in the demo)
drains: the batch being built is committed and acknowledged, our retained status says
``offline``, and only then is everything cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from devices.health import Inventory
from devices.registry import expected_intervals, slot_configs
from devices.reorder import ReorderTracker
from gateway.config import Settings
from gateway.events import IdGenerator
from gateway.ingest import Ingest
from gateway.mqtt import Inbound, MqttClient
from gateway.outbox import Batch, Outbox, TypeFilter
from gateway.pipeline import DedupWindow, Pipeline
from gateway.privacy import Pseudonymizer, load_or_create_secret
from gateway.record import http_mirror_topic
from gateway.router import Router, default_decoders
from gateway.rulesdir import RulesWatcher, read_rules
from gateway.sinks.http import HttpSink
from gateway.sinks.mqtt_actions import MqttActionSink
from gateway.sources.ble import BleSource
from gateway.stages import HealthStage, LocationStage, ReorderStage, location_stage
from gateway.web import WebServer
from rules.model import RuleSet, parse_rules
from rules.presence import PresenceSnapshot

log = logging.getLogger(__name__)

OUTBOX_FILE_NAME = "outbox.sqlite"
_RETENTION_INTERVAL_S = 60.0  # retention is about hours; once a minute keeps deletes small


class Sink(Protocol):
    name: str
    delivered: int
    parked: int
    last_error: str | None

    @property
    def types(self) -> TypeFilter: ...

    async def run(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The gateway's counters at one moment: the demo's status line, the status page."""

    mqtt_connected: bool
    messages_in: int
    events_committed: int
    outbox_depth: int
    forwarded: int
    parked: int
    dead_letters: int
    duplicates: int
    actions_published: int

    def line(self) -> str:
        return (
            f"mqtt {'up' if self.mqtt_connected else 'DOWN'} | in {self.messages_in}"
            f" | committed {self.events_committed} | outbox {self.outbox_depth}"
            f" | forwarded {self.forwarded} | actions {self.actions_published}"
            f" | dead letters {self.dead_letters}"
            f" | duplicates dropped {self.duplicates}"
            + (f" | parked batches {self.parked}" if self.parked else "")
        )


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._outbox: Outbox | None = None
        self._ingest: Ingest | None = None
        self._mqtt: MqttClient | None = None
        self._pipeline: Pipeline | None = None
        self._sinks: list[Sink] = []
        self.inventory = Inventory(expected_intervals(settings.devices))
        self.web: WebServer | None = None
        self._pseudonymizer: Pseudonymizer | None = None
        self.location: LocationStage | None = None
        self.rules_watcher: RulesWatcher | None = None
        self.ready = asyncio.Event()  # set once the outbox is open and tasks are started

    async def wait_connected(self) -> None:
        await self.ready.wait()
        assert self._mqtt is not None
        await self._mqtt.wait_connected()

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("the gateway is not running")
        return self._outbox

    @property
    def status_topic(self) -> str:
        return f"lantern/{self.settings.store_id}/gateway/status"

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and return."""
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._pseudonymizer = pseudonymizer = Pseudonymizer(
            load_or_create_secret(settings.data_dir)
        )
        async with Outbox(settings.data_dir / OUTBOX_FILE_NAME, settings.outbox) as outbox:
            router = Router(settings.sources, settings.store_id, default_decoders())
            dedup = DedupWindow(
                settings.outbox.dedup_window_messages, await outbox.recent_digests()
            )
            self.location = location = await self._location_stage(outbox)
            pipeline = Pipeline(
                settings.store_id,
                router,
                pseudonymizer,
                IdGenerator(),
                settings.mqtt.max_payload_bytes,
                dedup,
                stages=[HealthStage(self.inventory), await self._reorder_stage(outbox), location],
            )
            ingest = Ingest(settings.outbox, pipeline, outbox)
            mqtt = MqttClient(
                settings.mqtt,
                settings.mqtt.client_id or f"lantern-{settings.store_id}",
                self.status_topic,
                router.subscriptions(),
                ingest.receive,
            )
            ingest.attach(mqtt)
            sinks: list[Sink] = (
                [HttpSink(settings.http_sink, outbox)] if settings.http_sink.url else []
            )
            sinks.append(MqttActionSink(outbox, mqtt))
            self._outbox, self._ingest, self._mqtt, self._pipeline = outbox, ingest, mqtt, pipeline
            self._sinks = sinks
            async with contextlib.AsyncExitStack() as resources:
                if settings.web.enabled:
                    self.web = await resources.enter_async_context(WebServer(settings.web, self))
                await self._supervise(ingest, mqtt, outbox, sinks, stop)
        log.info("stopped cleanly")

    def _initial_rules(self) -> RuleSet:
        """The rules folder's set; an invalid one stops start-up (hot reload keeps the old)."""
        directory = self.settings.rules.dir
        if directory is None:
            return parse_rules({})
        rules = read_rules(directory)  # RulesInvalid: the CLI prints each problem
        log.info("rules loaded from %s: %d rules", directory, len(rules))
        return rules

    async def _location_stage(self, outbox: Outbox) -> LocationStage:
        """Zones, presence and rules, with the rules' limits as the last firing left them and
        the visitors as the last clean stop left them."""
        location = location_stage(self.settings, self._initial_rules())
        await _resume(
            outbox,
            LocationStage.STATE_KEY,
            "rule limits",
            lambda saved: location.engine.restore_limits(json.loads(saved)),
        )

        def restore_presence(saved: str) -> None:
            location.presence.restore(PresenceSnapshot.model_validate_json(saved))
            log.info("presence restored: %d visitors", location.presence.visitor_count)

        if await _resume(outbox, LocationStage.PRESENCE_STATE_KEY, "presence", restore_presence):
            # Taken: after a crash (no snapshot at its end) this one would be out of date.
            await outbox.commit(Batch(state={LocationStage.PRESENCE_STATE_KEY: ""}))
        return location

    async def _reorder_stage(self, outbox: Outbox) -> ReorderStage:
        """The reorder debounce, resumed from the state committed with the last report."""
        configs = slot_configs(self.settings.devices)
        tracker = ReorderTracker(configs)

        def restore_tracker(saved: str) -> None:
            nonlocal tracker
            tracker = ReorderTracker.from_dict(configs, json.loads(saved))

        await _resume(outbox, ReorderStage.STATE_KEY, "reorder state", restore_tracker)
        return ReorderStage(tracker)

    async def _supervise(
        self,
        ingest: Ingest,
        mqtt: MqttClient,
        outbox: Outbox,
        sinks: list[Sink],
        stop: asyncio.Event,
    ) -> None:
        settings = self.settings
        async with asyncio.TaskGroup() as tasks:
            ingest_tasks = [
                tasks.create_task(ingest.run(), name="ingest"),
                tasks.create_task(ingest.acknowledge(), name="ingest-ack"),
            ]
            others = [
                tasks.create_task(mqtt.run(), name="mqtt"),
                tasks.create_task(self._retention(outbox, sinks), name="outbox-retention"),
                *(tasks.create_task(sink.run(), name=f"sink:{sink.name}") for sink in sinks),
            ]
            if settings.rules.dir is not None and self.location is not None:
                self.rules_watcher = RulesWatcher(settings.rules.dir, self.location.replace_rules)
                others.append(tasks.create_task(self.rules_watcher.run(), name="rules-watch"))
            if settings.ble.enabled:
                ble = BleSource(settings.ble, settings.store_id, ingest.receive)
                others.append(tasks.create_task(ble.run(), name="local-ble"))
            log.info(
                "lantern running: store %s, broker %s:%s, outbox %s, forwarding to %s%s",
                settings.store_id,
                settings.mqtt.host,
                settings.mqtt.port,
                settings.data_dir / OUTBOX_FILE_NAME,
                settings.http_sink.url or "nowhere (no LANTERN_FORWARD_URL)",
                f", status page {self.web.url}" if self.web else "",
            )
            self.ready.set()
            await stop.wait()
            log.info("stopping: committing and acknowledging the current batch")
            ingest.stop()
            for task in ingest_tasks:
                await task
            if self.location is not None:  # who is where, for the next start
                snapshot = self.location.presence.snapshot().model_dump_json()
                await outbox.commit(Batch(state={LocationStage.PRESENCE_STATE_KEY: snapshot}))
            await mqtt.close()
            for task in others:
                task.cancel()

    async def _retention(self, outbox: Outbox, sinks: list[Sink]) -> None:
        names = [sink.name for sink in sinks]
        while True:
            deleted = await outbox.prune(names, time.time())
            if deleted:
                log.info("retention: deleted %d rows from the outbox", deleted)
            await asyncio.sleep(_RETENTION_INTERVAL_S)

    @property
    def ingest(self) -> Ingest:
        if self._ingest is None:
            raise RuntimeError("the gateway is not running")
        return self._ingest

    @property
    def mqtt_error(self) -> str | None:
        return self._mqtt.last_error if self._mqtt else None

    def sink_states(self) -> list[dict[str, object]]:
        return [
            {
                "name": sink.name,
                "delivered": sink.delivered,
                "parked": sink.parked,
                "last_error": sink.last_error,
            }
            for sink in self._sinks
        ]

    def rules_status(self) -> dict[str, object]:
        location, watcher = self.location, self.rules_watcher
        summary = location.engine.summary() if location is not None else {}
        return {
            "dir": str(self.settings.rules.dir) if self.settings.rules.dir else None,
            "count": len(location.engine.rules) if location is not None else 0,
            "reloads": watcher.reloads if watcher is not None else 0,
            "reload_error": watcher.error if watcher is not None else [],
            "summary": [{"rule": rule, **outcomes} for rule, outcomes in sorted(summary.items())],
            "occupancy": location.presence.occupancy() if location is not None else {},
        }

    async def mirror_for_recording(self, inbound: Inbound) -> None:
        """Republish a message that came over HTTP where ``lantern record`` hears it, its
        addresses replaced as a recording keeps them (best effort: QoS 0, once committed)."""
        if self._mqtt is None or self._pseudonymizer is None:
            return
        text = self._pseudonymizer.scrub_mac_shaped(
            inbound.payload.decode("utf-8"), inbound.received_at
        )
        mirror = http_mirror_topic(self.settings.store_id, inbound.topic)
        await self._mqtt.publish(mirror, text, qos=0)

    def dead_letters_by_kind(self) -> dict[str, int]:
        return dict(self._pipeline.dead_letters_by_kind) if self._pipeline else {}

    async def snapshot(self) -> Snapshot:
        outbox, ingest, pipeline = self._outbox, self._ingest, self._pipeline
        if outbox is None or ingest is None or pipeline is None or self._mqtt is None:
            return Snapshot(False, 0, 0, 0, 0, 0, 0, 0, 0)
        depth = 0
        for sink in self._sinks:
            depth = max(depth, await outbox.pending_count(sink.name, sink.types))
        return Snapshot(
            mqtt_connected=self._mqtt.connected,
            messages_in=ingest.received,
            events_committed=outbox.events_committed,
            outbox_depth=depth,
            forwarded=sum(
                sink.delivered for sink in self._sinks if not isinstance(sink, MqttActionSink)
            ),
            parked=sum(sink.parked for sink in self._sinks),
            dead_letters=sum(pipeline.dead_letters_by_kind.values()),
            duplicates=pipeline.duplicates,
            actions_published=sum(
                sink.delivered for sink in self._sinks if isinstance(sink, MqttActionSink)
            ),
        )


async def _resume(outbox: Outbox, key: str, what: str, restore: Callable[[str], None]) -> bool:
    """Hand the state saved under ``key`` to ``restore``; whether there was any. State that
    does not read (a ValueError, as JSON and validation errors are) is logged and left: the
    stage starts afresh rather than not at all."""
    saved = await outbox.load_state(key)
    if not saved:
        return False
    try:
        restore(saved)
    except ValueError as exc:
        log.error("%s in the outbox is unreadable, starting afresh: %s", what, exc)
    return True
