"""Drain benchmark: how fast each sink empties the outbox once the far side is back.

    .venv/bin/python -m tests.benchmarks.drain [--events 200000] [--runs 3] [--sinks http,nats,mqtt]

For each sink: the outbox (synchronous=FULL, as shipped) is filled with N barcode-read
CloudEvents while the far side is down and the sink is already retrying; then the far side
starts, the sink is woken (so its backoff is not what is timed), and we time from the wake to
the last event confirmed (2xx, PubAck, PUBACK) and its cursor written. The far sides run in
their own processes, as they would on other machines: the receiver (gateway/receiver.py, in a
child process), ``nats-server -js`` with file storage, a second Mosquitto.

Prints one line per run and a summary line per sink, the median of the runs with the spread;
the goal is >= 50,000 events/s per sink on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from gateway.config import (
    HttpSinkSettings,
    MqttBridgeSinkSettings,
    NatsSinkSettings,
    OutboxSettings,
)
from gateway.localbroker import Mosquitto, free_port, wait_for_port
from gateway.outbox import Outbox
from gateway.receiver import Receiver
from gateway.sinks.base import Sink
from gateway.sinks.http import HttpSink
from gateway.sinks.jetstream import NatsSink
from gateway.sinks.localnats import NatsServer
from gateway.sinks.mqtt_bridge import MqttBridgeSink
from tests.gateway.sink_parts import commit_scans, running, serials
from tests.helpers import wait_until

GOAL_EVENTS_PER_S = 50_000
# A drain slower than this is a failure to report, not a figure (200,000 events at 1,000/s).
_DRAIN_TIMEOUT_S = 600.0
_STORE = "bench"


def _serve_receiver(port: int) -> None:
    async def serve() -> None:
        receiver = Receiver(port=port)
        await receiver.start()
        await asyncio.Event().wait()

    asyncio.run(serve())


class _ReceiverProcess:
    """The HTTP receiver in a child process, so it does not share the sink's core."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: multiprocessing.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> None:
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve_receiver, args=(self.port,), daemon=True
        )
        self._process.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join()


@contextmanager
def _far_side(kind: str, directory: Path) -> Any:
    """(the far side, not started yet, and a function making the sink that uses it)."""
    far: _ReceiverProcess | NatsServer | Mosquitto
    make: Callable[[Outbox], Sink]
    if kind == "http":
        far = _ReceiverProcess()
        make = lambda outbox: HttpSink(HttpSinkSettings(url=far.url), outbox)  # noqa: E731
    elif kind == "nats":
        far = NatsServer(directory=directory / "nats")
        make = lambda outbox: NatsSink(  # noqa: E731
            NatsSinkSettings(url=far.url, create_stream=True), _STORE, outbox
        )
    else:
        broker_dir = directory / "mosquitto"
        broker_dir.mkdir()
        far = Mosquitto(directory=broker_dir)
        make = lambda outbox: MqttBridgeSink(  # noqa: E731
            MqttBridgeSinkSettings(url=far.url), _STORE, outbox
        )
    try:
        yield far, make
    finally:
        far.stop()


async def drain_once(kind: str, events: int) -> tuple[float, int]:
    """Seconds from the far side's return to the last event confirmed, and the retries."""
    directory = Path(tempfile.mkdtemp(prefix=f"lantern-drain-{kind}-"))
    try:
        far_side: AbstractContextManager[Any] = _far_side(kind, directory)
        with far_side as (far, make):
            async with Outbox(directory / "outbox.sqlite", OutboxSettings()) as outbox:
                await commit_scans(outbox, serials(events), per_batch=10_000)
                sink = make(outbox)
                async with running(sink):
                    # The far side is down, and the sink knows it.
                    await wait_until(lambda: sink.retries > 0)
                    await asyncio.to_thread(far.start)
                    started = time.perf_counter()
                    sink.wake()

                    async def drained() -> bool:  # every event confirmed, its cursor written
                        return await outbox.cursor(sink.name) == outbox.last_seq

                    await wait_until(drained, timeout_s=_DRAIN_TIMEOUT_S)
                    return time.perf_counter() - started, sink.retries
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sinks", default="http,nats,mqtt")
    args = parser.parse_args()
    for kind in args.sinks.split(","):
        rates = []
        for run in range(1, args.runs + 1):
            seconds, retries = asyncio.run(drain_once(kind, args.events))
            rates.append(args.events / seconds)
            print(
                f"drain {kind} run {run}: {args.events} events in {seconds:.2f} s ="
                f" {rates[-1]:,.0f} events/s ({retries} retries while the far side was down)",
                flush=True,
            )
        median = statistics.median(rates)
        print(
            f"drain {kind}: median {median:,.0f} events/s over {args.runs} runs"
            f" (spread {min(rates):,.0f}-{max(rates):,.0f}); goal {GOAL_EVENTS_PER_S:,}:"
            f" {'met' if median >= GOAL_EVENTS_PER_S else 'NOT met'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
