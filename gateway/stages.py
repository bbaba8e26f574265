"""The pipeline's stages, in the order an entry goes through them: device health, reorder
debounce, presence, rules. Each is a thin adapter from a pure core (``devices/``, ``rules/``)
to the batch; each saves and restores its own state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from devices.health import Inventory
from devices.model import Observation, Sighting
from devices.reorder import ReorderReport, ReorderTracker, SlotConfig
from gateway.batch import EventRow
from gateway.events import ACTION_PUBLISH_TYPE, EventFactory
from gateway.pipeline import NOT_NEWS, NOTHING, Derived, Entry, Stage
from rules.engine import Action, RuleEngine, Trigger
from rules.model import RuleSet
from rules.presence import PresenceEngine, PresenceSnapshot, ZoneEvent

__all__ = ["HealthStage", "PresenceStage", "ReorderStage", "RulesStage"]

log = logging.getLogger(__name__)


class HealthStage(Stage):
    """Every entry updates the device inventory. A device heard after an outage gets
    ``lantern.device.online``; silence and last wills become ``lantern.device.offline`` once
    (a last will after the silence was already flagged is no news)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def observe(self, entry: Entry) -> Derived:
        news = self.inventory.observe_one(entry.observation, entry.at)
        if news is None:
            return NOT_NEWS
        return Derived(observations=news) if news else NOTHING

    def tick(self, now: datetime) -> Sequence[Observation]:
        return self.inventory.tick(now)


class ReorderStage(Stage):
    """Each consumable report goes through the debounce tracker; its requests and clears
    follow the report, and the tracker's state commits with them, so a restart resumes
    mid-streak without a second request."""

    state_key = "reorder"

    def __init__(self, configs: Sequence[SlotConfig]) -> None:
        self._configs = list(configs)
        self.tracker = ReorderTracker(self._configs)
        self._changed = False

    def takes(self, kind: type[Observation]) -> bool:
        return issubclass(kind, ReorderReport)

    def observe(self, entry: Entry) -> Derived:
        assert isinstance(entry.observation, ReorderReport)  # what it takes
        self._changed = True
        return Derived(observations=self.tracker.update(entry.observation, entry.at))

    def changed_state(self) -> str | None:
        if not self._changed:
            return None
        self._changed = False
        return json.dumps(self.tracker.to_dict())

    def restore(self, saved: str) -> bool:
        self.tracker = ReorderTracker.from_dict(self._configs, json.loads(saved))
        return False


class PresenceStage(Stage):
    """Each sighting updates presence; the zone events it causes follow it. A clean stop
    saves who is where, and the next start takes it back once (after a crash that snapshot
    would be stale, so it is cleared as it is taken)."""

    state_key = "presence"

    def __init__(self, presence: PresenceEngine) -> None:
        self.presence = presence
        self._tracking = bool(presence.zones.ids)  # no zones: nobody is anywhere, track no one

    def takes(self, kind: type[Observation]) -> bool:
        return self._tracking and issubclass(kind, Sighting)

    def observe(self, entry: Entry) -> Derived:
        assert isinstance(entry.observation, Sighting)  # what it takes
        moves = self.presence.observe(entry.observation, entry.at)
        return Derived(observations=moves) if moves else NOTHING

    def tick(self, now: datetime) -> Sequence[Observation]:
        return self.presence.tick(now)

    def closing_state(self) -> str | None:
        return self.presence.snapshot().model_dump_json()

    def restore(self, saved: str) -> bool:
        self.presence.restore(PresenceSnapshot.model_validate_json(saved))
        log.info("presence restored: %d visitors", self.presence.visitor_count)
        return True


class RulesStage(Stage):
    """The marketers' rules over every entry whose type a rule is indexed under. A
    ``publish`` becomes a row for the MQTT action sink, an ``emit`` the event it asks for;
    both commit with the entry that fired them, and the limits' counts with the firings."""

    state_key = "rule-limits"

    def __init__(
        self,
        engine: RuleEngine,
        presence: PresenceEngine,
        events: EventFactory,
        on_action: Callable[[Action], None] | None = None,
    ) -> None:
        self.engine = engine
        self._presence = presence
        self._events = events
        self._on_action = on_action
        self._fired = False

    def replace_rules(self, rules: RuleSet) -> None:
        self.engine.replace(rules)
        self._presence.set_dwell_thresholds(rules.dwell_thresholds_s())

    def observe(self, entry: Entry) -> Derived:
        if entry.observation.cloud_event_type() not in self.engine.rules.event_types():
            return NOTHING  # most entries are sightings, which few rules (if any) trigger on
        trigger = self._trigger(entry)
        try:
            actions = self.engine.evaluate(trigger)
        except Exception:  # the rules boundary: a bug there must not stop ingest
            log.exception("rules failed on %s event %s", trigger.type, trigger.id)
            return NOTHING
        if not actions:
            return NOTHING
        self._fired = True
        if self._on_action is not None:
            for action in actions:
                self._on_action(action)
        return Derived(rows=[self._row(action) for action in actions])

    def changed_state(self) -> str | None:
        if not self._fired:
            return None
        self._fired = False
        return json.dumps(self.engine.limits_state())

    def restore(self, saved: str) -> bool:
        self.engine.restore_limits(json.loads(saved))
        return False

    def _trigger(self, entry: Entry) -> Trigger:
        observation, at = entry.observation, entry.at
        data = observation.event_data()
        visitor_id = observation.visitor if isinstance(observation, ZoneEvent) else None
        if isinstance(observation, Sighting):
            visitor_id = observation.subject()
        zone_id = data.get("zone")
        return Trigger(
            type=observation.cloud_event_type(),
            time=at,
            id=entry.event_id,
            subject=observation.subject(),
            device=observation.device_id,
            data=data,
            visitor=self._visitor(visitor_id, at),
            zone=self._zone(zone_id) if isinstance(zone_id, str) else None,
        )

    def _visitor(self, visitor_id: str | None, at: datetime) -> dict[str, Any] | None:
        view = self._presence.visitor(visitor_id, at) if visitor_id else None
        if view is None:
            return None
        return {"id": view.id, "segment": view.segment, "zone": view.zone, "dwell_s": view.dwell_s}

    def _zone(self, zone_id: str) -> dict[str, Any]:
        spec = self._presence.zones.spec(zone_id)
        return {
            "id": zone_id,
            "name": spec.name if spec is not None else None,
            "occupancy": self._presence.occupancy().get(zone_id, 0),
        }

    def _row(self, action: Action) -> EventRow:
        """A publish as a row for the MQTT action sink; an emit as the event it asks for."""
        if action.type == "publish":
            return self._events.row(
                ACTION_PUBLISH_TYPE,
                action.time,
                action.visitor,
                {
                    "rule": action.rule,
                    "topic": action.topic,
                    "payload": action.payload,
                    "qos": action.qos,
                    "retain": action.retain,
                    "expires_at": None
                    if action.ttl_s is None
                    else (action.time + timedelta(seconds=action.ttl_s)).isoformat(),
                },
            )
        data: dict[str, Any] = {"rule": action.rule, **(action.data or {})}
        return self._events.row(action.event_type or "", action.time, action.visitor, data)
