"""Parts fail alone: each source and sink runs under a supervisor that catches its failure,
logs it once with its context, shows it on the status page and restarts it with backoff.

A part is one long-running coroutine (the broker connection, a sink, the rules watcher, the
local radio, retention). Cancellation passes through (that is how the gateway stops); a part
that returns by itself has ended on purpose (no Bluetooth adapter) and is not restarted.
Only the outbox's committer is not supervised: it is what guarantees that nothing is lost, so
its failure stops the gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.clock import Clock
from gateway.mqtt import backoff_delay_s

__all__ = ["PartState", "Supervisor"]

log = logging.getLogger(__name__)

_RESTART_MIN_S = 0.5
_RESTART_MAX_S = 10.0  # a part that fails at once every time still comes back within seconds
_STABLE_S = 30.0  # a part that ran this long before failing starts its backoff afresh

PartStatus = Literal["running", "restarting", "ended"]


@dataclass(slots=True)
class PartState:
    """One supervised part as the status page shows it."""

    name: str
    status: PartStatus = "running"
    failures: int = 0
    last_error: str | None = None
    failed_at: datetime | None = None


class Supervisor:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.parts: dict[str, PartState] = {}

    async def keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` until cancelled, restarting it after each failure."""
        part = self.parts[name] = PartState(name)
        attempt = 0
        while True:
            part.status = "running"
            started = self._clock.monotonic()
            try:
                await run()
            except Exception as exc:  # the part's boundary: the rest of the gateway runs on
                if self._clock.monotonic() - started >= _STABLE_S:
                    attempt = 0
                delay = backoff_delay_s(attempt, _RESTART_MIN_S, _RESTART_MAX_S)
                attempt += 1
                error = f"{type(exc).__name__}: {exc}"
                if error != part.last_error:  # once per kind of failure, with its traceback
                    log.error(
                        "%s failed, restarting in %.1f s (the rest runs on): %s",
                        name,
                        delay,
                        error,
                        exc_info=exc,
                    )
                part.failures += 1
                part.last_error = error
                part.failed_at = self._clock.now()
                part.status = "restarting"
                await asyncio.sleep(delay)
                continue
            part.status = "ended"
            return
