"""The delivery loop every sink shares: read a page after the cursor, deliver it, move the
cursor only on the far side's confirmation.

A sink says how to deliver (:meth:`Sink.deliver`); the loop does the rest, the same for all:

- A page is read after the sink's cursor, filtered to the types the sink takes, and handed
  to ``deliver``. Only once it returns is the cursor moved, and written (one transaction).
- ``RetryableSinkError`` (the far side is down, slow or busy) is retried with jittered
  exponential backoff, capped by the sink's ``retry_max_s`` (10 s by default), ``Retry-After``
  honoured within the cap; :meth:`Sink.wake` ends a wait at once. The part of the page the
  far side confirmed before the failure (``confirmed``) is not sent again.
- ``RejectedBatchError`` (refused for good) parks the refused events with the reason, counts
  them, and the loop goes on with the next.
- Anything else a sink raises is a bug at this boundary: logged once with its traceback and
  retried like a retryable error, so one sink's failure never ends the gateway.
- The cursor is written only when it moved. When it moved only past events the sink does
  not take (sightings, for most sinks), the write waits up to ``_SKIP_WRITE_INTERVAL_S``:
  otherwise every commit of the ingest loop would cost each idle sink an fsync'd transaction.

:meth:`Sink.status` is the one read-only view of a sink, for the status page and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config import ForwardingSinkSettings, SinkSettings, TlsSettings
from gateway.events import ACTION_PUBLISH_TYPE
from gateway.mqtt import backoff_delay_s
from gateway.outbox import Outbox, Page, PendingRow, TypeFilter
from lantern.errors import RejectedBatchError, RetryableSinkError

log = logging.getLogger(__name__)

_IDLE_POLL_S = 1.0  # with nothing to send, look again after a commit or this long
# A restart re-reads at most this much of what the sink skipped: cheap, since skipped events
# are filtered out in SQL, and it saves an idle sink's transaction per commit (issue 11).
_SKIP_WRITE_INTERVAL_S = 10.0
# Fault injection for the crash tests only: hold the cursor write this long after the far side
# confirmed a page, so that a kill -9 lands between confirmation and cursor, the window the
# far side's dedup by event id exists for.
FAILPOINT_CURSOR_DELAY_ENV = "LANTERN_FAILPOINT_CURSOR_DELAY_S"


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """One sink at one moment."""

    name: str
    delivered: int  # events the far side confirmed since start
    retries: int  # failed attempts since start
    parked: int  # batches (or single events) refused for good and parked
    dropped: int  # events dropped on purpose (actions past their expiry)
    last_error: str | None  # None once a delivery succeeds again
    cursor_lag: int  # events committed and not yet delivered
    oldest_undelivered_age_s: float | None  # how long the oldest of those has waited


def client_tls_context(settings: TlsSettings | None) -> ssl.SSLContext:
    """TLS to a central service: its CA (or the system's), and our certificate when given."""
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings and settings.ca_file else None
    )
    if settings is not None and settings.cert_file is not None:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


def forwarding_types(settings: ForwardingSinkSettings) -> TypeFilter:
    """The events a sink to the central record takes: never the local actions."""
    return TypeFilter(
        include=settings.include_types, exclude=(*settings.exclude_types, ACTION_PUBLISH_TYPE)
    )


class Sink(ABC):
    """A delivery target driven by the shared loop; subclasses implement :meth:`deliver`."""

    name: str  # the cursor's key in the outbox: never rename a shipped sink
    label: str  # how the log names it
    target = ""  # where it delivers, for the start-up line and the status page
    local = False  # delivers inside the store (rule actions), not to the central record

    def __init__(self, settings: SinkSettings, outbox: Outbox, types: TypeFilter) -> None:
        self._settings = settings
        self._outbox = outbox
        self._types = types
        self._woken = asyncio.Event()
        self._cursor_delay_s = float(os.environ.get(FAILPOINT_CURSOR_DELAY_ENV, "0"))
        self._cursor = 0  # delivered (or skipped) up to here
        self._written = 0  # the cursor as the outbox holds it
        self._written_at = 0.0
        self._prefetched: asyncio.Future[Page] | None = None
        self._writing: asyncio.Future[None] | None = None
        self.delivered = 0
        self.retries = 0
        self.parked = 0
        self.dropped = 0
        self.last_error: str | None = None

    @property
    def types(self) -> TypeFilter:
        return self._types

    @abstractmethod
    async def deliver(self, rows: Sequence[PendingRow]) -> None:
        """Deliver ``rows`` in order and return once the far side confirmed every one.

        Raise ``RetryableSinkError`` or ``RejectedBatchError`` with ``confirmed`` set to how
        many rows at the head of ``rows`` were confirmed before the failure.
        """

    async def prepare(self) -> None:  # noqa: B027 - a hook: most sinks need nothing here
        """Connect and check the far side before the first page (and after a failure)."""

    async def close(self) -> None:  # noqa: B027 - a hook, as prepare
        """Release connections when the loop ends."""

    def wake(self) -> None:
        """Retry now instead of at the end of the current backoff or idle wait."""
        self._woken.set()

    async def status(self) -> SinkStatus:
        backlog = await self._outbox.backlog(self.name, self.types)
        oldest = backlog.oldest_created_at
        return SinkStatus(
            name=self.name,
            delivered=self.delivered,
            retries=self.retries,
            parked=self.parked,
            dropped=self.dropped,
            last_error=self.last_error,
            cursor_lag=backlog.count,
            oldest_undelivered_age_s=None if oldest is None else max(0.0, time.time() - oldest),
        )

    async def run(self) -> None:
        self._cursor = self._written = await self._outbox.cursor(self.name)
        self._written_at = time.monotonic()
        failures = 0  # in this streak: the backoff's exponent
        logged: str | None = None  # the reason last logged in this streak
        try:
            while True:
                page = Page(rows=[], upto=self._cursor)
                dropped = self.dropped  # a sink counts what it drops on purpose in deliver()
                try:
                    await self.prepare()
                    page = await self._next_page()
                    if page.rows:
                        # The next page is read while this one is on its way (a drain after
                        # an outage runs at the far side's pace, not at disk-then-network's).
                        self._prefetched = asyncio.ensure_future(self._read(page.upto))
                        await self.deliver(page.rows)
                        self.delivered += len(page.rows) - (self.dropped - dropped)
                        if self._cursor_delay_s:
                            await asyncio.sleep(self._cursor_delay_s)
                        await self._advance(page.upto)
                    else:
                        await self._skip(page.upto)
                except RetryableSinkError as exc:
                    await self._drop_prefetched()
                    if await self._confirmed(page, exc.confirmed, dropped):
                        failures = 0
                    logged = self._failed(str(exc), logged, traceback=False)
                    await self._backoff(failures, exc.retry_after_s)
                    failures += 1
                    continue
                except RejectedBatchError as exc:
                    await self._drop_prefetched()
                    await self._confirmed(page, exc.confirmed, dropped)
                    await self._park(page, exc)
                    continue
                except Exception as exc:  # a bug in a sink: never let it end the gateway
                    await self._drop_prefetched()
                    logged = self._failed(f"{type(exc).__name__}: {exc}", logged, traceback=True)
                    await self._backoff(failures, None)
                    failures += 1
                    continue
                if failures:
                    log.info("%s: delivering again after %d retries", self.label, failures)
                    failures, logged = 0, None
                self.last_error = None
                if not page.rows:
                    await self._idle()
        finally:
            await self._drop_prefetched()
            if self._writing is not None:  # the last cursor move, even when stopping
                with contextlib.suppress(Exception):  # lost, it only means a resend
                    await self._writing
            await self.close()

    async def _read(self, after: int) -> Page:
        return await self._outbox.read_pending(
            self.name, self.types, self._settings.batch_max_events, after
        )

    async def _next_page(self) -> Page:
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None:
            page = await prefetched
            if page.rows and page.rows[0].seq > self._cursor:
                return page
        return await self._read(self._cursor)

    async def _drop_prefetched(self) -> None:
        """A read ahead of a page that failed: read again from where the cursor stands."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None:
            with contextlib.suppress(Exception):  # its error will come again on the reread
                await prefetched

    def _failed(self, reason: str, logged: str | None, traceback: bool) -> str:
        """Count a failed attempt; log its reason when it is new in this streak of failures."""
        self.retries += 1
        self.last_error = reason
        if reason != logged:
            log.warning(
                "%s: %s; retrying with backoff (at most %g s)",
                self.label,
                reason,
                self._settings.retry_max_s,
                exc_info=traceback,
            )
        return reason

    async def _confirmed(self, page: Page, confirmed: int, dropped_before: int) -> bool:
        """Move the cursor past the head of the page the far side confirmed; whether any."""
        if confirmed <= 0:
            return False
        self.delivered += confirmed - (self.dropped - dropped_before)
        await self._advance(page.rows[confirmed - 1].seq)
        return True

    async def _park(self, page: Page, exc: RejectedBatchError) -> None:
        refused = page.rows[exc.confirmed :]
        if exc.refused is not None:
            refused = refused[: exc.refused]
        upto = refused[-1].seq if exc.refused is not None else page.upto
        log.error(
            "%s: %d events (seq %d-%d) refused, parked: %s",
            self.label,
            len(refused),
            refused[0].seq,
            refused[-1].seq,
            exc,
        )
        await self._outbox.park(
            self.name, Page(rows=list(refused), upto=upto), exc.status, str(exc)
        )
        self._cursor = self._written = max(self._written, upto)
        self.parked += 1

    async def _advance(self, upto: int) -> None:
        """Move the cursor; its write (an fsync) goes on while the next page is delivered,
        one write at a time, each awaited before the next (so its error is not lost)."""
        self._cursor = max(self._cursor, upto)
        if self._cursor > self._written:
            if self._writing is not None:
                await self._writing
            self._writing = asyncio.ensure_future(self._outbox.advance(self.name, self._cursor))
            self._written, self._written_at = self._cursor, time.monotonic()

    async def _skip(self, upto: int) -> None:
        self._cursor = max(self._cursor, upto)
        if time.monotonic() - self._written_at >= _SKIP_WRITE_INTERVAL_S:
            await self._advance(upto)

    async def _backoff(self, failures: int, retry_after_s: float | None) -> None:
        settings = self._settings
        delay = backoff_delay_s(failures, settings.retry_min_s, settings.retry_max_s)
        if retry_after_s is not None:
            delay = min(max(delay, retry_after_s), settings.retry_max_s)
        await self._wait_woken(delay)

    async def _idle(self) -> None:
        commit = asyncio.ensure_future(self._outbox.wait_for_commit(_IDLE_POLL_S))
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait([commit, woken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            commit.cancel()
            woken.cancel()
        self._woken.clear()

    async def _wait_woken(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._woken.wait()
        self._woken.clear()
