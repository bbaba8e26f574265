"""Broker persistence: what a kill -9 of the store's Mosquitto loses, and what saving costs.

    .venv/bin/python -m tests.benchmarks.broker_persistence [--rate 1000] [--seconds 20]
        [--kills 3] [--backlog 0,200000] [--settings 1,5,10,changes:1000]

Mosquitto acknowledges a QoS 1 publish (PUBACK) once the message is in its memory and writes
its whole database to disk every ``autosave_interval`` seconds (with ``autosave_on_changes``:
every N queued messages and subscription changes). A kill -9 loses what came since the last
save. For each setting, the shipped ``systemd/mosquitto-lantern.conf`` with only the autosave
lines changed:

1. A persistent session (the gateway's stand-in) subscribes at QoS 1 and goes away; its
   session is saved (SIGUSR1), as a long-standing one would be. With ``--backlog`` N, N
   messages are queued for it first and saved: the broker's state during a gateway outage.
2. A publisher sends sequence-numbered QoS 1 messages at ``--rate`` for ``--seconds`` plus a
   random part of a save period (so the kill falls anywhere between two saves), then SIGKILL.
3. The broker restarts on the same folder; the session comes back and takes what survived.

Acked counts every message PUBACKed, the backlog's included. Lost: messages PUBACKed to the
publisher and never received after the restart. Window: how long before the kill the oldest
lost message was acknowledged (the loss a store must state).
Cost, over the load phase: the broker's CPU time, the bytes it wrote to storage
(``/proc/PID/io`` write_bytes), its saves, its database and memory at the kill, and the
longest a PUBACK took (mosquitto is one thread: while it writes its database it answers no
one).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from tests.boxbroker import BoxBroker, drain, subscribe_and_leave, wait_for

TOPIC = "lantern/bench/scanner/till-1"
USER, PASSWORD = CREDENTIALS = "bench", "bench-secret"
SUBSCRIBER_ID = "bench-gateway"
_PUBLISH_INFLIGHT = 1_000  # PUBACKs outstanding at once, as a busy store's devices together
# Sent and not yet acknowledged, queued in paho included: paho numbers a message when it is
# queued and mids wrap at 65,535, so more than that outstanding would reuse a live one.
_MAX_OUTSTANDING = 30_000


@dataclass(frozen=True, slots=True)
class Setting:
    label: str
    overrides: dict[str, str]
    period_s: float  # how far apart two saves are at the offered rate, for the kill's phase

    @staticmethod
    def parse(text: str, rate: float) -> Setting:
        if text.startswith("changes:"):
            changes = int(text.removeprefix("changes:"))
            return Setting(
                f"every {changes} changes",
                {"autosave_on_changes": "true", "autosave_interval": str(changes)},
                changes / rate,
            )
        seconds = int(text)
        return Setting(
            f"every {seconds} s",
            {"autosave_on_changes": "false", "autosave_interval": text},
            seconds + 1.0,  # it saves once more than `seconds` whole seconds have passed
        )


class Publisher:
    """QoS 1 publisher that notes when each sequence number was sent and acknowledged."""

    def __init__(self, port: int) -> None:
        self.sent_at: dict[int, float] = {}
        self.acked_at: dict[int, float] = {}
        # paho calls on_publish holding its own lock, so ours is never held across a publish();
        # a PUBACK that beats us to the mapping waits in _early (mids are reused only 65,535
        # publishes later).
        self._seq_of_mid: dict[int, int] = {}
        self._early: dict[int, float] = {}
        self._lock = threading.Lock()
        self._next = 0
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-pub-{time.time_ns()}",
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        client.username_pw_set(USER, PASSWORD)
        client.max_inflight_messages_set(_PUBLISH_INFLIGHT)
        client.max_queued_messages_set(0)
        client.on_publish = self._on_publish
        client.connect("127.0.0.1", port)
        client.loop_start()
        self._client = client

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, *_: object) -> None:
        with self._lock:
            seq = self._seq_of_mid.pop(mid, None)
            if seq is None:
                self._early[mid] = time.monotonic()
            else:
                self.acked_at[seq] = time.monotonic()

    def send(self, rate: float | None, seconds: float = math.inf, count: float = math.inf) -> None:
        """At ``rate`` msg/s (None: as fast as the broker takes them), for ``seconds`` or
        ``count`` messages, whichever ends first."""
        start = time.monotonic()
        first = self._next
        while (now := time.monotonic()) < start + seconds and self._next - first < count:
            due = start + (self._next - first) / rate if rate else now
            if due > now:
                time.sleep(due - now)
            while len(self.sent_at) - len(self.acked_at) >= _MAX_OUTSTANDING:
                time.sleep(0.001)
            seq = self._next
            self._next += 1
            payload = f'{{"seq": {seq}, "code": "]C1010590123412345715210526"}}'
            self.sent_at[seq] = time.monotonic()
            mid = self._client.publish(TOPIC, payload, qos=1).mid
            with self._lock:
                if mid in self._early:
                    self.acked_at[seq] = self._early.pop(mid)
                else:
                    self._seq_of_mid[mid] = seq

    def wait_acked(self) -> None:
        wait_for(lambda: len(self.acked_at) == len(self.sent_at), timeout_s=120)

    def close(self) -> None:
        self._client.loop_stop()


def seq_of(payload: bytes) -> int:
    return int(payload.split(b",", 1)[0].removeprefix(b'{"seq": '))


@dataclass(frozen=True, slots=True)
class Trial:
    acked: int
    lost: int
    window_s: float  # the oldest lost message was acknowledged this long before the kill
    cpu_s: float
    written_bytes: int
    load_s: float
    saves: int
    database_bytes: int
    rss_bytes: int
    longest_ack_s: float


def trial(setting: Setting, rate: float, seconds: float, backlog: int, rng: random.Random) -> Trial:
    broker = BoxBroker({USER: PASSWORD}, setting.overrides)
    try:
        broker.start()
        subscribe_and_leave(broker.port, SUBSCRIBER_ID, TOPIC, CREDENTIALS)
        broker.save()
        publisher = Publisher(broker.port)
        if backlog:
            publisher.send(None, count=backlog)  # a queue built over an outage, only faster
            publisher.wait_acked()
            broker.save()
        process = psutil.Process(broker.pid)
        cpu, io = process.cpu_times(), process.io_counters()
        saves_before = broker.log_text().count("Saving in-memory database")
        load_from = len(publisher.sent_at)
        started = time.monotonic()
        publisher.send(rate, seconds + rng.uniform(0, min(setting.period_s, seconds)))
        cpu_after, io_after = process.cpu_times(), process.io_counters()
        rss_bytes = process.memory_info().rss
        saves = broker.log_text().count("Saving in-memory database") - saves_before
        broker.kill()
        killed = time.monotonic()
        load_s = killed - started
        time.sleep(0.5)  # PUBACKs read before the kill are still being handled by paho's thread
        publisher.close()
        database_bytes = broker.database.stat().st_size
        broker.start()
        received = {seq_of(payload) for payload in drain(broker.port, SUBSCRIBER_ID, CREDENTIALS)}
    finally:
        broker.stop()
        shutil.rmtree(broker.directory)
    acked = dict(publisher.acked_at)
    lost = [seq for seq in acked if seq not in received]
    latencies = [acked[seq] - publisher.sent_at[seq] for seq in acked if seq >= load_from]
    return Trial(
        acked=len(acked),
        lost=len(lost),
        window_s=max((killed - acked[seq] for seq in lost), default=0.0),
        cpu_s=(cpu_after.user + cpu_after.system) - (cpu.user + cpu.system),
        written_bytes=io_after.write_bytes - io.write_bytes,
        load_s=load_s,
        saves=saves,
        database_bytes=database_bytes,
        rss_bytes=rss_bytes,
        longest_ack_s=max(latencies, default=0.0),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1_000.0, help="QoS 1 messages per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="load before each kill")
    parser.add_argument("--kills", type=int, default=3, help="kills per setting and backlog")
    parser.add_argument("--backlog", default="0,200000", help="messages queued before the load")
    parser.add_argument(
        "--settings",
        default="1,2,5,10,30,changes:100,changes:1000",
        help="autosave_interval seconds, or changes:N for autosave_on_changes",
    )
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    settings = [Setting.parse(text, args.rate) for text in args.settings.split(",")]
    print(
        f"QoS 1 at {args.rate:,.0f} msg/s, {args.seconds:.0f} s (+ a random part of a save"
        f" period) before each SIGKILL, {args.kills} kills per row; Mosquitto"
        f" {broker_version()}, the shipped config with only the autosave lines changed"
    )
    header = (
        f"{'autosave':>20} {'backlog':>8} {'acked':>8} {'lost max':>9} {'lost mean':>9}"
        f" {'window max s':>12} {'saves/min':>9} {'CPU %':>6} {'disk MB/s':>9}"
        f" {'db MB':>7} {'RSS MB':>7} {'longest PUBACK ms':>17}"
    )
    print(header)
    for backlog in (int(text) for text in args.backlog.split(",")):
        for setting in settings:
            trials = [
                trial(setting, args.rate, args.seconds, backlog, rng) for _ in range(args.kills)
            ]
            load_s = sum(t.load_s for t in trials)
            print(
                f"{setting.label:>20} {backlog:>8,} {sum(t.acked for t in trials):>8,}"
                f" {max(t.lost for t in trials):>9,}"
                f" {sum(t.lost for t in trials) / len(trials):>9,.0f}"
                f" {max(t.window_s for t in trials):>12.2f}"
                f" {sum(t.saves for t in trials) * 60 / load_s:>9.1f}"
                f" {100 * sum(t.cpu_s for t in trials) / load_s:>6.1f}"
                f" {sum(t.written_bytes for t in trials) / load_s / 1e6:>9.2f}"
                f" {max(t.database_bytes for t in trials) / 1e6:>7.1f}"
                f" {max(t.rss_bytes for t in trials) / 1e6:>7.1f}"
                f" {1000 * max(t.longest_ack_s for t in trials):>17.0f}",
                flush=True,
            )


def broker_version() -> str:
    result = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True)
    return result.stdout.split("\n", 1)[0].removeprefix("mosquitto version ")


if __name__ == "__main__":
    main()
