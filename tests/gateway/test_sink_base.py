"""The delivery loop every sink shares, shown through the HTTP sink and a real receiver."""

from __future__ import annotations

from pathlib import Path

from gateway.app import OUTBOX_FILE_NAME
from gateway.batch import Batch
from gateway.config import (
    HttpSinkSettings,
    MqttBridgeSinkSettings,
    NatsSinkSettings,
    Settings,
)
from gateway.events import ACTION_PUBLISH_TYPE, SIGHTING_TYPE
from gateway.outbox import Outbox
from gateway.receiver import Receiver
from gateway.sinks.base import forwarding_types
from gateway.sinks.http import HttpSink
from tests.gateway.sink_parts import (
    FAST_OUTBOX,
    WatchedOutbox,
    commit_scans,
    running,
    serials,
    sighting_event,
)
from tests.helpers import wait_until


def test_every_forwarding_sink_leaves_sightings_and_actions_out_by_default() -> None:
    for settings in (HttpSinkSettings(), NatsSinkSettings(), MqttBridgeSinkSettings()):
        types = forwarding_types(settings)
        assert types.include == ()
        assert set(types.exclude) == {SIGHTING_TYPE, ACTION_PUBLISH_TYPE}
        assert settings.retry_max_s == 10.0
    everything = Settings(nats_sink={"exclude_types": []}).nats_sink
    assert forwarding_types(everything).exclude == (ACTION_PUBLISH_TYPE,)


async def test_the_cursor_is_written_only_when_it_moved_for_a_delivery(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Commits of events a sink does not take wake it, and cost it no transaction."""
    async with WatchedOutbox(tmp_path / OUTBOX_FILE_NAME, FAST_OUTBOX) as outbox:
        sink = HttpSink(HttpSinkSettings(url=receiver.url), outbox)

        async def on_disk() -> bool:  # the cursor's write is done, and every write before it
            return await outbox.cursor(sink.name) == outbox.last_seq

        async with running(sink):
            await commit_scans(outbox, serials(1))
            await wait_until(lambda: sink.delivered == 1)
            await wait_until(on_disk)
            assert outbox.transactions == 2  # the scan, its cursor
            for _ in range(20):  # each commit wakes the sink, which finds nothing for it
                await outbox.commit(Batch(events=[sighting_event()]))
                await wait_until(lambda: outbox.read_upto.get(sink.name) == outbox.last_seq)
            await commit_scans(outbox, serials(1))
            await wait_until(lambda: sink.delivered == 2)
            await wait_until(on_disk)
            # A cursor write for the sightings would have come before the scan's, in order.
            assert outbox.transactions == 2 + 20 + 2, "the 20 sightings, the scan, its cursor"
    assert len(receiver.events) == 2


async def test_wake_ends_a_long_backoff_at_once(outbox: Outbox, receiver: Receiver) -> None:
    await receiver.stop()  # the central record is away
    # The first retry would come 30-60 s later: only wake() can deliver within the test.
    settings = HttpSinkSettings(url=receiver.url, retry_min_s=60, retry_max_s=60)
    await commit_scans(outbox, serials(3))
    async with running(HttpSink(settings, outbox)) as sink:
        await wait_until(lambda: sink.retries == 1)
        status = await sink.status()
        assert status.cursor_lag == 3
        assert status.last_error is not None and "Connect" in status.last_error
        await receiver.start()
        sink.wake()
        await wait_until(lambda: sink.delivered == 3, timeout_s=5)
        assert sink.retries == 1
    assert len(receiver.events) == 3
