"""The NATS JetStream sink against a real ``nats-server -js`` (free port, temporary store)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType

from gateway.config import NatsSinkSettings
from gateway.outbox import Batch
from gateway.sinks.jetstream import NatsSink, subject_covers
from gateway.sinks.localnats import NatsServer
from tests.gateway.sink_parts import (
    commit_scans,
    nats_server,
    open_outbox,
    running,
    scan_event,
    serials,
    sighting_event,
    stream_messages,
)
from tests.helpers import wait_until

FAST_RETRY = {"retry_min_s": 0.05, "retry_max_s": 0.2}


@pytest.fixture
def jetstream(tmp_path: Path) -> Iterator[NatsServer]:
    if NatsServer.binary() is None:
        pytest.fail("nats-server is not installed: .ci/run installs it (apt: nats-server)")
    with nats_server(tmp_path / "nats") as server:
        yield server


def test_subject_coverage() -> None:
    assert subject_covers("lantern.>", "lantern.s1.>")
    assert subject_covers("lantern.*.>", "lantern.s1.>")
    assert subject_covers("lantern.s1.>", "lantern.s1.>")
    assert not subject_covers("lantern.s1.*", "lantern.s1.>")  # scan.read is two tokens
    assert not subject_covers("lantern.s2.>", "lantern.s1.>")
    assert not subject_covers("other.>", "lantern.s1.>")
    assert not subject_covers("lantern", "lantern.s1.>")


def test_events_reach_the_stream_once_on_their_subjects_with_their_ids(
    jetstream: NatsServer, tmp_path: Path
) -> None:
    settings = NatsSinkSettings(url=jetstream.url, create_stream=True, **FAST_RETRY)
    scans = [scan_event(serial) for serial in serials(3)]

    async def scenario() -> None:
        async with open_outbox(tmp_path) as outbox:
            await outbox.commit(Batch(events=[scans[0], sighting_event(), *scans[1:]]))
            async with running(NatsSink(settings, "s1", outbox)) as sink:
                await wait_until(lambda: sink.delivered == 3)
                status = await sink.status()
                assert (status.cursor_lag, status.oldest_undelivered_age_s) == (0, None)
                assert status.last_error is None
            # A new start resumes after the cursor: nothing is sent again.
            await outbox.commit(Batch(events=[scan_event("SN-last")]))
            async with running(NatsSink(settings, "s1", outbox)) as sink:
                await wait_until(lambda: sink.delivered == 1)
        messages = await stream_messages(jetstream.url, "LANTERN", "lantern.>")
        assert [m.subject for m in messages] == ["lantern.s1.scan.read"] * 4
        assert [json.loads(m.data) for m in messages[:3]] == [json.loads(e.body) for e in scans]
        assert [(m.headers or {}).get("Nats-Msg-Id") for m in messages[:3]] == [e.id for e in scans]
        client = await nats.connect(jetstream.url)
        info = await client.jetstream().stream_info("LANTERN")
        await client.close()
        assert info.config.storage == StorageType.FILE
        assert info.config.subjects == ["lantern.s1.>"]
        assert (info.config.duplicate_window or 0) >= 120

    asyncio.run(scenario())


def test_a_missing_stream_is_reported_in_one_line_and_delivery_follows_its_creation(
    jetstream: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = NatsSinkSettings(url=jetstream.url, **FAST_RETRY)

    async def scenario() -> None:
        async with open_outbox(tmp_path) as outbox:
            await commit_scans(outbox, serials(2))
            async with running(NatsSink(settings, "s1", outbox)) as sink:
                await wait_until(lambda: sink.retries >= 5)
                assert sink.last_error == (
                    f"stream LANTERN does not exist on {jetstream.url}: create it for subjects"
                    " lantern.s1.>, or set nats_sink.create_stream: true"
                )
                status = await sink.status()
                assert status.cursor_lag == 2
                assert status.oldest_undelivered_age_s is not None
                client = await nats.connect(jetstream.url)
                await client.jetstream().add_stream(name="LANTERN", subjects=["lantern.>"])
                await client.close()
                sink.wake()
                await wait_until(lambda: sink.delivered == 2)
                assert sink.last_error is None

    with caplog.at_level(logging.WARNING, logger="gateway.sinks"):
        asyncio.run(scenario())
    missing = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(missing) == 1, "one line for the whole streak of retries"
    assert not missing[0].exc_info, "a line, not a traceback"


def test_a_stream_that_does_not_take_the_store_subjects_is_reported(
    jetstream: NatsServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        client = await nats.connect(jetstream.url)
        await client.jetstream().add_stream(name="LANTERN", subjects=["other.>"])
        await client.close()
        async with open_outbox(tmp_path) as outbox:
            await commit_scans(outbox, serials(1))
            sink = NatsSink(NatsSinkSettings(url=jetstream.url, **FAST_RETRY), "s1", outbox)
            async with running(sink):
                await wait_until(lambda: sink.last_error is not None)
                assert sink.last_error == (
                    f"stream LANTERN on {jetstream.url} does not take lantern.s1.> (its"
                    " subjects: other.>): add them, or set nats_sink.stream"
                )
                assert sink.delivered == 0

    asyncio.run(scenario())


def test_a_server_restart_mid_drain_loses_and_doubles_nothing(
    jetstream: NatsServer, tmp_path: Path
) -> None:
    numbers = serials(20_000)
    settings = NatsSinkSettings(url=jetstream.url, create_stream=True, **FAST_RETRY)

    async def scenario() -> None:
        async with open_outbox(tmp_path) as outbox:
            await commit_scans(outbox, numbers)
            async with running(NatsSink(settings, "s1", outbox)) as sink:
                await wait_until(lambda: sink.delivered > 0)
                await asyncio.to_thread(jetstream.stop)
                assert sink.delivered < len(numbers), "the restart must fall mid-drain"
                await asyncio.to_thread(jetstream.start)
                await wait_until(lambda: sink.delivered == len(numbers), timeout_s=60)
                assert sink.retries > 0
        messages = await stream_messages(jetstream.url, "LANTERN", "lantern.>")
        got = [json.loads(m.data)["data"]["ai"]["21"] for m in messages]
        assert sorted(got) == sorted(numbers)  # every serial, once

    asyncio.run(scenario())


def test_an_event_the_stream_refuses_is_parked_alone_and_the_rest_delivered(
    jetstream: NatsServer, tmp_path: Path
) -> None:
    big = scan_event("SN-big")
    big = dataclasses.replace(big, body=big.body.replace('"till-1"', '"' + "x" * 2_000 + '"'))
    events = [scan_event("SN-a"), big, scan_event("SN-b")]

    async def scenario() -> list[tuple[object, ...]]:
        client = await nats.connect(jetstream.url)
        await client.jetstream().add_stream(
            name="LANTERN", subjects=["lantern.>"], max_msg_size=1_000
        )
        await client.close()
        async with open_outbox(tmp_path) as outbox:
            await outbox.commit(Batch(events=events))
            sink = NatsSink(NatsSinkSettings(url=jetstream.url, **FAST_RETRY), "s1", outbox)
            async with running(sink):
                await wait_until(lambda: sink.delivered == 2)
                assert sink.parked == 1
            return await outbox.query("SELECT first_seq, last_seq, reason FROM parked")

    ((first, last, reason),) = asyncio.run(scenario())
    assert first == last == 2  # the big one, alone
    assert "message size exceeds maximum" in str(reason)
    messages = asyncio.run(stream_messages(jetstream.url, "LANTERN", "lantern.>"))
    assert [json.loads(m.data)["data"]["ai"]["21"] for m in messages] == ["SN-a", "SN-b"]
