"""The pipeline's stages: thin adapters from the pure cores (devices/, rules/) to a batch."""

from __future__ import annotations

from datetime import datetime

from devices.health import Inventory
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
