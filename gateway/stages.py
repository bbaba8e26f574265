"""The pipeline's stages: thin adapters from the pure cores (devices/, rules/) to a batch."""

from __future__ import annotations

import json
from datetime import datetime

from devices.health import Inventory
from devices.reorder import ReorderReport, ReorderTracker
from gateway.pipeline import Pipeline, Processed


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
