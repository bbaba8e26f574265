"""Steps 5-6 of a message's flow: batch, commit, and only then acknowledge.

Received messages collect in a buffer (filled by the MQTT callback, in the loop); a batch goes
when it holds ``batch_max_messages`` or its first message is ``batch_max_ms`` old, whichever
comes first. While the writer thread commits one batch, the loop goes on receiving the next.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime

from gateway.config import OutboxSettings
from gateway.mqtt import Inbound, MqttClient
from gateway.outbox import Outbox
from gateway.pipeline import Pipeline, Processed

log = logging.getLogger(__name__)

_TICK_INTERVAL_S = 1.0  # presence timeouts and silent devices are judged to the second
# Fault injection for the crash tests only: hold acknowledgements this long after each commit,
# so that a kill -9 lands between commit and ack, the window redelivery dedup exists for.
FAILPOINT_ACK_DELAY_ENV = "LANTERN_FAILPOINT_ACK_DELAY_S"


class Ingest:
    def __init__(self, settings: OutboxSettings, pipeline: Pipeline, outbox: Outbox) -> None:
        self._max_messages = settings.batch_max_messages
        self._max_wait_s = settings.batch_max_ms / 1000
        self._pipeline = pipeline
        self._outbox = outbox
        self._mqtt: MqttClient | None = None
        self._buffer: list[Inbound] = []
        self._first_arrival = 0.0
        self._has_messages = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = False
        self._committed_waiters: list[asyncio.Future[None]] = []
        self._ack_delay_s = float(os.environ.get(FAILPOINT_ACK_DELAY_ENV, "0"))
        self.received = 0

    def attach(self, mqtt: MqttClient) -> None:
        self._mqtt = mqtt

    def receive(self, inbound: Inbound) -> None:
        """The MQTT callback: keep the message; the batch loop does the rest."""
        if not self._buffer:
            self._first_arrival = asyncio.get_running_loop().time()
            self._has_messages.set()
        self._buffer.append(inbound)
        self.received += 1
        if len(self._buffer) >= self._max_messages:
            self._full.set()

    async def submit(self, inbound: Inbound) -> None:
        """Receive a message from a source with no broker to redeliver it (an HTTP post):
        returns once it is committed, so the sender is answered only then."""
        committed = asyncio.get_running_loop().create_future()
        self._committed_waiters.append(committed)
        self.receive(inbound)
        await committed

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def stop(self) -> None:
        """Finish the batch in hand, commit and acknowledge it, then let run() return."""
        self._stopping = True
        self._has_messages.set()
        self._full.set()

    async def run(self) -> None:
        """Commit batch after batch until stopped; tick the time-driven stages every second."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + _TICK_INTERVAL_S
        while not self._stopping:
            if loop.time() >= next_tick:
                next_tick = loop.time() + _TICK_INTERVAL_S
                await self._commit_and_ack(self._pipeline.tick(datetime.now(UTC)))
            try:
                async with asyncio.timeout(max(0.0, next_tick - loop.time())):
                    await self._has_messages.wait()
            except TimeoutError:
                continue
            remaining_s = self._first_arrival + self._max_wait_s - loop.time()
            if remaining_s > 0 and len(self._buffer) < self._max_messages:
                try:
                    async with asyncio.timeout(remaining_s):
                        await self._full.wait()
                except TimeoutError:
                    pass
            await self.flush()
        await self.flush()

    async def flush(self) -> None:
        """Process, commit and acknowledge everything received so far."""
        messages, self._buffer = self._buffer, []
        waiters, self._committed_waiters = self._committed_waiters, []
        self._has_messages.clear()
        self._full.clear()
        if not messages:
            return
        await self._commit_and_ack(self._pipeline.process(messages))
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _commit_and_ack(self, processed: Processed) -> None:
        await self._outbox.commit(processed.batch)
        if self._ack_delay_s and processed.to_ack:
            await asyncio.sleep(self._ack_delay_s)
        if self._mqtt is not None:
            for inbound in processed.to_ack:
                self._mqtt.ack(inbound)
