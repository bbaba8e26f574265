"""The last hour of the gateway's traffic, for the console's small charts: messages per second
and outbox depth, sampled every few seconds of the gateway's clock."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["HISTORY_INTERVAL_S", "History"]

HISTORY_INTERVAL_S = 10.0  # 360 points an hour: finer than a phone-wide chart can show
_HOUR_S = 3_600.0


@dataclass(frozen=True, slots=True)
class _Sample:
    at: datetime
    messages_in: int
    outbox_depth: int


class History:
    def __init__(self, span_s: float = _HOUR_S, interval_s: float = HISTORY_INTERVAL_S) -> None:
        self._samples: deque[_Sample] = deque(maxlen=int(span_s / interval_s) + 1)

    def add(self, at: datetime, messages_in: int, outbox_depth: int) -> None:
        self._samples.append(_Sample(at, messages_in, outbox_depth))

    def series(self) -> dict[str, list[dict[str, Any]]]:
        """``messages_per_s`` (between two samples) and ``outbox_depth``, oldest first."""
        samples = list(self._samples)
        rates = []
        for before, after in itertools.pairwise(samples):
            elapsed_s = (after.at - before.at).total_seconds()
            if elapsed_s > 0:
                rate = max(0, after.messages_in - before.messages_in) / elapsed_s
                rates.append({"at": after.at.isoformat(), "value": round(rate, 2)})
        return {
            "messages_per_s": rates,
            "outbox_depth": [
                {"at": sample.at.isoformat(), "value": sample.outbox_depth} for sample in samples
            ],
        }
