"""The delivery loop every sink shares, shown through the HTTP sink and a real receiver."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.batch import Batch
from gateway.config import (
    HttpSinkSettings,
    MqttBridgeSinkSettings,
    NatsSinkSettings,
    Settings,
)
from gateway.events import ACTION_PUBLISH_TYPE, SIGHTING_TYPE
from gateway.receiver import Receiver
from gateway.sinks.base import forwarding_types
from gateway.sinks.http import HttpSink
from tests.gateway.sink_parts import commit_scans, open_outbox, running, serials, sighting_event
from tests.helpers import wait_until


def test_every_forwarding_sink_leaves_sightings_and_actions_out_by_default() -> None:
    for settings in (HttpSinkSettings(), NatsSinkSettings(), MqttBridgeSinkSettings()):
        types = forwarding_types(settings)
        assert types.include == ()
        assert set(types.exclude) == {SIGHTING_TYPE, ACTION_PUBLISH_TYPE}
        assert settings.retry_max_s == 10.0
    everything = Settings(nats_sink={"exclude_types": []}).nats_sink
    assert forwarding_types(everything).exclude == (ACTION_PUBLISH_TYPE,)


def test_the_cursor_is_written_only_when_it_moved_for_a_delivery(tmp_path: Path) -> None:
    """Commits of events a sink does not take wake it, and cost it no transaction."""

    async def scenario() -> None:
        async with Receiver() as receiver, open_outbox(tmp_path) as outbox:
            sink = HttpSink(HttpSinkSettings(url=receiver.url), outbox)
            async with running(sink):
                await commit_scans(outbox, serials(1))
                await wait_until(lambda: sink.delivered == 1)
                await wait_until(lambda: outbox.transactions == 2)  # the scan, its cursor
                for _ in range(20):  # each commit wakes the sink, which finds nothing for it
                    await outbox.commit(Batch(events=[sighting_event()]))
                    await asyncio.sleep(0.02)
                assert outbox.transactions == 2 + 20, "only the 20 sightings written"
                await commit_scans(outbox, serials(1))
                await wait_until(lambda: sink.delivered == 2)
                await wait_until(lambda: outbox.transactions >= 2 + 20 + 2)
                await asyncio.sleep(0.1)
                assert outbox.transactions == 2 + 20 + 2, "the scan, its cursor: nothing more"
            assert len(receiver.events) == 2

    asyncio.run(scenario())


def test_wake_ends_a_long_backoff_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        receiver = Receiver()
        await receiver.start()
        await receiver.stop()  # the central record is away
        # The first retry would come 30-60 s later: only wake() can deliver within the test.
        settings = HttpSinkSettings(url=receiver.url, retry_min_s=60, retry_max_s=60)
        async with open_outbox(tmp_path) as outbox:
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
        await receiver.stop()
        assert len(receiver.events) == 3

    asyncio.run(scenario())
