"""What a running gateway shows of itself: the read-model behind the status page, its API and
the demo's status line.

The web server reads the gateway only through :class:`StatusView`, which holds the running
parts and answers plain values; it changes nothing. Nothing here knows the outbox's SQL: the
outbox answers its own questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from devices.health import DeviceRecord
from gateway.build import Wiring
from gateway.clock import Clock
from gateway.config import Settings
from gateway.ingest import Ingest
from gateway.mqtt import MqttClient
from gateway.outbox import Outbox, Pressure, TypeFilter
from gateway.supervisor import PartState, Supervisor
from rules.engine import Trace

if TYPE_CHECKING:
    from gateway.rulesdir import RulesWatcher

__all__ = ["Sink", "Snapshot", "StatusView"]

_RECENT_DEAD_LETTERS = 20
_RECENT_TRACES = 20  # on the page: enough to see why the last few visitors got what they got


class Sink(Protocol):
    """What the gateway runs and shows of a sink."""

    name: str
    delivered: int
    parked: int
    last_error: str | None
    local: bool  # delivers inside the store (rule actions), not to the central record

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


class StatusView:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        mqtt: MqttClient,
        ingest: Ingest,
        outbox: Outbox,
        wiring: Wiring,
        sinks: Sequence[Sink],
        rules_watcher: RulesWatcher | None,
        supervisor: Supervisor,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._mqtt = mqtt
        self._ingest = ingest
        self._outbox = outbox
        self._wiring = wiring
        self._sinks = tuple(sinks)
        self._rules_watcher = rules_watcher
        self._supervisor = supervisor

    @property
    def events_committed(self) -> int:
        return self._outbox.events_committed

    async def snapshot(self) -> Snapshot:
        pipeline = self._wiring.pipeline
        depth = 0
        for sink in self._sinks:
            depth = max(depth, await self._outbox.pending_count(sink.name, sink.types))
        return Snapshot(
            mqtt_connected=self._mqtt.connected,
            messages_in=self._ingest.received,
            events_committed=self._outbox.events_committed,
            outbox_depth=depth,
            forwarded=sum(sink.delivered for sink in self._sinks if not sink.local),
            parked=sum(sink.parked for sink in self._sinks),
            dead_letters=sum(pipeline.dead_letters_by_kind.values()),
            duplicates=pipeline.duplicates,
            actions_published=sum(sink.delivered for sink in self._sinks if sink.local),
        )

    def mqtt(self) -> dict[str, Any]:
        mqtt = self.settings.mqtt
        return {
            "broker": f"{mqtt.host}:{mqtt.port}",
            "connected": self._mqtt.connected,
            "last_error": self._mqtt.last_error,
        }

    def parts(self) -> list[PartState]:
        """Every supervised part: running, restarting after a failure (which), or ended."""
        return list(self._supervisor.parts.values())

    async def outbox(self) -> dict[str, Any]:
        """How full the outbox is, what it dropped for room, and why nothing commits (while
        that lasts: a full disk or budget; ingest then acknowledges nothing)."""
        pressure: Pressure = await self._outbox.pressure()
        return {
            "used_bytes": pressure.used_bytes,
            "max_bytes": pressure.max_bytes,
            "dropped": pressure.dropped,
            "waiting_for_room": self._ingest.waiting_for_room,
            "dropped_while_waiting": self._ingest.dropped,
        }

    def sinks(self) -> list[dict[str, Any]]:
        return [
            {
                "name": sink.name,
                "delivered": sink.delivered,
                "parked": sink.parked,
                "last_error": sink.last_error,
            }
            for sink in self._sinks
        ]

    def dead_letters_by_kind(self) -> dict[str, int]:
        return dict(self._wiring.pipeline.dead_letters_by_kind)

    async def recent_dead_letters(self, limit: int = _RECENT_DEAD_LETTERS) -> list[dict[str, Any]]:
        return await self._outbox.recent_dead_letters(limit)

    def devices(self) -> list[DeviceRecord]:
        return self._wiring.health.inventory.devices()

    def occupancy(self) -> dict[str, int]:
        return self._wiring.presence.presence.occupancy()

    def rules(self) -> dict[str, Any]:
        engine, watcher = self._wiring.rules.engine, self._rules_watcher
        directory = self.settings.rules.dir
        return {
            "dir": str(directory) if directory else None,
            "count": len(engine.rules),
            "reloads": watcher.reloads if watcher is not None else 0,
            "reload_error": watcher.error if watcher is not None else [],
            "summary": [
                {"rule": rule, **outcomes} for rule, outcomes in sorted(engine.summary().items())
            ],
            "occupancy": self.occupancy(),
        }

    def traces(
        self, rule: str | None = None, visitor: str | None = None, limit: int = 100
    ) -> list[Trace]:
        """Why rules did or did not fire, newest first."""
        return self._wiring.rules.engine.traces(rule=rule, visitor=visitor, limit=limit)

    async def document(self) -> dict[str, Any]:
        """Everything the status page shows, as JSON-ready values (``/api/status``)."""
        snapshot = await self.snapshot()
        return {
            "store_id": self.settings.store_id,
            "time": self._clock.now().isoformat(),
            "counters": {
                field: getattr(snapshot, field) for field in Snapshot.__dataclass_fields__
            },
            "mqtt": self.mqtt(),
            "outbox": await self.outbox(),
            "parts": [
                {
                    "name": part.name,
                    "status": part.status,
                    "failures": part.failures,
                    "last_error": part.last_error,
                    "failed_at": part.failed_at.isoformat() if part.failed_at else None,
                }
                for part in self.parts()
            ],
            "sinks": self.sinks(),
            "dead_letters_by_kind": self.dead_letters_by_kind(),
            "recent_dead_letters": await self.recent_dead_letters(),
            "devices": [record.model_dump(mode="json") for record in self.devices()],
            "rules": self.rules(),
            "recent_rule_outcomes": [
                trace.model_dump(mode="json", exclude={"event_id"})
                for trace in self.traces(limit=_RECENT_TRACES)
            ],
        }
