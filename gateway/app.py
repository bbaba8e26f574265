"""The running gateway: one TaskGroup owns every long-running task.

Tasks (each named): ``ingest`` (batch), ``ingest-ack`` (commit, then acknowledge, in order),
``ingest-tick`` (the time-driven stages' clock), and the supervised parts (gateway/supervisor.py:
a failure is logged, shown and restarted, never the end of the process): ``mqtt`` (connection
and reconnects), ``sink:<name>`` per sink, ``outbox-retention``, ``web`` (the console),
``rules-watch`` and ``local-ble`` when configured. Only the committer's outbox failure ends
the gateway.

Stopping (SIGTERM, SIGINT, Ctrl-C in the demo) drains: the batch being built is committed and
acknowledged, the stages' state for the next start is committed, our retained status says
``offline``, and only then is everything cancelled and awaited.

The message's path is wired in ``gateway/build.py``; the status page reads the running parts
through ``gateway/status.py``. Only the CLI imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import systemd
from gateway.batch import Batch, Inbound
from gateway.build import build
from gateway.clock import Clock, SystemClock
from gateway.config import Settings
from gateway.events import IdGenerator
from gateway.ingest import Ingest
from gateway.mqtt import MqttClient, NotConnectedError
from gateway.outbox import Outbox
from gateway.pipeline import DedupWindow, Pipeline, Stage
from gateway.privacy import Pseudonymizer, load_or_create_secret
from gateway.record import http_mirror_topic
from gateway.rulesdir import RulesWatcher, read_rules, store_catalog
from gateway.sinks import Sink, build_sinks
from gateway.status import StatusView
from gateway.supervisor import Supervisor
from lantern.errors import StartupError
from rules.model import RuleSet

if TYPE_CHECKING:
    from gateway.web import WebServer

__all__ = ["OUTBOX_FILE_NAME", "Gateway"]

log = logging.getLogger(__name__)

OUTBOX_FILE_NAME = "outbox.sqlite"
LOCK_FILE_NAME = "lantern.lock"  # held while a gateway runs on the data folder
_RETENTION_INTERVAL_S = 60.0  # retention is about hours; once a minute keeps deletes small
_STATUS_INTERVAL_S = 5.0  # systemctl status is read by a person: every 5 s is fresh enough


class Gateway:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.ready = asyncio.Event()  # set once the outbox is open and every task started
        self.status: StatusView | None = None
        self.web: WebServer | None = None
        self._ingest: Ingest | None = None
        self._mqtt: MqttClient | None = None

    @property
    def ingest(self) -> Ingest:
        if self._ingest is None:
            raise RuntimeError("the gateway is not running")
        return self._ingest

    @property
    def status_topic(self) -> str:
        return f"lantern/{self.settings.store_id}/gateway/status"

    async def wait_connected(self) -> None:
        await self.ready.wait()
        assert self._mqtt is not None
        await self._mqtt.wait_connected()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and return."""
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with _held(settings.data_dir / LOCK_FILE_NAME):
            await self._run(stop)
        log.info("stopped cleanly")

    async def _run(self, stop: asyncio.Event) -> None:
        settings, clock = self.settings, self.clock
        pseudonymizer = Pseudonymizer(load_or_create_secret(settings.data_dir))
        async with Outbox(settings.data_dir / OUTBOX_FILE_NAME, settings.outbox) as outbox:
            dedup = DedupWindow(
                settings.outbox.dedup_window_messages, await outbox.recent_digests()
            )
            wiring = build(settings, self._initial_rules(), pseudonymizer, IdGenerator(), dedup)
            await _restore(outbox, wiring.pipeline.stages)
            mqtt = MqttClient(
                settings.mqtt,
                settings.mqtt.client_id or f"lantern-{settings.store_id}",
                self.status_topic,
                wiring.router.subscriptions(),
                lambda inbound: ingest.receive(inbound),
                clock,
            )
            ingest = Ingest(settings.outbox, wiring.pipeline, outbox, clock, mqtt.ack)
            sinks = build_sinks(settings, outbox, mqtt)
            outbox.register_sinks([(sink.name, sink.types) for sink in sinks])
            supervisor = Supervisor(clock)
            watcher = (
                RulesWatcher(
                    settings.rules.dir, wiring.rules.replace_rules, clock, store_catalog(settings)
                )
                if settings.rules.dir is not None
                else None
            )
            self._ingest, self._mqtt = ingest, mqtt
            self.status = StatusView(
                settings, clock, mqtt, ingest, outbox, wiring, sinks, watcher, supervisor
            )

            async def accept_post(inbound: Inbound) -> None:
                """An HTTP post, answered once committed, then mirrored for ``lantern record``
                (best effort: QoS 0, addresses replaced as a recording keeps them)."""
                await ingest.submit(inbound)
                text = pseudonymizer.scrub_mac_shaped(
                    inbound.payload.decode("utf-8"), inbound.received_at
                )
                with contextlib.suppress(NotConnectedError):
                    await mqtt.publish(
                        http_mirror_topic(settings.store_id, inbound.topic), text, qos=0
                    )

            async with contextlib.AsyncExitStack() as resources:
                if settings.web.enabled:
                    # Imported only when served: the console's stack is some 25 MiB.
                    from gateway.web import WebServer

                    self.web = await resources.enter_async_context(
                        WebServer(settings.web, self.status, accept_post, clock)
                    )
                await self._supervise(
                    supervisor, ingest, mqtt, outbox, wiring.pipeline, sinks, watcher, stop
                )

    def _initial_rules(self) -> RuleSet:
        """The rules folder's set; an invalid one stops start-up (hot reload keeps the old)."""
        directory = self.settings.rules.dir
        if directory is None:
            return RuleSet()
        rules = read_rules(directory, store_catalog(self.settings))  # RulesInvalid: CLI prints
        log.info("rules loaded from %s: %d rules", directory, len(rules))
        return rules

    async def _supervise(
        self,
        supervisor: Supervisor,
        ingest: Ingest,
        mqtt: MqttClient,
        outbox: Outbox,
        pipeline: Pipeline,
        sinks: Sequence[Sink],
        watcher: RulesWatcher | None,
        stop: asyncio.Event,
    ) -> None:
        settings = self.settings
        async with asyncio.TaskGroup() as tasks:
            # First, so that a stuck loop is caught during start-up too (systemd's watchdog).
            watchdog = tasks.create_task(
                systemd.watchdog_loop(_STATUS_INTERVAL_S, self._status_line),
                name="systemd-watchdog",
            )
            ingest_tasks = [
                tasks.create_task(ingest.run(), name="ingest"),
                tasks.create_task(ingest.acknowledge(), name="ingest-ack"),
            ]
            parts: dict[str, Callable[[], Awaitable[None]]] = {
                "mqtt": mqtt.run,
                "outbox-retention": partial(self._retention, outbox, sinks),
                **{f"sink:{sink.name}": sink.run for sink in sinks},
            }
            if watcher is not None:
                parts["rules-watch"] = watcher.run
            if self.web is not None:
                parts["web"] = self.web.run
            if settings.ble.enabled:
                # Imported only when the box's own radio is used: bleak is some 11 MiB.
                from gateway.sources.ble import BleSource

                parts["local-ble"] = BleSource(
                    settings.ble, settings.store_id, ingest.receive, self.clock
                ).run
            others = [
                watchdog,
                tasks.create_task(ingest.ticker(), name="ingest-tick"),
                *(
                    tasks.create_task(supervisor.keep(name, run), name=name)
                    for name, run in parts.items()
                ),
            ]
            log.info(
                "lantern running: store %s, broker %s:%s, outbox %s, forwarding to %s%s",
                settings.store_id,
                settings.mqtt.host,
                settings.mqtt.port,
                settings.data_dir / OUTBOX_FILE_NAME,
                ", ".join(sink.target for sink in sinks if not sink.local)
                or "nowhere (no sink configured)",
                f", status page {self.web.url}" if self.web else "",
            )
            self.ready.set()
            others.append(tasks.create_task(_notify_ready(mqtt), name="systemd-ready"))
            await stop.wait()
            systemd.stopping()
            log.info("stopping: committing and acknowledging the current batch")
            ingest.stop()
            for task in ingest_tasks:
                await task
            await outbox.commit(pipeline.closing_state())  # who is where, for the next start
            await mqtt.close()
            for task in others:
                task.cancel()

    async def _status_line(self) -> str:
        """systemd's STATUS=, what ``systemctl status lantern`` shows."""
        return (await self.status.snapshot()).line() if self.status else "starting"

    async def _retention(self, outbox: Outbox, sinks: Sequence[Sink]) -> None:
        names = [sink.name for sink in sinks]
        while True:
            deleted = await outbox.prune(names, self.clock.now().timestamp())
            if deleted:
                log.info("retention: deleted %d rows from the outbox", deleted)
            await asyncio.sleep(_RETENTION_INTERVAL_S)


async def _notify_ready(mqtt: MqttClient) -> None:
    """READY=1 once the outbox is open (it is by now) and the broker connected."""
    await mqtt.wait_connected()
    systemd.ready()


@contextlib.contextmanager
def _held(lock_file: Path) -> Iterator[None]:
    """The data folder, for this process alone: two gateways on one outbox would both claim
    the broker session and both write the outbox."""
    with lock_file.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise StartupError(
                f"data_dir: {lock_file.parent} is in use by another lantern run (pid {holder});"
                " stop it, or give this one its own data_dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def _restore(outbox: Outbox, stages: Sequence[Stage]) -> None:
    """Hand each stage the state it saved; clear what is used up. State that does not read (a
    ValueError, as JSON and validation errors are) is logged and left: the stage starts afresh
    rather than not at all."""
    used_up: dict[str, str] = {}
    for stage in stages:
        key = stage.state_key
        saved = await outbox.load_state(key) if key is not None else None
        if key is None or not saved:
            continue
        try:
            if stage.restore(saved):
                used_up[key] = ""
        except ValueError as exc:
            log.error("the %s state in the outbox is unreadable, starting afresh: %s", key, exc)
    if used_up:
        await outbox.commit(Batch(state=used_up))
