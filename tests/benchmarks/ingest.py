"""Ingest benchmark: Lantern against the broker's own pace and a no-op paho subscriber, one
broker, one stream, one run.

    .venv/bin/python -m tests.benchmarks.ingest [--messages 50000] [--runs 3]

The stream is ESPresense sightings of 10,000 visitors in 10 rooms (tests/benchmarks/
publisher.py), always published by a process of its own at QoS 1.

1. Backlog drain, for each subscriber: its persistent session subscribes at QoS 1 and goes
   away, the stream is published meanwhile, then it comes back and is timed from its first
   message to its last:
   (a) ``mosquitto_sub -q 1`` (C): the broker's own limit;
   (b) a no-op paho subscriber (the callback counts, paho acknowledges at once): the
       yardstick;
   (c) ``lantern run`` (its own process, 10 zones, 100 rules) to the last *committed*
       event: decode, pseudonymise, presence, rules, CloudEvent, SQLite commit with
       synchronous=FULL, and only then the acknowledgement. Timed from its first commit to
       its last, as the outbox file records them.
2. Latency at an offered rate (``--offered-rate``, 2,500 msg/s): each message's publish time
   against the wall time its event was committed: p50 / p99 publish->commit.
3. Peak RSS of the gateway process alone (VmHWM), with the 10,000 visitors tracked.

Each run ends with one line, ``ingest ratio R (lantern X msg/s, no-op paho Y msg/s,
mosquitto_sub Z msg/s)``; with several runs the medians, and the spread, come last.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import MqttSettings
from gateway.localbroker import Mosquitto
from tests.benchmarks.publisher import ROOMS, TOPIC_FILTER
from tests.benchmarks.rules import chain_rules, store_sections
from tests.helpers import retained_status

RULES = 100
RECEIVE_MAXIMUM = MqttSettings.model_fields["receive_maximum"].default
_SESSION_EXPIRY_S = 3600
_POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class Figures:
    mosquitto_sub: float
    noop_paho: float
    lantern: float
    p50_ms: float
    p99_ms: float
    peak_rss_mib: float

    @property
    def ratio(self) -> float:
        return self.lantern / self.noop_paho

    def line(self) -> str:
        return (
            f"ingest ratio {self.ratio:.2f} (lantern {self.lantern:,.0f} msg/s, no-op paho"
            f" {self.noop_paho:,.0f} msg/s, mosquitto_sub {self.mosquitto_sub:,.0f} msg/s)"
        )


# A yardstick's persistent session ends once it is measured: the broker would otherwise queue
# (and autosave) every later message of the run for it, a load Lantern's figures would carry.
_END_SESSION = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
_END_SESSION.SessionExpiryInterval = 0


def publish(port: int, messages: int, rate: float | None = None, times: Path | None = None) -> None:
    command = [sys.executable, "-m", "tests.benchmarks.publisher", "--port", str(port)]
    command += ["--messages", str(messages)]
    if rate is not None:
        command += ["--rate", str(rate)]
    if times is not None:
        command += ["--times", str(times)]
    subprocess.run(command, check=True)


def mosquitto_sub_rate(port: int, messages: int) -> float:
    client = ["mosquitto_sub", "-p", str(port), "-V", "5", "-q", "1", "-i", "bench-sub"]
    client += ["-t", TOPIC_FILTER]
    base = [*client, "-c", "-x", str(_SESSION_EXPIRY_S)]
    subprocess.run(  # creates the session, then times out
        [*base, "-W", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    publish(port, messages)
    started = time.perf_counter()
    subprocess.run([*base, "-C", str(messages)], stdout=subprocess.DEVNULL, check=True)
    rate = messages / (time.perf_counter() - started)
    subprocess.run(  # a clean start ends the session (see _END_SESSION)
        [*client, "-x", "0", "-W", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return rate


def noop_paho_rate(port: int, messages: int) -> float:
    marks: list[float] = []
    done = threading.Event()

    def connect() -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-noop", protocol=paho.MQTTv5
        )
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = _SESSION_EXPIRY_S
        properties.ReceiveMaximum = RECEIVE_MAXIMUM  # the window Lantern asks for

        def on_message(client: paho.Client, userdata: object, message: object) -> None:
            marks.append(time.perf_counter())
            if len(marks) == messages:
                done.set()

        client.on_message = on_message
        client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        client.subscribe(TOPIC_FILTER, qos=1)
        return client

    client = connect()
    client.loop_start()
    time.sleep(0.5)  # subscribed: the session exists
    client.disconnect()
    client.loop_stop()
    publish(port, messages)
    marks.clear()
    client = connect()
    thread = threading.Thread(target=client.loop_forever, daemon=True)
    thread.start()
    if not done.wait(600):
        raise RuntimeError("the no-op subscriber did not get every message")
    client.disconnect(properties=_END_SESSION)
    thread.join()
    return (messages - 1) / (marks[-1] - marks[0])


class Lantern:
    """``lantern run`` in its own process, with 10 zones and 100 rules."""

    def __init__(self, workdir: Path, broker: Mosquitto) -> None:
        self.data = workdir / "data"
        self._port = broker.port
        rules_dir = workdir / "rules"
        rules_dir.mkdir()
        specs = chain_rules(RULES)
        for spec in specs:
            (rules_dir / f"{spec['id']}.yaml").write_text(yaml.safe_dump(spec))
        self.config = workdir / "store.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "store_id": "bench",
                    "data_dir": str(self.data),
                    "mqtt": {"url": broker.url, "client_id": "bench-lantern"},
                    "web": {"enabled": False},
                    **store_sections(specs, ROOMS),
                    "presence": {"max_visitors": 20_000},
                    "rules": {"dir": str(rules_dir)},
                }
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        # Online on its retained status: connected and subscribed, the backlog on its way.
        while retained_status(self._port, "lantern/bench/gateway/status") != "online":
            if self.process.poll() is not None:
                raise SystemExit(f"lantern run ended at start (exit {self.process.returncode})")
            time.sleep(_POLL_S)

    def stop(self) -> float:
        """Stop (SIGTERM, drained); returns the process's peak RSS in MiB."""
        assert self.process is not None
        peak = self.peak_rss_mib()
        self.process.terminate()
        self.process.wait(60)
        return peak

    def peak_rss_mib(self) -> float:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
        return int(line.split()[1]) / 1024

    def _outbox(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data / 'outbox.sqlite'}?mode=ro", uri=True)

    def wait_for(self, events: int) -> list[float]:
        """The commit time of each sighting's event, in order, once ``events`` are committed.

        Reads only the rows committed since its last look: re-reading the whole table ten times
        a second would take a core from the gateway it measures."""
        times: list[float] = []
        last_seq = 0
        with contextlib.closing(self._outbox()) as conn:
            while True:
                rows = conn.execute(
                    "SELECT seq, type, created_at FROM events WHERE seq > ? ORDER BY seq",
                    (last_seq,),
                ).fetchall()
                if rows:
                    last_seq = rows[-1][0]
                    times += [at for _, kind, at in rows if kind == "lantern.presence.sighted"]
                if len(times) >= events:
                    return times
                time.sleep(0.1)


def lantern_rate(lantern: Lantern, port: int, messages: int) -> float:
    lantern.start()  # subscribes: the session exists
    lantern.stop()
    publish(port, messages)
    lantern.start()
    times = lantern.wait_for(messages)
    first_batch = times.count(times[0])
    return (messages - first_batch) / (times[-1] - times[0])


def lantern_latency(
    lantern: Lantern, port: int, messages: int, rate: float, workdir: Path, before: int
) -> tuple[float, float]:
    published_file = workdir / "published.txt"
    publish(port, messages, rate, published_file)
    committed = lantern.wait_for(before + messages)[before:]
    published = [float(line) for line in published_file.read_text().split()]
    latencies = sorted(
        (done - sent) * 1000 for sent, done in zip(published, committed, strict=True)
    )
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def one_run(messages: int, offered_rate: float, latency_messages: int) -> Figures:
    with tempfile.TemporaryDirectory(prefix="lantern-bench-") as folder:
        workdir = Path(folder)
        broker = Mosquitto(directory=workdir)
        broker.start()
        try:
            sub = mosquitto_sub_rate(broker.port, messages)
            noop = noop_paho_rate(broker.port, messages)
            lantern = Lantern(workdir, broker)
            rate = lantern_rate(lantern, broker.port, messages)
            p50, p99 = lantern_latency(
                lantern, broker.port, latency_messages, offered_rate, workdir, messages
            )
            rss = lantern.stop()
        finally:
            broker.stop()
    figures = Figures(sub, noop, rate, p50, p99, rss)
    print(
        f"  mosquitto_sub -q 1 {sub:>9,.0f} msg/s ({sub / noop:.2f}x the no-op paho subscriber)\n"
        f"  no-op paho         {noop:>9,.0f} msg/s (1.00)\n"
        f"  lantern committed  {rate:>9,.0f} msg/s ({figures.ratio:.2f}; {rate / sub:.2f} of"
        " mosquitto_sub)\n"
        f"  latency at {offered_rate:,.0f} msg/s offered: p50 {p50:.1f} ms, p99 {p99:.1f} ms\n"
        f"  gateway peak RSS   {rss:.1f} MiB (10,000 visitors tracked, {RULES} rules)",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--offered-rate", type=float, default=2_500)
    parser.add_argument("--latency-messages", type=int, default=15_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores", flush=True)
    results = []
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}:", flush=True)
        figures = one_run(args.messages, args.offered_rate, args.latency_messages)
        print(figures.line(), flush=True)
        results.append(figures)
    if args.runs > 1:

        def spread(values: list[float]) -> str:
            return f"{min(values):,.2f}-{max(values):,.2f}"

        ratios = [f.ratio for f in results]
        print(
            f"median of {args.runs}: ratio spread {spread(ratios)}, lantern/mosquitto_sub"
            f" {statistics.median(f.lantern / f.mosquitto_sub for f in results):.2f},"
            f" p99 {statistics.median(f.p99_ms for f in results):.1f} ms (spread"
            f" {spread([f.p99_ms for f in results])}), peak RSS"
            f" {statistics.median(f.peak_rss_mib for f in results):.1f} MiB; the run with the"
            " median ratio:"
        )
        # The last line is one run's, the one with the median ratio (the lower of the middle
        # two for an even count), so that its ratio is its own rates' quotient.
        print(sorted(results, key=lambda f: f.ratio)[(len(results) - 1) // 2].line())


if __name__ == "__main__":
    main()
