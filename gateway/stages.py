"""The pipeline's stages: thin adapters from the pure cores (devices/, rules/) to a batch."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from devices.health import Inventory
from devices.model import Observation, Sighting
from devices.reorder import ReorderReport, ReorderTracker
from gateway.config import Settings
from gateway.outbox import ACTION_PUBLISH_TYPE, EventRow
from gateway.pipeline import Pipeline, Processed
from rules.engine import Action, RuleEngine, StoreContext, Trigger
from rules.model import RuleSet
from rules.presence import PresenceEngine, ZoneEvent
from rules.zones import Audiences, ZoneMap

log = logging.getLogger(__name__)


class HealthStage:
    """Every observation updates the device inventory; silence and last wills become
    ``lantern.device.offline`` once, a return ``lantern.device.online``."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def process(self, processed: Processed, pipeline: Pipeline, now: datetime) -> None:
        processed.observations = [
            (kept, received_at)
            for observation, received_at in processed.observations
            for kept in self.inventory.observe([observation], received_at)
        ]

    def tick(self, processed: Processed, pipeline: Pipeline, now: datetime) -> None:
        processed.observations.extend((status, now) for status in self.inventory.tick(now))


class ReorderStage:
    """Each consumable report goes through the debounce tracker; its requests and clears are
    committed with the report that caused them, together with the tracker's state, so a
    restart resumes mid-streak without a second request."""

    STATE_KEY = "reorder"

    def __init__(self, tracker: ReorderTracker) -> None:
        self.tracker = tracker

    def process(self, processed: Processed, pipeline: Pipeline, now: datetime) -> None:
        reports = [
            (observation, received_at)
            for observation, received_at in processed.observations
            if isinstance(observation, ReorderReport)
        ]
        if not reports:
            return
        for report, received_at in reports:
            processed.observations.extend(
                (event, received_at) for event in self.tracker.update(report, received_at)
            )
        processed.batch.state[self.STATE_KEY] = json.dumps(self.tracker.to_dict())

    def tick(self, processed: Processed, pipeline: Pipeline, now: datetime) -> None:
        return None


class LocationStage:
    """Presence, then the marketers' rules, over the batch's observations in order.

    Each sighting updates presence; the zone events it causes follow it in the batch. Every
    event a rule is indexed under is then evaluated; a ``publish`` action becomes an outbox
    row for the MQTT action sink and an ``emit`` action an event for the central record, both
    committed with the messages that caused them. Presence and rules run on the receive time,
    which the backtest replays from the recording.
    """

    STATE_KEY = "rule-limits"
    PRESENCE_STATE_KEY = "presence"  # written at a clean stop, taken at the next start

    def __init__(
        self,
        presence: PresenceEngine,
        zones: ZoneMap,
        engine: RuleEngine,
        on_action: Callable[[Action], None] | None = None,
    ) -> None:
        self.presence = presence
        self.zones = zones
        self.engine = engine
        self._on_action = on_action

    def replace_rules(self, rules: RuleSet) -> None:
        self.engine.replace(rules)
        self.presence.set_dwell_thresholds(rules.dwell_thresholds_s())

    def process(self, processed: Processed, pipeline: Pipeline, now: datetime) -> None:
        located: list[tuple[Observation, datetime]] = []
        has_zones = bool(self.zones.ids)  # without zones, nobody is anywhere: track no one
        for observation, received_at in processed.observations:
            located.append((observation, received_at))
            if has_zones and isinstance(observation, Sighting):
                located.extend(
                    (event, received_at)
                    for event in self.presence.observe(observation, received_at)
                )
        processed.observations = located
        self._evaluate(located, processed, pipeline)

    def tick(self, processed: Processed, pipeline: Pipeline, now: datetime) -> None:
        """Presence's timeouts, then rules over everything the tick made: the stages before
        this one add theirs too (a device gone silent)."""
        processed.observations.extend((event, now) for event in self.presence.tick(now))
        self._evaluate(processed.observations, processed, pipeline)

    def _evaluate(
        self,
        observations: list[tuple[Observation, datetime]],
        processed: Processed,
        pipeline: Pipeline,
    ) -> None:
        indexed = self.engine.rules.event_types()
        fired = False
        for observation, at in observations:
            if observation.cloud_event_type() not in indexed:
                continue  # most are sightings, which few rules (if any) trigger on
            trigger = self._trigger(observation, at, pipeline.event_id(processed, observation, at))
            try:
                actions = self.engine.evaluate(trigger)
            except Exception:  # the rules boundary: a bug there must not stop ingest
                log.exception("rules failed on %s event %s", trigger.type, trigger.id)
                continue
            for action in actions:
                fired = True
                processed.batch.events.append(_action_row(action, pipeline))
                if self._on_action is not None:
                    self._on_action(action)
        if fired:  # the limits' counts commit with the firings they counted
            processed.batch.state[self.STATE_KEY] = json.dumps(self.engine.limits_state())

    def _trigger(self, observation: Observation, at: datetime, event_id: str) -> Trigger:
        data = observation.event_data()
        visitor_id = observation.visitor if isinstance(observation, ZoneEvent) else None
        if isinstance(observation, Sighting):
            visitor_id = observation.subject()
        zone_id = data.get("zone")
        return Trigger(
            type=observation.cloud_event_type(),
            time=at,
            id=event_id,
            subject=observation.subject(),
            device=observation.device_id,
            data=data,
            visitor=self._visitor(visitor_id, at),
            zone=self._zone(zone_id) if isinstance(zone_id, str) else None,
        )

    def _visitor(self, visitor_id: str | None, at: datetime) -> dict[str, Any] | None:
        view = self.presence.visitor(visitor_id, at) if visitor_id else None
        if view is None:
            return None
        return {"id": view.id, "segment": view.segment, "zone": view.zone, "dwell_s": view.dwell_s}

    def _zone(self, zone_id: str) -> dict[str, Any]:
        spec = self.zones.spec(zone_id)
        return {
            "id": zone_id,
            "name": spec.name if spec is not None else None,
            "occupancy": self.presence.occupancy().get(zone_id, 0),
        }


def _action_row(action: Action, pipeline: Pipeline) -> EventRow:
    """A publish as a row for the MQTT action sink; an emit as the event it asks for."""
    if action.type == "publish":
        return pipeline.event_row(
            ACTION_PUBLISH_TYPE,
            action.time,
            action.visitor,
            {
                "rule": action.rule,
                "topic": action.topic,
                "payload": action.payload,
                "qos": action.qos,
                "retain": action.retain,
                # The action sink drops it unpublished after this (gateway/sinks/mqtt_actions.py)
                "expires_at": None
                if action.ttl_s is None
                else (action.time + timedelta(seconds=action.ttl_s)).isoformat(),
            },
            None,
        )
    data: dict[str, Any] = {"rule": action.rule, **(action.data or {})}
    return pipeline.event_row(action.event_type or "", action.time, action.visitor, data, None)


def location_stage(
    settings: Settings,
    rules: RuleSet,
    on_action: Callable[[Action], None] | None = None,
    trace_capacity: int | None = None,
) -> LocationStage:
    """Zones, presence and rules as ``store.yaml`` describes them (live and in the backtest)."""
    zones = ZoneMap(settings.zones)
    presence = PresenceEngine(
        zones, settings.presence, Audiences(settings.audiences), rules.dwell_thresholds_s()
    )
    store = StoreContext(id=settings.store_id, name=settings.store_id, timezone=settings.timezone)
    engine = RuleEngine(rules, store, trace_capacity or settings.rules.trace_capacity)
    return LocationStage(presence, zones, engine, on_action)
