"""The NATS JetStream sink against a real ``nats-server -js`` (free port, temporary store)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js.api import StorageType

from gateway.app import OUTBOX_FILE_NAME
from gateway.batch import Batch
from gateway.config import NatsSinkSettings
from gateway.ingest import FAILPOINT_ACK_DELAY_ENV
from gateway.localbroker import Mosquitto
from gateway.outbox import Outbox
from gateway.sinks.base import FAILPOINT_CURSOR_DELAY_ENV
from gateway.sinks.jetstream import NatsSink, subject_covers
from gateway.sinks.localnats import NatsServer
from tests.gateway.sink_parts import (
    caught_up,
    commit_scans,
    running,
    scan_event,
    serials,
    sighting_event,
    stream_messages,
)
from tests.helpers import (
    Publisher,
    lantern_env,
    lantern_online,
    outbox_rows,
    start_lantern,
    wait_until,
)

FAST_RETRY = {"retry_min_s": 0.05, "retry_max_s": 0.2}


def test_subject_coverage() -> None:
    assert subject_covers("lantern.>", "lantern.s1.>")
    assert subject_covers("lantern.*.>", "lantern.s1.>")
    assert subject_covers("lantern.s1.>", "lantern.s1.>")
    assert not subject_covers("lantern.s1.*", "lantern.s1.>")  # scan.read is two tokens
    assert not subject_covers("lantern.s2.>", "lantern.s1.>")
    assert not subject_covers("other.>", "lantern.s1.>")
    assert not subject_covers("lantern", "lantern.s1.>")


async def test_events_reach_the_stream_once_on_their_subjects_with_their_ids(
    jetstream: NatsServer, outbox: Outbox
) -> None:
    settings = NatsSinkSettings(url=jetstream.url, create_stream=True, **FAST_RETRY)
    scans = [scan_event(serial) for serial in serials(3)]
    await outbox.commit(Batch(events=[scans[0], sighting_event(), *scans[1:]]))
    async with running(NatsSink(settings, "s1", outbox)) as sink:
        await wait_until(lambda: sink.delivered == 3)
        await wait_until(lambda: caught_up(sink))
        status = await sink.status()
        assert (status.oldest_undelivered_age_s, status.last_error) == (None, None)
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


async def test_a_missing_stream_is_reported_in_one_line_and_delivery_follows_its_creation(
    jetstream: NatsServer, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.sinks")
    settings = NatsSinkSettings(url=jetstream.url, **FAST_RETRY)
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
    missing = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(missing) == 1, "one line for the whole streak of retries"
    assert not missing[0].exc_info, "a line, not a traceback"


async def test_a_stream_that_does_not_take_the_store_subjects_is_reported(
    jetstream: NatsServer, outbox: Outbox
) -> None:
    client = await nats.connect(jetstream.url)
    await client.jetstream().add_stream(name="LANTERN", subjects=["other.>"])
    await client.close()
    await commit_scans(outbox, serials(1))
    sink = NatsSink(NatsSinkSettings(url=jetstream.url, **FAST_RETRY), "s1", outbox)
    async with running(sink):
        await wait_until(lambda: sink.last_error is not None)
        assert sink.last_error == (
            f"stream LANTERN on {jetstream.url} does not take lantern.s1.> (its"
            " subjects: other.>): add them, or set nats_sink.stream"
        )
        assert sink.delivered == 0


async def test_a_server_restart_mid_drain_loses_and_doubles_nothing(
    jetstream: NatsServer, outbox: Outbox
) -> None:
    numbers = serials(20_000)
    settings = NatsSinkSettings(url=jetstream.url, create_stream=True, **FAST_RETRY)
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


async def test_an_event_the_stream_refuses_is_parked_alone_and_the_rest_delivered(
    jetstream: NatsServer, outbox: Outbox, tmp_path: Path
) -> None:
    big = scan_event("SN-big", device="x" * 2_000)
    client = await nats.connect(jetstream.url)
    await client.jetstream().add_stream(name="LANTERN", subjects=["lantern.>"], max_msg_size=1_000)
    await client.close()
    await outbox.commit(Batch(events=[scan_event("SN-a"), big, scan_event("SN-b")]))
    sink = NatsSink(NatsSinkSettings(url=jetstream.url, **FAST_RETRY), "s1", outbox)
    async with running(sink):
        await wait_until(lambda: sink.delivered == 2)
        assert sink.parked == 1
    sql = "SELECT first_seq, last_seq, reason FROM parked"
    ((first, last, reason),) = outbox_rows(tmp_path / OUTBOX_FILE_NAME, sql)
    assert first == last == 2  # the big one, alone
    assert "message size exceeds maximum" in str(reason)
    messages = await stream_messages(jetstream.url, "LANTERN", "lantern.>")
    assert [json.loads(m.data)["data"]["ai"]["21"] for m in messages] == ["SN-a", "SN-b"]


@pytest.mark.slow
async def test_two_kill_9s_and_a_server_restart_while_2000_scans_arrive_store_each_once(
    broker: Mosquitto, jetstream: NatsServer, tmp_path: Path
) -> None:
    seed = int(os.environ.get("LANTERN_CRASH_SEED", "20261203"))
    chance = random.Random(seed)
    total = 2000

    async def all_stored() -> bool:
        client = await nats.connect(jetstream.url)
        try:
            return (await client.jetstream().stream_info("LANTERN")).state.messages >= total
        except nats.js.errors.NotFoundError:
            return False
        finally:
            await client.close()

    env = lantern_env("crash", tmp_path / "data", broker, forward_url="")
    env.update(
        LANTERN_NATS_SINK__URL=jetstream.url,
        LANTERN_NATS_SINK__CREATE_STREAM="true",
        LANTERN_NATS_SINK__RETRY_MAX_S="0.5",
        # Acks trail commits and cursors trail PubAcks: the kills land in those windows,
        # where the broker redelivers and the sink sends again what JetStream has.
        **{FAILPOINT_ACK_DELAY_ENV: "0.2", FAILPOINT_CURSOR_DELAY_ENV: "0.3"},
    )
    logs: list[bytes] = []
    process = await start_lantern(env, tmp_path)
    await lantern_online(broker, "crash")

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
    try:
        for fault in ("kill", "nats-restart", "kill"):
            await asyncio.sleep(chance.uniform(0.3, 1.0))  # how long this run lives
            if fault == "kill":
                if process.returncode is not None:
                    _, stderr = await process.communicate()
                    raise AssertionError(f"the gateway exited by itself: {stderr.decode()}")
                process.kill()  # SIGKILL: no drain, no goodbye
                logs.append((await process.communicate())[1])
                await asyncio.sleep(chance.uniform(0.0, 0.5))  # the box comes back up
                process = await start_lantern(env, tmp_path)
            else:
                await asyncio.to_thread(jetstream.stop)
                await asyncio.sleep(chance.uniform(0.2, 1.0))  # the region is away this long
                await asyncio.to_thread(jetstream.start)
    finally:
        await asyncio.to_thread(publisher.join)
    await wait_until(all_stored, timeout_s=90)
    # A clean stop sends what it had: nothing more can reach the stream once it exited.
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    logs.append(stderr)
    assert process.returncode == 0, stderr.decode()[-2000:]
    log = b"".join(logs).decode()
    messages = await stream_messages(jetstream.url, "LANTERN", "lantern.>")
    got = Counter(json.loads(m.data)["data"]["ai"]["21"] for m in messages)
    missing = {f"SN{n:06d}" for n in range(total)} - got.keys()
    assert not missing, f"seed {seed}: {len(missing)} serials lost, e.g. {sorted(missing)[:5]}"
    doubled = {serial: count for serial, count in got.items() if count > 1}
    assert not doubled, f"seed {seed}: serials stored twice: {list(doubled.items())[:5]}"
    # The test bites only if a resend happened: JetStream must have dropped some.
    assert "dropped as duplicates" in log, f"seed {seed}: no resend to deduplicate"
