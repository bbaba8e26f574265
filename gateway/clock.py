"""The I/O shell's clock: wall time for events, monotonic time and sleeps for deadlines.

Everything in ``gateway/`` that reads the time or waits for it takes a :class:`Clock`, so that a
test drives time with :class:`ManualClock` (``clock.advance(30)``: a visitor's dwell passes, a
device falls silent, the rules folder is polled) instead of sleeping. The pure cores never
read a clock at all: they are handed the time.

Batching deadlines (``batch_max_ms``) and network timeouts stay on the event loop's own clock:
they bound latency, not behaviour, and a test has no reason to move them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall time, timezone-aware UTC: an event's receive time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: deadlines and ages."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told: :meth:`advance` wakes every sleep that falls due."""

    def __init__(self, start: datetime) -> None:
        if start.utcoffset() is None:
            raise ValueError("a manual clock starts at a timezone-aware time")
        self._now = start
        self._monotonic = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties wake in the order they went to sleep

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._monotonic + seconds, next(self._order), waiter))
        await waiter

    def advance(self, seconds: float) -> None:
        """Move time forward; the sleeps now due are woken (they run at the next await)."""
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
        while self._sleepers and self._sleepers[0][0] <= self._monotonic:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
