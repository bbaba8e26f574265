"""The NATS JetStream sink against a real ``nats-server -js`` (free port, temporary store)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js.api import StorageType

from gateway.batch import Batch
from gateway.config import NatsSinkSettings
from gateway.ingest import FAILPOINT_ACK_DELAY_ENV
from gateway.localbroker import Mosquitto
from gateway.sinks.base import FAILPOINT_CURSOR_DELAY_ENV
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
from tests.gateway.test_process import _env, _retained_status, _start
from tests.helpers import Publisher, wait_until

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


@pytest.mark.slow
def test_two_kill_9s_and_a_server_restart_while_2000_scans_arrive_store_each_once(
    broker: Mosquitto, jetstream: NatsServer, tmp_path: Path
) -> None:
    seed = int(os.environ.get("LANTERN_CRASH_SEED", "20261203"))
    chance = random.Random(seed)
    total = 2000

    async def stored() -> int:
        client = await nats.connect(jetstream.url)
        try:
            return (await client.jetstream().stream_info("LANTERN")).state.messages
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await client.close()

    async def scenario() -> str:
        env = _env("crash", tmp_path / "data", broker, forward_url="")
        env.update(
            LANTERN_NATS_SINK__URL=jetstream.url,
            LANTERN_NATS_SINK__CREATE_STREAM="true",
            LANTERN_NATS_SINK__RETRY_MAX_S="0.5",
            # Acks trail commits and cursors trail PubAcks: the kills land in those windows,
            # where the broker redelivers and the sink sends again what JetStream has.
            **{FAILPOINT_ACK_DELAY_ENV: "0.2", FAILPOINT_CURSOR_DELAY_ENV: "0.3"},
        )
        logs: list[bytes] = []
        process = await _start(env, tmp_path)
        await wait_until(
            lambda: _retained_status(broker.port, "lantern/crash/gateway/status") == "online"
        )

        def publish() -> None:
            with Publisher(broker.port) as device:
                sent = []
                for number in range(total):
                    sent.append(
                        device.publish(
                            f"lantern/crash/scanner/till-{number % 4}",
                            f"]C1010950110153100021SN{number:06d}",
                        )
                    )
                    time.sleep(0.002)  # ~4 s of traffic: the faults land mid-stream
                for info in sent:
                    info.wait_for_publish(timeout=30)

        publisher = threading.Thread(target=publish, name="scanners")
        publisher.start()
        for fault in ("kill", "nats-restart", "kill"):
            await asyncio.sleep(chance.uniform(0.3, 1.0))
            if fault == "kill":
                process.kill()  # SIGKILL: no drain, no goodbye
                logs.append((await process.communicate())[1])
                await asyncio.sleep(chance.uniform(0.0, 0.5))
                process = await _start(env, tmp_path)
            else:
                await asyncio.to_thread(jetstream.stop)
                await asyncio.sleep(chance.uniform(0.2, 1.0))
                await asyncio.to_thread(jetstream.start)
        await asyncio.to_thread(publisher.join)
        deadline = time.monotonic() + 90
        while await stored() < total and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything extra would arrive now
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()[-2000:]
        logs.append(stderr)
        return b"".join(logs).decode()

    log = asyncio.run(scenario())
    messages = asyncio.run(stream_messages(jetstream.url, "LANTERN", "lantern.>"))
    got = Counter(json.loads(m.data)["data"]["ai"]["21"] for m in messages)
    missing = {f"SN{n:06d}" for n in range(total)} - got.keys()
    assert not missing, f"seed {seed}: {len(missing)} serials lost, e.g. {sorted(missing)[:5]}"
    doubled = {serial: count for serial, count in got.items() if count > 1}
    assert not doubled, f"seed {seed}: serials stored twice: {list(doubled.items())[:5]}"
    # The test bites only if a resend happened: JetStream must have dropped some.
    assert "dropped as duplicates" in log, f"seed {seed}: no resend to deduplicate"
