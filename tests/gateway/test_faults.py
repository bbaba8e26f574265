"""The store's own failures, for real: a full disk (SQLite's page cap standing in for it), an
outbox budget flooded with sightings or full of events that are never dropped. The gateway
loses nothing, keeps its page up, says why, and resumes by itself."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import Settings
from gateway.localbroker import Mosquitto
from gateway.outbox import FAILPOINT_MAX_PAGE_COUNT_ENV
from gateway.receiver import Receiver
from tests.gateway.console import WEB_TOKENS, bearer
from tests.helpers import (
    Publisher,
    make_settings,
    outbox_rows,
    running_gateway,
    status,
    wait_until,
)

MIB = 1024 * 1024


def serial_scan(number: int) -> tuple[str, str]:
    return (f"lantern/s1/scanner/till-{number % 3}", f"]C1010950110153100021SN{number:06d}")


def sighting(number: int) -> tuple[str, str]:
    visitor = f"iBeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-7-{number}"
    return (
        f"espresense/devices/{visitor}/aisle-{number % 5}",
        json.dumps({"id": visitor, "rssi": -70.0, "distance": 3.2, "int": 1000}),
    )


@pytest.fixture
async def central() -> AsyncIterator[Receiver]:
    """The central record, down until the test brings it up (on the URL the gateway has)."""
    receiver = Receiver()
    await receiver.start()
    await receiver.stop()
    yield receiver
    await receiver.stop()


def settings_for(
    tmp_path: Path, broker: Mosquitto, central: Receiver, **overrides: Any
) -> Settings:
    overrides.setdefault("http_sink", {"url": central.url})
    return make_settings(tmp_path / "data", broker.url, web={"tokens": WEB_TOKENS}, **overrides)


async def page_status(gateway: Gateway) -> dict[str, Any]:
    """What a technician sees, over HTTP, while it lasts."""
    assert gateway.web is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway.web.url}/api/status", headers=bearer("technician")) as response,
    ):
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def drained(gateway: Gateway, central: Receiver, events: int) -> None:
    """The central record is back: deliveries make room, the committer's retries (once a
    second) find it, until ``events`` reached the central record."""
    await central.start()
    ingest = gateway.ingest
    await wait_until(
        lambda: len(central.events) >= events and ingest.settled == ingest.received, timeout_s=60
    )


def serials(central: Receiver) -> list[str]:
    return sorted(
        e["data"]["ai"]["21"] for e in central.deliveries if e["type"] == "lantern.scan.read"
    )


async def test_a_full_disk_stops_acknowledging_loses_nothing_and_resumes_by_itself(
    broker: Mosquitto,
    tmp_path: Path,
    clock: ManualClock,
    central: Receiver,
    device: Publisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAILPOINT_MAX_PAGE_COUNT_ENV, "64")  # 256 KB: some 400 scans
    settings = settings_for(tmp_path, broker, central, outbox={"batch_max_messages": 50})
    total = 1200
    async with running_gateway(settings, clock) as gateway:
        await device.send([serial_scan(n) for n in range(total)])
        await wait_until(lambda: gateway.ingest.waiting_for_room is not None)
        page = await page_status(gateway)
        assert page["outbox"]["waiting_for_room"].startswith("no room on the disk")
        assert gateway.web is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.web.url}/readyz") as response:
                assert response.status == 503
                assert "outbox: no room on the disk" in await response.text()
            metrics = f"{gateway.web.url}/metrics"
            async with session.get(metrics, headers=bearer("technician")) as response:
                assert "lantern_outbox_waiting_for_room 1.0" in await response.text()
        assert gateway.ingest.settled < total  # the rest waits at the broker, unacknowledged
        await drained(gateway, central, total)
        assert (await page_status(gateway))["outbox"]["waiting_for_room"] is None
    assert serials(central) == [f"SN{n:06d}" for n in range(total)]  # each once, none lost
    assert outbox_rows(settings, "PRAGMA integrity_check") == [("ok",)]


async def test_a_flood_of_sightings_over_the_budget_drops_only_sightings(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, central: Receiver, device: Publisher
) -> None:
    settings = settings_for(
        tmp_path,
        broker,
        central,
        # Batches and pages small beside the budget, as 1,000 messages are beside 1 GiB.
        outbox={"max_bytes": MIB, "batch_max_messages": 100},
        # The sightings are forwarded too: dropping one is a loss for this sink, counted.
        http_sink={"url": central.url, "exclude_types": [], "batch_max_events": 50},
    )
    sightings, scans = 6000, 200
    messages = [sighting(n) for n in range(sightings)]
    for n in range(scans):  # among them, now and then, a scan
        messages.insert(n * 30, serial_scan(n))
    async with running_gateway(settings, clock) as gateway:
        await device.send(messages)
        await wait_until(lambda: gateway.ingest.settled == len(messages))
        page = await page_status(gateway)
        dropped = page["outbox"]["dropped"]["http"]
        assert dropped > 0
        assert page["outbox"]["used_bytes"] <= MIB
        assert page["outbox"]["waiting_for_room"] is None  # never stalled: sightings made room
        await drained(gateway, central, scans + sightings - dropped)
    assert serials(central) == [f"SN{n:06d}" for n in range(scans)]
    forwarded = [e for e in central.deliveries if e["type"] == "lantern.presence.sighted"]
    assert len(forwarded) + dropped == sightings
    assert len(central.events) == len(central.deliveries)  # nothing twice


async def test_a_budget_full_of_scans_waits_for_the_central_record_then_resumes(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, central: Receiver, device: Publisher
) -> None:
    settings = settings_for(tmp_path, broker, central, outbox={"max_bytes": MIB})
    total = 4000  # about 2 MiB of scans: twice the budget, none of it droppable
    async with running_gateway(settings, clock) as gateway:
        await device.send([serial_scan(n) for n in range(total)])
        await wait_until(lambda: gateway.ingest.waiting_for_room is not None)
        page = await page_status(gateway)
        assert "within the budget (outbox.max_bytes)" in page["outbox"]["waiting_for_room"]
        assert status(gateway).events_committed < total
        await drained(gateway, central, total)
    assert serials(central) == [f"SN{n:06d}" for n in range(total)]


@pytest.mark.slow  # real backoff: seconds of 503s
async def test_a_central_record_answering_503_for_a_while_loses_nothing_and_is_caught_up_fast(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, device: Publisher
) -> None:
    """The HTTP sink's default backoff (0.5 s, doubling, capped at 10 s) after a stretch of
    503s: the first delivery once the record is healthy comes within the cap, and no scan is
    lost or sent under two ids."""
    unhealthy = True
    refusals = 0

    async def intercept(request: web.Request) -> int | None:
        nonlocal refusals
        if unhealthy:
            refusals += 1
            return 503
        return None

    async with Receiver() as central:
        central.intercept = intercept
        settings = settings_for(
            tmp_path,
            broker,
            central,
            http_sink={"url": central.url, "retry_min_s": 0.5, "retry_max_s": 10.0},
        )
        async with running_gateway(settings, clock):
            await device.send([serial_scan(n) for n in range(300)])
            await wait_until(lambda: refusals >= 5, timeout_s=30)  # backing off, several times
            unhealthy = False
            back = time.monotonic()
            await wait_until(lambda: len(central.events) >= 1, timeout_s=15)
            first_delivery_s = time.monotonic() - back
            await wait_until(lambda: len(central.events) == 300)
    assert first_delivery_s <= 10.5, first_delivery_s
    assert serials(central) == [f"SN{n:06d}" for n in range(300)]
    assert len(central.deliveries) == 300  # no batch resent once it was taken
