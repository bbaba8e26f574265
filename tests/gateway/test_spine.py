"""The spine end to end: real Mosquitto, real HTTP receiver, real SQLite files."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import Settings
from gateway.localbroker import Mosquitto
from gateway.receiver import Receiver
from tests.helpers import (
    Publisher,
    make_settings,
    outbox_rows,
    running_gateway,
    sink_delivered,
    status,
    wait_until,
)

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _serial_scan(number: int) -> str:
    """A GS1-128 read of GTIN 09501101531000 with a unique serial (AI 21)."""
    return f"]C1010950110153100021SN{number:06d}"


async def test_a_scan_arrives_at_the_receiver_as_the_right_cloudevent(
    gateway: Gateway, device: Publisher, receiver: Receiver
) -> None:
    await device.send([("lantern/s1/scanner/till-3", "]C1010590123412345715210526")])
    await wait_until(lambda: len(receiver.events) == 1)
    (event,) = receiver.events.values()
    assert UUID7.match(event["id"])
    assert event["specversion"] == "1.0"
    assert event["type"] == "lantern.scan.read"
    assert event["source"] == "/stores/s1/devices/till-3"
    assert event["subject"] == "till-3"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {
        "code": "]C1010590123412345715210526",
        "symbology": "GS1-128",
        "gtin": "05901234123457",
        "ai": {"01": "05901234123457", "15": "2021-05-26"},
    }


@pytest.mark.settings(mqtt={"max_payload_bytes": 1024})
async def test_bad_payloads_become_dead_letters_and_ingest_goes_on(
    gateway: Gateway, gateway_settings: Settings, device: Publisher, receiver: Receiver
) -> None:
    await device.send(
        [
            ("espresense/devices/iBeacon:x/office", b"{not json"),
            ("lantern/s1/scanner/till-1", b"9" * 2048),
            ("lantern/s1/scanner/till-1", b"\xff\xfe\x00bad"),
            ("lantern/s1/scanner/till-1", b"9501101531001"),
            ("lantern/s1/scanner/till-1", b"9501101531000"),
        ]
    )
    await wait_until(lambda: len(receiver.events) == 1)
    (event,) = receiver.events.values()
    assert event["data"]["gtin"] == "09501101531000"
    rows = outbox_rows(gateway_settings, "SELECT topic, kind, reason FROM dead_letters ORDER BY id")
    assert [(topic, kind) for topic, kind, _ in rows] == [
        ("espresense/devices/iBeacon:x/office", "espresense: undecodable"),
        ("lantern/s1/scanner/till-1", "oversized"),
        ("lantern/s1/scanner/till-1", "barcode: undecodable"),
        ("lantern/s1/scanner/till-1", "barcode: undecodable"),
    ]
    reasons = [reason for _, _, reason in rows]
    assert "2048 bytes exceeds the 1024-byte limit" in reasons[1]
    assert "UTF-8" in reasons[2]
    assert reasons[3] == "check digit: expected 0, got 1"
    # The page lists them newest first, with their reasons.
    latest = await status(gateway).recent_dead_letters()
    assert [letter["reason"] for letter in latest][::-1] == reasons


async def test_receiver_down_then_up_loses_nothing_and_the_backlog_drains(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, device: Publisher
) -> None:
    receiver = Receiver()
    await receiver.start()
    url = receiver.url
    await receiver.stop()  # the central record is unreachable from the start
    settings = make_settings(tmp_path, broker.url, http_sink={"url": url})
    async with running_gateway(settings, clock) as gateway:
        await device.send(
            [(f"lantern/s1/scanner/till-{i % 3}", _serial_scan(i)) for i in range(300)]
        )

        def failing_for_a_while() -> bool:
            (sink,) = [s for s in status(gateway).sinks() if s["name"] == "http"]
            return bool(sink["last_error"]) and sink["delivered"] == 0

        await wait_until(failing_for_a_while)
        await wait_until(lambda: status(gateway).events_committed == 300)
        assert (await status(gateway).snapshot()).outbox_depth == 300
        await receiver.start()  # back, on the same port
        await wait_until(lambda: len(receiver.events) == 300, timeout_s=30)
        await wait_until(lambda: sink_delivered(gateway) == 300)

        async def drained() -> bool:  # the depth is the durable cursor's: its write trails
            return (await status(gateway).snapshot()).outbox_depth == 0

        await wait_until(drained)
    await receiver.stop()
    serials = sorted(event["data"]["ai"]["21"] for event in receiver.events.values())
    assert serials == sorted(f"SN{i:06d}" for i in range(300))


async def test_http_sink_gzip_token_retry_after_and_parking(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, device: Publisher
) -> None:
    """A 429 is retried, a 400 parks its batch with the reason and the next batch goes on."""
    answers = iter([429, 400])
    seen_encodings: list[str | None] = []

    async def intercept(request: web.Request) -> int | None:
        seen_encodings.append(request.headers.get("Content-Encoding"))
        return next(answers, None)

    async with Receiver(token="t0ken") as receiver:
        receiver.intercept = intercept
        settings = make_settings(
            tmp_path,
            broker.url,
            http_sink={"url": receiver.url, "token": "t0ken", "gzip": True, "batch_max_events": 1},
        )
        async with running_gateway(settings, clock) as gateway:
            await device.send([("lantern/s1/scanner/till-1", _serial_scan(i)) for i in range(3)])
            await wait_until(lambda: len(receiver.events) == 2)
            # The receiver holds an event before its answer reaches the sink, which counts it.
            await wait_until(lambda: sink_delivered(gateway) == 2)
            (sink,) = [s for s in status(gateway).sinks() if s["name"] == "http"]
            assert sink["parked"] == 1
        rows = outbox_rows(settings, "SELECT status, reason, body FROM parked")
    assert seen_encodings[0] == "gzip"
    ((parked_status, reason, body),) = rows
    assert parked_status == 400
    assert str(reason).startswith("400 Bad Request")
    # The first scan was refused with 429 then 400: it is the parked one.
    assert json.loads(str(body))[0]["data"]["ai"]["21"] == "SN000000"


async def test_receiver_decompresses_gzip_batches(receiver: Receiver) -> None:
    body = gzip.compress(json.dumps([{"id": "1", "source": "/s", "type": "t"}]).encode())
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            receiver.url,
            data=body,
            headers={
                "Content-Type": "application/cloudevents-batch+json",
                "Content-Encoding": "gzip",
            },
        ) as response,
    ):
        assert response.status == 200
    assert list(receiver.events) == [("/s", "1")]


@pytest.mark.settings(outbox={"batch_max_messages": 250})
async def test_a_backlog_is_committed_in_bounded_batches_in_order(
    gateway_settings: Settings, clock: ManualClock, device: Publisher
) -> None:
    """A persistent session's backlog arrives all at once: it still commits in batches of at
    most batch_max_messages, each acknowledged after its own commit, in order."""
    scans = [("lantern/s1/scanner/till-1", f"]C1010590123412345721{n:05d}") for n in range(2000)]
    async with running_gateway(gateway_settings, clock):
        pass  # the session now exists: the broker keeps what follows for us
    await device.send(scans)
    async with running_gateway(gateway_settings, clock) as gateway:
        await wait_until(lambda: status(gateway).events_committed == len(scans))
    rows = outbox_rows(gateway_settings, "SELECT created_at, seq, body FROM events")
    batch_sizes: dict[float, int] = {}
    for created_at, _, _ in rows:
        batch_sizes[created_at] = batch_sizes.get(created_at, 0) + 1
    assert max(batch_sizes.values()) <= 250
    assert len(batch_sizes) >= len(scans) // 250
    in_commit_order = [
        json.loads(body)["data"]["ai"]["21"] for _, _, body in sorted(rows, key=lambda r: r[1])
    ]
    assert in_commit_order == [f"{n:05d}" for n in range(2000)]
