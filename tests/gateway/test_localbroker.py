"""The test broker keeps what a store's broker keeps: a restarted Mosquitto still holds a
persistent session's queue, and writes its log (started as root, it stays the user it was
started as, so it can write its own folder)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.localbroker import Mosquitto
from tests.helpers import Publisher, SavingMosquitto, Subscriber, wait_until

TOPIC = "store/s1/staff/notice"


@asynccontextmanager
async def started(mosquitto: Mosquitto) -> AsyncIterator[Mosquitto]:
    await asyncio.to_thread(mosquitto.start)
    try:
        yield mosquitto
    finally:
        await asyncio.to_thread(mosquitto.stop)


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    async with started(Mosquitto(directory=tmp_path)) as mosquitto:
        yield mosquitto


@pytest.fixture
async def saving_broker(tmp_path: Path) -> AsyncIterator[SavingMosquitto]:
    async with started(SavingMosquitto(directory=tmp_path)) as mosquitto:
        yield mosquitto


async def queued_for_an_absent_consumer(broker: Mosquitto, count: int) -> str:
    """Subscribe, leave, and have ``count`` messages queued for the session; its client id."""
    client_id = f"absent-consumer-{broker.port}"
    with Subscriber(broker.port, TOPIC, client_id=client_id):
        pass  # subscribed once constructed (its SUBACK came), and gone on leaving
    with Publisher(broker.port) as device:
        await device.send([(TOPIC, str(n)) for n in range(count)])
    return client_id


async def resumed(broker: Mosquitto, client_id: str) -> list[int]:
    """What the session receives when its consumer comes back."""
    with Subscriber(broker.port, TOPIC, client_id=client_id) as consumer:
        await wait_until(lambda: len(consumer.received) >= 100, timeout_s=10)
        return [int(message.payload) for message in consumer.received]


async def test_a_restarted_broker_still_holds_a_persistent_sessions_queue(
    own_broker: Mosquitto,
) -> None:
    client_id = await queued_for_an_absent_consumer(own_broker, 100)
    await asyncio.to_thread(own_broker.stop)  # saves its store on the way out
    await asyncio.to_thread(own_broker.start)
    assert await resumed(own_broker, client_id) == list(range(100))
    log = own_broker.log_text()
    assert "Saving in-memory database" in log and "Error" not in log, log


async def test_a_broker_saved_before_its_sigkill_keeps_the_queue(
    saving_broker: SavingMosquitto,
) -> None:
    client_id = await queued_for_an_absent_consumer(saving_broker, 100)
    await asyncio.to_thread(saving_broker.save)
    await asyncio.to_thread(saving_broker.kill)  # no goodbye, no save on the way out
    await asyncio.to_thread(saving_broker.start)
    assert await resumed(saving_broker, client_id) == list(range(100))
