"""The MQTT client's own care: a failing callback ends only the connection, backoff starts
afresh after every accepted connection, a publish never waits forever or leaves a waiter."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.batch import Inbound
from gateway.clock import ManualClock
from gateway.config import MqttSettings
from gateway.localbroker import Mosquitto
from gateway.mqtt import MqttClient, NotConnectedError
from tests.helpers import Publisher, wait_until

TOPIC = "lantern/s1/scanner/till-1"


@pytest.fixture
async def own_broker() -> AsyncIterator[Mosquitto]:
    """A broker of this test's own, to stop and start without disturbing the others."""
    mosquitto = Mosquitto()
    await asyncio.to_thread(mosquitto.start)
    yield mosquitto
    await asyncio.to_thread(mosquitto.stop)


def client(broker: Mosquitto, deliver: Callable[[Inbound], None], **settings: Any) -> MqttClient:
    return MqttClient(
        MqttSettings(url=broker.url, **settings),
        f"test-client-{broker.port}",
        "lantern/s1/gateway/status",
        [(TOPIC, 1)],
        deliver,
        ManualClock(datetime(2026, 12, 1, tzinfo=UTC)),
    )


async def test_a_failing_callback_ends_the_connection_not_the_loop(own_broker: Mosquitto) -> None:
    received: list[Inbound] = []
    failures: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: failures.append(context)
    )
    mqtt = client(own_broker, received)

    def deliver(inbound: Inbound) -> None:
        if not received:
            received.append(inbound)
            raise RuntimeError("a bug downstream")
        received.append(inbound)

    mqtt._deliver = deliver  # the first message meets a bug, the redelivery does not
    async with asyncio.TaskGroup() as tasks:
        connection = tasks.create_task(mqtt.run())
        await mqtt.wait_connected()
        with Publisher(own_broker.port) as device:
            await device.send([(TOPIC, "9501101531000")])
        await wait_until(lambda: mqtt.connect_count >= 2 and len(received) >= 2)
        connection.cancel()
    assert failures == []
    assert mqtt.last_error is None or "RuntimeError" in mqtt.last_error
    assert received[1].dup  # unacknowledged on the broken connection: the broker sent it again


async def test_backoff_starts_afresh_after_every_accepted_connection(
    own_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    minimum_s = 0.2
    mqtt = client(own_broker, lambda _: None, reconnect_min_s=minimum_s, reconnect_max_s=30)
    caplog.set_level(logging.WARNING, logger="gateway.mqtt")

    def delays() -> list[float]:
        return [
            float(match[1])
            for record in caplog.records
            if (match := re.search(r"reconnecting in ([0-9.]+) s", record.getMessage()))
        ]

    first_of_each = []
    async with asyncio.TaskGroup() as tasks:
        connection = tasks.create_task(mqtt.run())
        for outage in range(2):  # two short outages, one right after the other
            await mqtt.wait_connected()
            before = len(delays())
            await asyncio.to_thread(own_broker.stop)
            # Three failed attempts while it is down: the backoff grows.
            await wait_until(lambda before=before: len(delays()) >= before + 3)
            first_of_each.append(delays()[before])
            await asyncio.to_thread(own_broker.start)
            await wait_until(lambda expected=outage + 2: mqtt.connect_count == expected)
        connection.cancel()
    # Each outage's first wait is the minimum's (jittered into [min/2, min]), however many
    # attempts the outage before it took.
    assert all(delay <= minimum_s for delay in first_of_each), (first_of_each, delays())


async def test_a_publish_while_down_raises_and_a_cancelled_one_leaves_no_waiter(
    own_broker: Mosquitto,
) -> None:
    mqtt = client(own_broker, lambda _: None)
    with pytest.raises(NotConnectedError):
        await mqtt.publish("store/s1/signage/x", "hello")
    async with asyncio.TaskGroup() as tasks:
        connection = tasks.create_task(mqtt.run())
        await mqtt.wait_connected()
        await mqtt.publish("store/s1/signage/x", "hello")  # acknowledged: returns
        publishing = tasks.create_task(mqtt.publish("store/s1/signage/x", "again"))
        await asyncio.sleep(0)
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
        assert mqtt._publish_waiters == {}
        connection.cancel()
