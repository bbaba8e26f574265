"""What the sink tests and the drain benchmark share: committed events, an outbox of their
own, a sink running on its own task, and what a real nats-server's stream holds."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from gateway.app import OUTBOX_FILE_NAME
from gateway.batch import Batch, EventRow
from gateway.config import OutboxSettings
from gateway.outbox import Outbox, Page, TypeFilter
from gateway.sinks.base import Sink

_serials = itertools.count()
# Tests and the benchmark commit in bulk; durability per commit is not what they measure.
FAST_OUTBOX = OutboxSettings(synchronous="NORMAL")


def scan_event(serial: str, store: str = "s1", device: str = "till-1") -> EventRow:
    """A barcode read as the gateway commits it: a structured CloudEvent with a unique id (a
    long ``device`` makes an event too large for a far side's limit)."""
    event_id = str(uuid.uuid4())
    body = {
        "specversion": "1.0",
        "id": event_id,
        "type": "lantern.scan.read",
        "source": f"/stores/{store}/devices/{device}",
        "subject": device,
        "time": "2026-11-22T19:34:53.536Z",
        "datacontenttype": "application/json",
        "data": {
            "code": f"]C1010950110153100021{serial}",
            "gtin": "09501101531000",
            "ai": {"21": serial},
        },
    }
    return EventRow(event_id, "lantern.scan.read", json.dumps(body, separators=(",", ":")))


def sighting_event() -> EventRow:
    event_id = str(uuid.uuid4())
    body = {"specversion": "1.0", "id": event_id, "type": "lantern.presence.sighted", "data": {}}
    return EventRow(event_id, "lantern.presence.sighted", json.dumps(body))


def serials(count: int) -> list[str]:
    return [f"SN{next(_serials):08d}" for _ in range(count)]


async def commit_scans(outbox: Outbox, numbers: list[str], per_batch: int = 5_000) -> None:
    for start in range(0, len(numbers), per_batch):
        await outbox.commit(
            Batch(events=[scan_event(n) for n in numbers[start : start + per_batch]])
        )


@asynccontextmanager
async def open_outbox(directory: Path) -> AsyncIterator[Outbox]:
    async with Outbox(directory / OUTBOX_FILE_NAME, FAST_OUTBOX) as outbox:
        yield outbox


class WatchedOutbox(Outbox):
    """A real outbox that also tells how far each sink has read, so that a test can wait for
    a sink to have looked at a commit instead of sleeping until it surely has."""

    def __init__(self, path: Path, settings: OutboxSettings) -> None:
        super().__init__(path, settings)
        self.read_upto: dict[str, int] = {}

    async def read_pending(
        self, sink: str, types: TypeFilter, limit: int, after: int | None = None
    ) -> Page:
        page = await super().read_pending(sink, types, limit, after)
        self.read_upto[sink] = max(self.read_upto.get(sink, 0), page.upto)
        return page


@asynccontextmanager
async def running(sink: Sink) -> AsyncIterator[Sink]:
    task = asyncio.create_task(sink.run(), name=f"sink:{sink.name}")
    try:
        yield sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def caught_up(sink: Sink) -> bool:
    """Whether the cursor the sink has written is past every event it takes (the write
    follows the far side's confirmation, so ``delivered`` counts first)."""
    return (await sink.status()).cursor_lag == 0


async def stream_messages(url: str, stream: str, subjects: str) -> list[Msg]:
    """Every message the stream holds on ``subjects``, in order."""
    client = await nats.connect(url)
    try:
        jetstream = client.jetstream()
        total = (await jetstream.stream_info(stream)).state.messages
        messages: list[Msg] = []
        if total:
            consumer = await jetstream.pull_subscribe(
                subjects, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
            )
            while len(messages) < total:
                messages.extend(await consumer.fetch(min(1_000, total - len(messages)), timeout=5))
            await consumer.unsubscribe()
        return messages
    finally:
        await client.close()
