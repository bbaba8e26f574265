"""A commit writes every row of its batch, in the batch's order, whatever the batch's size: the
outbox inserts many rows per statement, in statements of a few lengths, and the order of the
events is the order every sink delivers them in."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gateway.app import OUTBOX_FILE_NAME
from gateway.batch import Batch, DeadLetter, EventRow
from gateway.outbox import Outbox
from tests.gateway.sink_parts import FAST_OUTBOX
from tests.helpers import outbox_rows

# Around the statement lengths: one row, a power of two, a full statement of events (249 rows
# of 4 values) and one more, a gateway batch, and more than one statement of digests (999).
SIZES = [1, 4, 249, 250, 1_000, 2_049]


def event(number: int) -> EventRow:
    event_id = str(uuid.uuid4())
    return EventRow(event_id, "lantern.scan.read", f'{{"id":"{event_id}","n":{number}}}')


@pytest.mark.parametrize("size", SIZES)
async def test_a_commit_writes_every_row_in_order(tmp_path: Path, size: int) -> None:
    events = [event(n) for n in range(size)]
    digests = [n.to_bytes(16, "big") for n in range(size)]
    letters = [
        DeadLetter(f"2026-12-03T10:00:{n % 60:02d}Z", f"t/{n}", bytes([n % 256]), "k", f"r{n}")
        for n in range(size)
    ]
    async with Outbox(tmp_path / OUTBOX_FILE_NAME, FAST_OUTBOX) as outbox:
        await outbox.commit(Batch(events=[event(-1)]))  # the batch's rows follow earlier ones
        await outbox.commit(Batch(events=events, dead_letters=letters, digests=digests))
        assert outbox.last_seq == size + 1
    path = tmp_path / OUTBOX_FILE_NAME
    stored = outbox_rows(path, "SELECT seq, id, type, body FROM events WHERE seq > 1 ORDER BY seq")
    assert stored == [(n + 2, e.id, e.type, e.body) for n, e in enumerate(events)]
    assert outbox_rows(path, "SELECT digest FROM dedup ORDER BY seq") == [(d,) for d in digests]
    assert outbox_rows(
        path, "SELECT received_at, topic, payload, kind, reason FROM dead_letters ORDER BY id"
    ) == [(d.received_at, d.topic, d.payload, d.kind, d.reason) for d in letters]
