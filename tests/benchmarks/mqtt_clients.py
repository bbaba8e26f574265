"""MQTT receive rate of the clients Lantern could be built on, side by side in one run.

    .venv/bin/python -m tests.benchmarks.mqtt_clients [--messages 50000]
    (aiomqtt and gmqtt come with: pip install -e '.[bench]')

Each client's persistent session subscribes at QoS 1 and goes away; the same stream is
published meanwhile (tests/benchmarks/publisher.py, its own process); the client comes back
and is timed from its first message to its last, acknowledging each, doing nothing else:

- ``mosquitto_sub -q 1`` (C): the broker's own limit;
- paho-mqtt, its own network thread (the usual "no-op subscriber");
- aiomqtt (asyncio over paho), ``async for message in client.messages``;
- gmqtt (asyncio, its own protocol);
- Lantern's client (gateway/mqtt.py over gateway/mqttwire.py), acknowledging each message
  as ingest does after a commit: a whole read's PUBACKs in one write.

Figures and the ratio to paho; no target is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.batch import Inbound
from gateway.clock import SystemClock
from gateway.config import MqttSettings
from gateway.localbroker import Mosquitto
from gateway.mqtt import MqttClient
from tests.benchmarks.ingest import mosquitto_sub_rate, noop_paho_rate, publish
from tests.benchmarks.publisher import TOPIC_FILTER

_SESSION_EXPIRY_S = 3600


async def drain(
    port: int, messages: int, session: Callable[[Callable[[], None]], Awaitable[None]]
) -> float:
    """Open the session, publish the backlog, come back and time the drain."""
    marks: list[float] = []
    done = asyncio.Event()

    def received() -> None:
        marks.append(time.perf_counter())
        if len(marks) == messages:
            done.set()

    opened = asyncio.create_task(session(lambda: None))
    await asyncio.sleep(0.5)  # connected and subscribed: the session exists
    opened.cancel()
    await asyncio.gather(opened, return_exceptions=True)
    await asyncio.to_thread(publish, port, messages)
    draining = asyncio.create_task(session(received))
    await asyncio.wait_for(done.wait(), 600)
    draining.cancel()
    await asyncio.gather(draining, return_exceptions=True)
    return (messages - 1) / (marks[-1] - marks[0])


def lantern_session(port: int) -> Callable[[Callable[[], None]], Awaitable[None]]:
    async def session(received: Callable[[], None]) -> None:
        def on_message(inbound: Inbound) -> None:
            client.ack(inbound)
            received()

        settings = MqttSettings(url=f"mqtt://127.0.0.1:{port}", session_expiry_s=_SESSION_EXPIRY_S)
        client = MqttClient(
            settings,
            "bench-lantern",
            "bench/status",
            [(TOPIC_FILTER, 1)],
            on_message,
            SystemClock(),
        )
        await client.run()

    return session


def aiomqtt_session(port: int) -> Callable[[Callable[[], None]], Awaitable[None]]:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    async def session(received: Callable[[], None]) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = _SESSION_EXPIRY_S
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier="bench-aiomqtt",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            max_queued_incoming_messages=0,
        ) as client:
            await client.subscribe(TOPIC_FILTER, qos=1)
            async for _ in client.messages:
                received()

    return session


def gmqtt_session(port: int) -> Callable[[Callable[[], None]], Awaitable[None]]:
    import gmqtt

    async def session(received: Callable[[], None]) -> None:
        client = gmqtt.Client("bench-gmqtt", clean_session=False, session_expiry_interval=3600)

        def on_message(*args: Any) -> int:
            received()
            return 0  # PUBACK success

        client.on_message = on_message
        client.on_connect = lambda client, *args: client.subscribe(TOPIC_FILTER, qos=1)
        await client.connect("127.0.0.1", port, keepalive=60)
        try:
            await asyncio.Event().wait()
        finally:
            await client.disconnect()

    return session


async def measure(messages: int) -> None:
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores, {messages:,}"
          f" messages, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lantern-bench-") as folder:
        broker = Mosquitto(directory=Path(folder))
        broker.start()
        try:
            port = broker.port
            rates = {
                "mosquitto_sub -q 1": await asyncio.to_thread(mosquitto_sub_rate, port, messages),
                "paho (network thread)": await asyncio.to_thread(noop_paho_rate, port, messages),
            }
            sessions = {"lantern (gateway/mqtt.py)": lantern_session}
            for name, module, factory in (
                ("aiomqtt", "aiomqtt", aiomqtt_session),
                ("gmqtt", "gmqtt", gmqtt_session),
            ):
                try:
                    __import__(module)
                except ImportError:
                    print(f"  {name}: not installed (pip install -e '.[bench]')")
                    continue
                sessions[name] = factory
            for name, session in sessions.items():
                rates[name] = await drain(broker.port, messages, session(broker.port))
        finally:
            broker.stop()
    paho = rates["paho (network thread)"]
    for name, rate in rates.items():
        print(f"  {name:<26} {rate:>10,.0f} msg/s  ({rate / paho:.2f} of paho)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    asyncio.run(measure(args.messages))


if __name__ == "__main__":
    main()
