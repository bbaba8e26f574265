"""What a running gateway shows of itself: the read-model behind the store console, its API,
``/metrics``, ``/readyz`` and the demo's status line.

The web server reads the gateway only through :class:`StatusView`, which holds the running
parts and answers plain values (dicts and lists, JSON-ready). It changes nothing, except
through the two commands a technician or marketer gives, each carried out by the part that
owns it: :meth:`StatusView.wake_sink` and :meth:`StatusView.replace_rule`. Nothing here knows
the outbox's SQL: the outbox answers its own questions.

Parts are shown generically: a sink's ``state`` (an object, a model or a mapping), whatever
fields it has, joins the fields every sink has; the page and ``/metrics`` show them all.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from devices.health import DeviceRecord
from gateway.build import Wiring
from gateway.clock import Clock
from gateway.config import Settings
from gateway.ingest import Ingest
from gateway.mqtt import MqttClient
from gateway.outbox import Outbox, Pressure
from gateway.sinks import Sink, SinkStatus
from gateway.supervisor import PartState, Supervisor
from lantern.errors import RuleProblem, RulesInvalid
from rules.engine import Trace
from rules.model import RuleSet

if TYPE_CHECKING:
    from gateway.rulesdir import RulesWatcher

__all__ = ["Sink", "Snapshot", "StatusView"]

_RECENT_DEAD_LETTERS = 20
_RECENT_TRACES = 20  # on the page: enough to see why the last few visitors got what they got
# A dead letter's payload, shown to a technician: enough to see what the device sent.
_PREVIEW_BYTES = 240
# Beacon identities (UUIDs, 32 hex digits) in a dead letter's payload: a technician needs the
# shape of what failed, not whose phone it was. MAC-shaped text is pseudonymised before the
# payload is kept at all (gateway/privacy.py).
# A UUID's last group may already be a pseudonym (it looks like a MAC address), so the first
# four groups are masked whatever follows them.
_IDENTITY = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{12})?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Below these a battery is flagged on the page: a CR2032 beacon is near its end under 2.5 V,
# and 20 % leaves a technician a week or two to swap a scanner's.
LOW_BATTERY_PCT = 20.0
LOW_BATTERY_MV = 2_500.0
# What every sink has (gateway/sinks/base.py); the backlog comes from Sink.status().
_SINK_FIELDS = ("target", "local", "delivered", "retries", "parked", "dropped", "last_error")


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
        self.timezone = ZoneInfo(settings.timezone)
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

    def now(self) -> datetime:
        return self._clock.now()

    async def sink_statuses(self) -> list[SinkStatus]:
        """Each sink's counters and backlog: one count of the outbox per sink."""
        return [await sink.status() for sink in self._sinks]

    async def snapshot(self, statuses: Sequence[SinkStatus] | None = None) -> Snapshot:
        """The counters; ``statuses`` when the caller has just read them (else read here)."""
        pipeline = self._wiring.pipeline
        if statuses is None:
            statuses = await self.sink_statuses()
        return Snapshot(
            mqtt_connected=self._mqtt.connected,
            messages_in=self._ingest.received,
            events_committed=self._outbox.events_committed,
            outbox_depth=max((status.cursor_lag for status in statuses), default=0),
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

    async def outbox_room(self) -> dict[str, Any]:
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

    def readiness(self) -> list[str]:
        """Why the gateway cannot take messages now, one reason a line; empty when it can."""
        reasons = []
        if not self._mqtt.connected:
            why = self._mqtt.last_error or "connecting"
            reasons.append(f"broker {self.mqtt()['broker']} not connected: {why}")
        if not self._outbox.running:
            reasons.append("outbox: its writer has stopped")
        if self._ingest.waiting_for_room is not None:
            reasons.append(f"outbox: {self._ingest.waiting_for_room}")
        return reasons

    def sinks(self) -> list[dict[str, Any]]:
        """Each sink's fields that need no look at the outbox."""
        return [
            {"name": sink.name} | {field: getattr(sink, field) for field in _SINK_FIELDS}
            for sink in self._sinks
        ]

    def wake_sink(self, name: str) -> bool:
        """Ask the sink to retry now; False when there is no such sink."""
        for sink in self._sinks:
            if sink.name == name:
                sink.wake()
                return True
        return False

    def dead_letters_by_kind(self) -> dict[str, int]:
        return dict(self._wiring.pipeline.dead_letters_by_kind)

    def messages_by_family(self) -> dict[str, int]:
        return dict(self._wiring.pipeline.messages_by_family)

    async def recent_dead_letters(self, limit: int = _RECENT_DEAD_LETTERS) -> list[dict[str, Any]]:
        """The latest dead letters with a preview of the payload that is safe to show: beacon
        identities masked, control characters escaped, cut at a few hundred bytes."""
        rows = await self._outbox.recent_dead_letters(limit, _PREVIEW_BYTES)
        return [
            {key: value for key, value in row.items() if key not in ("head", "size")}
            | {"payload_preview": _preview(row["head"], row["size"]), "payload_bytes": row["size"]}
            for row in rows
        ]

    def devices(self) -> list[DeviceRecord]:
        return self._wiring.health.inventory.devices()

    def device_rows(self) -> list[dict[str, Any]]:
        """Every device, the ones in trouble first (the longest silent, then low batteries):
        last seen, silent since, online and why not, battery, health."""
        now = self._clock.now()
        rows = []
        for record in self.devices():
            health = dict(record.health)
            low = _low_battery(health)
            rows.append(
                {
                    "device_id": record.device_id,
                    "online": record.online,
                    "offline_reason": record.offline_reason,
                    "last_seen": record.last_seen.isoformat(),
                    "silent_since": None if record.online else record.last_seen.isoformat(),
                    "silent_for_s": max(0.0, (now - record.last_seen).total_seconds()),
                    "expected_interval_s": record.expected_interval_s,
                    "battery_pct": health.pop("battery_pct", None),
                    "battery_mv": health.pop("battery_mv", None),
                    "low_battery": low,
                    "health": health,
                }
            )
        rows.sort(key=lambda row: (row["online"], not row["low_battery"], -row["silent_for_s"]))
        return rows

    def occupancy(self) -> dict[str, int]:
        return self._wiring.presence.presence.occupancy()

    def zones(self) -> list[dict[str, Any]]:
        """Each zone as store.yaml declares it, with the visitors in it now."""
        occupancy = self.occupancy()
        return [
            {
                "id": zone.id,
                "name": zone.name or zone.id,
                "scanners": list(zone.scanners),
                "polygon": [list(point) for point in zone.polygon] if zone.polygon else None,
                "occupancy": occupancy.get(zone.id, 0),
            }
            for zone in self.settings.zones
        ]

    def presence_visitors(self) -> int:
        return self._wiring.presence.presence.visitor_count

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

    def running_rules(self) -> RuleSet:
        return self._wiring.rules.engine.rules

    def rule_sources(self) -> dict[str, tuple[str, str]]:
        """Rule id → (file, YAML) in the rules folder as it is now (none without a folder)."""
        return self._watcher().sources() if self._rules_watcher is not None else {}

    async def check_rule(self, rule_id: str, text: str) -> RuleSet:
        """The set the folder would run with rule ``rule_id`` as ``text``; RulesInvalid if
        it would be refused (checked in a worker thread: a big set takes a second)."""
        return await asyncio.to_thread(self._watcher().check, rule_id, text)

    async def replace_rule(self, rule_id: str, text: str) -> RuleSet:
        """Write and run rule ``rule_id`` if the set stays valid; RulesInvalid, the running
        set kept, otherwise."""
        return await self._watcher().replace(rule_id, text)

    def _watcher(self) -> RulesWatcher:
        if self._rules_watcher is None:
            raise RulesInvalid(
                [RuleProblem("store.yaml", "rules.dir", "no rules folder is configured")]
            )
        return self._rules_watcher

    def traces(
        self, rule: str | None = None, visitor: str | None = None, limit: int = 100
    ) -> list[Trace]:
        """Why rules did or did not fire, newest first."""
        return self._wiring.rules.engine.traces(rule=rule, visitor=visitor, limit=limit)

    async def document(self) -> dict[str, Any]:
        """Everything the technicians' page shows, as JSON-ready values (``/api/status``).
        No visitor's identity: rule outcomes come without it."""
        statuses = await self.sink_statuses()
        snapshot = await self.snapshot(statuses)
        sinks = [
            sink
            | {
                "pending": status.cursor_lag,
                "oldest_pending_age_s": status.oldest_undelivered_age_s,
            }
            for sink, status in zip(self.sinks(), statuses, strict=True)
        ]
        ages = [sink["oldest_pending_age_s"] for sink in sinks if sink["oldest_pending_age_s"]]
        return {
            "store_id": self.settings.store_id,
            "time": self._clock.now().isoformat(),
            "timezone": self.settings.timezone,
            "ready": not self.readiness(),
            "not_ready": self.readiness(),
            "counters": {
                field: getattr(snapshot, field) for field in Snapshot.__dataclass_fields__
            },
            "mqtt": self.mqtt(),
            "outbox": {
                "depth": snapshot.outbox_depth,
                "oldest_pending_age_s": max(ages, default=None),
                **await self.outbox_room(),
            },
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
            "sinks": sinks,
            "messages_by_family": self.messages_by_family(),
            "dead_letters_by_kind": self.dead_letters_by_kind(),
            "recent_dead_letters": await self.recent_dead_letters(),
            "devices": self.device_rows(),
            "zones": self.zones(),
            "presence_visitors": self.presence_visitors(),
            "rules": self.rules(),
            "recent_rule_outcomes": [
                {k: v for k, v in trace.as_json().items() if k not in ("event_id", "visitor")}
                for trace in self.traces(limit=_RECENT_TRACES)
            ],
        }


def _preview(head: bytes, size: int) -> str:
    text = head.decode("utf-8", errors="replace")
    text = _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)
    text = _IDENTITY.sub("<id>", text)
    return text + (f" ... ({size} bytes)" if size > len(head) else "")


def _low_battery(health: Mapping[str, Any]) -> bool:
    pct, mv = health.get("battery_pct"), health.get("battery_mv")
    return (isinstance(pct, int | float) and pct < LOW_BATTERY_PCT) or (
        isinstance(mv, int | float) and mv < LOW_BATTERY_MV
    )
