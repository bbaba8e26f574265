"""Ingest benchmark: Lantern against a no-op paho subscriber, same broker, same stream.

    .venv/bin/python -m tests.benchmarks.ingest [--messages 50000] [--offered-rate 2500]

1. Throughput, backlog drain. A persistent session subscribes at QoS 1 and goes away; the same
   stream of ESPresense sightings (from the store simulator) is published while it is away;
   then it comes back and we time from its first message to its last. (a) a no-op paho
   subscriber (callback counts, paho acks at once), (b) Lantern, to the last *committed* event
   (decode, pseudonymise, CloudEvent, SQLite commit with synchronous=FULL, then ack).
2. Latency at an offered rate: a publisher paces the stream at --offered-rate msg/s to a
   running Lantern; each message's publish time against the end of the commit that made it
   durable gives p50 / p99 publish->commit.
3. Peak RSS of this process (it hosts Lantern's whole ingest path).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_stubs.store_sim import StoreSimulator
from gateway.app import Gateway
from gateway.batch import Batch
from gateway.config import Settings
from gateway.localbroker import Mosquitto
from gateway.outbox import Outbox
from tests.helpers import status


def sighting_stream(count: int) -> list[tuple[str, str]]:
    simulator = StoreSimulator("bench", seed=7, shoppers=2000)
    return [
        (topic, payload)
        for _, topic, payload in itertools.islice(
            simulator.messages(2500, scans_per_min=0.001), count
        )
        if topic.startswith("espresense/")
    ]


def publish(port: int, stream: list[tuple[str, str]], rate: float | None = None) -> list[float]:
    """Publish at QoS 1 (paced when rate is given); returns each message's publish time."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    times: list[float] = []
    infos = []
    start = time.perf_counter()
    for index, (topic, payload) in enumerate(stream):
        if rate is not None:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        times.append(time.perf_counter())
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=60)
    client.loop_stop()
    client.disconnect()
    return times


def noop_subscriber_rate(port: int, stream: list[tuple[str, str]]) -> float:
    client_id = "bench-noop"

    def connect() -> tuple[paho.Client, threading.Event, list[float]]:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        properties.ReceiveMaximum = 2000
        marks: list[float] = []
        done = threading.Event()
        count = 0

        def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
            nonlocal count
            count += 1
            if count == 1:
                marks.append(time.perf_counter())
            if count == len(stream):
                marks.append(time.perf_counter())
                done.set()

        client.on_message = on_message
        client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        client.subscribe("espresense/devices/+/+", qos=1)
        return client, done, marks

    client, _, _ = connect()
    client.loop_start()
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()
    publish(port, stream)
    client, done, marks = connect()
    thread = threading.Thread(target=client.loop_forever, daemon=True)
    thread.start()
    if not done.wait(300):
        raise RuntimeError("the no-op subscriber did not get every message")
    client.disconnect()
    thread.join()
    return (len(stream) - 1) / (marks[1] - marks[0])


class CommitClock:
    """Wraps Outbox.begin_commit to note when each batch became durable (events in order)."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float]] = []  # (events committed so far, time)
        self.first_message_at: float | None = None
        self._committed = 0
        original = Outbox.begin_commit
        clock = self

        def begin_commit(outbox: Outbox, batch: Batch) -> Awaitable[None]:
            if clock.first_message_at is None and batch.events:
                clock.first_message_at = time.perf_counter()
            durable = original(outbox, batch)

            async def timed() -> None:
                await durable
                clock._committed += len(batch.events)
                clock.marks.append((clock._committed, time.perf_counter()))

            return timed()

        Outbox.begin_commit = begin_commit  # type: ignore[method-assign, assignment]

    def reset(self) -> None:
        self.marks.clear()
        self.first_message_at = None
        self._committed = 0


async def lantern_drain_rate(
    settings: Settings, port: int, stream: list[tuple[str, str]], clock: CommitClock
) -> tuple[float, float]:
    """Returns (messages/s from first receipt to last commit, seconds from start to first)."""
    stop = asyncio.Event()
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run(stop))
    await gateway.wait_connected()  # subscribes: the session now exists
    stop.set()
    await task
    await asyncio.to_thread(publish, port, stream)
    clock.reset()
    stop = asyncio.Event()
    gateway = Gateway(settings)
    received_at: list[float] = []
    task = asyncio.create_task(gateway.run(stop))
    await gateway.ready.wait()
    while status(gateway).events_committed < len(stream):
        if not received_at and gateway.ingest.received:
            received_at.append(time.perf_counter())
        await asyncio.sleep(0.001)
    finished = clock.marks[-1][1]
    stop.set()
    await task
    return (len(stream) - 1) / (finished - received_at[0]), 0.0


async def lantern_latency(
    settings: Settings, port: int, stream: list[tuple[str, str]], rate: float, clock: CommitClock
) -> list[float]:
    stop = asyncio.Event()
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run(stop))
    await gateway.wait_connected()
    clock.reset()
    published = await asyncio.to_thread(publish, port, stream, rate)
    while status(gateway).events_committed < len(stream):
        await asyncio.sleep(0.01)
    stop.set()
    await task
    latencies = []
    marks = iter(clock.marks)
    committed, at = next(marks)
    for index, sent in enumerate(published):
        while index >= committed:
            committed, at = next(marks)
        latencies.append(at - sent)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--offered-rate", type=float, default=2500.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    args = parser.parse_args()

    stream = sighting_stream(args.messages)
    broker = Mosquitto()
    broker.start()
    clock = CommitClock()
    try:
        noop = noop_subscriber_rate(broker.port, stream)
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(
                store_id="bench",
                data_dir=Path(data_dir),
                mqtt={"url": broker.url, "client_id": "bench-lantern"},
                sources=[{"kind": "espresense", "topic": "espresense/devices/{id}/{room}"}],
            )
            lantern, _ = asyncio.run(lantern_drain_rate(settings, broker.port, stream, clock))
        latency_stream = stream[: int(args.offered_rate * args.latency_seconds)]
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(
                store_id="bench",
                data_dir=Path(data_dir),
                mqtt={"url": broker.url, "client_id": "bench-lantern-latency"},
                sources=[{"kind": "espresense", "topic": "espresense/devices/{id}/{room}"}],
            )
            latencies = asyncio.run(
                lantern_latency(settings, broker.port, latency_stream, args.offered_rate, clock)
            )
    finally:
        broker.stop()
    quantiles = statistics.quantiles(latencies, n=100)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"stream: {len(stream)} ESPresense sightings at QoS 1, mosquitto on loopback")
    print(f"(a) no-op paho subscriber:          {noop:10.0f} msg/s")
    print(f"(b) lantern, publish -> committed:  {lantern:10.0f} msg/s")
    print(f"ratio (b)/(a):                      {lantern / noop:10.2f}   (goal >= 0.8)")
    print(
        f"latency at {args.offered_rate:.0f} msg/s offered, {len(latencies)} messages: "
        f"p50 {quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms"
    )
    print(f"peak RSS of this process: {peak_rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()
