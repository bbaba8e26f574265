"""The one place that wires a message's path: topic router and decoders, privacy, the stages
(device health, reorder debounce, presence, rules) and the pipeline that runs them.

The running gateway, ``lantern rules test`` (the backtest) and ``lantern decode`` all build
their pipeline here, so the path a message takes offline is the path it takes live; they differ
only in what they hand in (the pseudonym key, the id generator's randomness, the dedup window
already committed, the rules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from devices.health import Inventory
from devices.registry import slot_configs
from gateway.config import Settings
from gateway.events import EventFactory, IdGenerator
from gateway.pipeline import DedupWindow, Pipeline
from gateway.privacy import Pseudonymizer
from gateway.router import Router, default_decoders
from gateway.stages import HealthStage, PresenceStage, ReorderStage, RulesStage
from rules.engine import Action, RuleEngine, StoreContext
from rules.model import RuleSet
from rules.presence import PresenceEngine
from rules.zones import Audiences, ZoneMap

__all__ = ["Wiring", "build"]


@dataclass(frozen=True, slots=True)
class Wiring:
    """The pipeline and the parts of it that others read (the status page, the backtest)."""

    pipeline: Pipeline
    router: Router
    health: HealthStage
    reorder: ReorderStage
    presence: PresenceStage
    rules: RulesStage


def build(
    settings: Settings,
    rules: RuleSet,
    pseudonymizer: Pseudonymizer,
    ids: IdGenerator,
    dedup: DedupWindow,
    on_action: Callable[[Action], None] | None = None,
    trace_capacity: int | None = None,
) -> Wiring:
    router = Router(settings.sources, settings.store_id, default_decoders())
    events = EventFactory(settings.store_id, ids)
    zones = ZoneMap(settings.zones)
    presence = PresenceEngine(
        zones, settings.presence, Audiences(settings.audiences), rules.dwell_thresholds_s()
    )
    store = StoreContext(id=settings.store_id, name=settings.store_id, timezone=settings.timezone)
    engine = RuleEngine(rules, store, trace_capacity or settings.rules.trace_capacity)
    health = HealthStage(Inventory.from_registry(settings.devices))
    reorder = ReorderStage(slot_configs(settings.devices))
    presence_stage = PresenceStage(presence)
    rules_stage = RulesStage(engine, presence, events, on_action)
    pipeline = Pipeline(
        router,
        pseudonymizer,
        events,
        settings.mqtt.max_payload_bytes,
        dedup,
        stages=(health, reorder, presence_stage, rules_stage),
    )
    return Wiring(pipeline, router, health, reorder, presence_stage, rules_stage)
