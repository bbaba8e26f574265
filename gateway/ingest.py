"""Steps 5-6 of a message's flow: batch, commit, and only then acknowledge.

Received messages collect in a buffer (filled by the MQTT callback, in the loop); a batch of
at most ``batch_max_messages`` goes when it is full or its first message is ``batch_max_ms``
old, whichever comes first. Three tasks share the work: ``run`` processes a batch and hands it
over, then goes on to the next; ``acknowledge`` commits each batch (on the writer thread), in
order, and only then acknowledges its messages; ``ticker`` asks for a tick of the
time-driven stages every second of the injected clock, which ``run`` processes between
batches, so a tick's events are ordered with the messages'. At most ``_BATCHES_AHEAD``
batches wait behind the one committing, which bounds memory and holds back the broker
(unacknowledged messages count against its receive window).

When the outbox has no room (a full disk, or a budget full of events that are never dropped)
the batch in hand is retried every ``_NO_ROOM_RETRY_S`` until it commits: nothing is
acknowledged meanwhile, so the broker keeps every message, and ingest resumes by itself. Any
other outbox failure ends the task, and with it the gateway: the outbox is what guarantees
that nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.batch import Inbound
from gateway.clock import Clock
from gateway.config import OutboxSettings
from gateway.outbox import Outbox
from gateway.pipeline import Pipeline, Processed
from lantern.errors import OutboxFull

__all__ = ["FAILPOINT_ACK_DELAY_ENV", "Acknowledge", "Ingest"]

log = logging.getLogger(__name__)

_TICK_INTERVAL_S = 1.0  # presence timeouts and silent devices are judged to the second
# Fault injection for the crash tests only: hold acknowledgements this long after each commit,
# so that a kill -9 lands between commit and ack, the window redelivery dedup exists for.
FAILPOINT_ACK_DELAY_ENV = "LANTERN_FAILPOINT_ACK_DELAY_S"
# One batch prepared while another commits keeps both the loop and the writer busy; more
# would only hold more unacknowledged messages in memory.
_BATCHES_AHEAD = 1
_NO_ROOM_RETRY_S = 1.0  # a full disk or budget is looked at again this often
# Messages held while the outbox cannot commit. QoS 1 ones are bounded by the broker's receive
# window; QoS 0 ones (the box's own radio) are not, and beyond this many are dropped, counted.
_MAX_BUFFERED_MESSAGES = 100_000


@dataclass(frozen=True, slots=True)
class _Prepared:
    processed: Processed
    upto: int  # messages received up to the end of this batch, for the waiters


Acknowledge = Callable[[Inbound], None]  # the broker connection's ack of one committed message


class Ingest:
    def __init__(
        self,
        settings: OutboxSettings,
        pipeline: Pipeline,
        outbox: Outbox,
        clock: Clock,
        acknowledge: Acknowledge,
    ) -> None:
        self._max_messages = settings.batch_max_messages
        self._max_wait_s = settings.batch_max_ms / 1000
        self._pipeline = pipeline
        self._outbox = outbox
        self._clock = clock
        self._ack = acknowledge
        self._buffer: list[Inbound] = []
        self._first_arrival = 0.0
        self._has_work = asyncio.Event()  # a message arrived, a tick is due, or we stop
        self._full = asyncio.Event()
        self._retry_now = asyncio.Event()  # stop() wakes a committer waiting for room
        self._tick_due = False
        self._stopping = False
        # HTTP posts waiting for their commit: (the message's number, its future).
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._prepared: asyncio.Queue[_Prepared | None] = asyncio.Queue(_BATCHES_AHEAD)
        self._flushed = 0
        self.settled = 0  # messages received, committed and acknowledged, in order
        self._ack_delay_s = float(os.environ.get(FAILPOINT_ACK_DELAY_ENV, "0"))
        self.received = 0
        self.dropped = 0  # QoS 0 messages dropped while the buffer was full
        self.waiting_for_room: str | None = None  # why nothing commits now, while it lasts

    def receive(self, inbound: Inbound) -> None:
        """The MQTT callback: keep the message; the batch loop does the rest."""
        if inbound.qos == 0 and len(self._buffer) >= _MAX_BUFFERED_MESSAGES:
            self.dropped += 1
            return
        if not self._buffer:
            self._first_arrival = asyncio.get_running_loop().time()
            self._has_work.set()
        self._buffer.append(inbound)
        self.received += 1
        if len(self._buffer) >= self._max_messages:
            self._full.set()

    async def submit(self, inbound: Inbound) -> None:
        """Receive a message from a source with no broker to redeliver it (an HTTP post):
        returns once it is committed, so the sender is answered only then."""
        committed = asyncio.get_running_loop().create_future()
        self.receive(inbound)
        self._waiters.append((self.received, committed))
        await committed

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def stop(self) -> None:
        """Finish the batch in hand, commit and acknowledge it, then let both tasks return."""
        self._stopping = True
        self._has_work.set()
        self._full.set()
        self._retry_now.set()

    async def ticker(self) -> None:
        """Ask for a tick every second of the clock; runs until cancelled."""
        while True:
            await self._clock.sleep(_TICK_INTERVAL_S)
            self._tick_due = True
            self._has_work.set()

    async def run(self) -> None:
        """Process batch after batch, and the ticks asked for, until stopped."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await self._has_work.wait()
            if self._tick_due:
                self._tick_due = False
                await self._hand_over(self._pipeline.tick(self._clock.now()))
                if not self._buffer:
                    self._has_work.clear()
                    continue
            remaining_s = self._first_arrival + self._max_wait_s - loop.time()
            if remaining_s > 0 and len(self._buffer) < self._max_messages:
                try:
                    async with asyncio.timeout(remaining_s):
                        await self._full.wait()
                except TimeoutError:
                    pass
            await self._flush_one()
        while self._buffer:
            await self._flush_one()
        await self._prepared.put(None)

    async def acknowledge(self) -> None:
        """Commit each batch, in the order the batches were made, then acknowledge it.

        Stopped while a batch waits for room, it gives that batch and every later one up
        unacknowledged: the broker delivers them again to the next start.
        """
        abandoned = 0
        while (batch := await self._prepared.get()) is not None:
            if abandoned or not await self._commit(batch.processed):
                abandoned += len(batch.processed.to_ack)
                self._settle_waiters(batch.upto, OutboxFull(self.waiting_for_room or "no room"))
                continue
            if batch.processed.duplicates:  # a redelivery after a crash or a lost connection
                log.info(
                    "redelivered: %d messages already committed, acknowledged without new events",
                    batch.processed.duplicates,
                )
            if self._ack_delay_s and batch.processed.to_ack:
                await asyncio.sleep(self._ack_delay_s)
            for inbound in batch.processed.to_ack:
                self._ack(inbound)
            self.settled = batch.upto
            self._settle_waiters(batch.upto)
        if abandoned:
            log.warning(
                "stopped with %d messages uncommitted for lack of room; the broker keeps them",
                abandoned,
            )

    def _settle_waiters(self, upto: int, error: OutboxFull | None = None) -> None:
        """Answer the HTTP posts up to message ``upto``: committed, or not (``error``)."""
        while self._waiters and self._waiters[0][0] <= upto:
            _, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def _flush_one(self) -> None:
        """Process the oldest batch's worth of received messages and hand it to the writer."""
        messages = self._buffer[: self._max_messages]
        del self._buffer[: self._max_messages]
        if self._buffer:
            self._first_arrival = asyncio.get_running_loop().time()
        elif not self._tick_due:
            self._has_work.clear()
        if len(self._buffer) < self._max_messages:
            self._full.clear()
        if messages:
            self._flushed += len(messages)
            await self._hand_over(self._pipeline.process(messages))

    async def _hand_over(self, processed: Processed) -> None:
        await self._prepared.put(_Prepared(processed, self._flushed))

    async def _commit(self, processed: Processed) -> bool:
        """Commit the batch, waiting for room as long as it takes; False if stopped first."""
        while True:
            try:
                await self._outbox.commit(processed.batch)
            except OutboxFull as exc:
                if self.waiting_for_room is None:
                    log.error(
                        "outbox: %s; nothing is acknowledged until it commits (the broker keeps"
                        " the messages), retried every %.0f s",
                        exc,
                        _NO_ROOM_RETRY_S,
                    )
                self.waiting_for_room = str(exc)
                if self._stopping:
                    return False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_NO_ROOM_RETRY_S):
                        await self._retry_now.wait()
                continue
            if self.waiting_for_room is not None:
                log.warning("outbox: room again; committing and acknowledging what waited")
                self.waiting_for_room = None
            return True
