"""The benchmarks' device side, in a process of its own: a seeded stream of ESPresense
sightings published at QoS 1, as fast as the broker takes them or paced at a rate.

    python -m tests.benchmarks.publisher --port P --messages N [--rate R] [--times FILE]

With ``--times`` it writes each message's publish time (``time.time()``, one per line), so
that a benchmark can pair it with the wall time its event was committed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

VISITORS = 10_000  # a big store's day of distinct beacons, all tracked at once
ROOMS = [f"aisle-{n}" for n in range(1, 11)]
TOPIC_FILTER = "espresense/devices/+/+"


def sightings(count: int) -> Iterator[tuple[str, bytes]]:
    """The same stream every time: visitor after visitor, each in one of the rooms."""
    for number in range(count):
        major, minor = divmod(number % VISITORS, 100)
        visitor = f"iBeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-{major}-{minor}"
        room = ROOMS[(number // VISITORS + number) % len(ROOMS)]
        payload = {
            "id": visitor,
            "rssi@1m": -59,
            "rssi": -60.0 - number % 30,
            "raw": 2.1,
            "distance": 1.0 + (number % 40) / 10,
            "speed": 0.0,
            "mac": f"c2f0aa{number % VISITORS:06x}",
            "interval": 1000,
        }
        yield f"espresense/devices/{visitor}/{room}", json.dumps(payload).encode()


def publish(port: int, count: int, rate: float | None, times: Path | None) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{time.time_ns()}")
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    published: list[float] = []
    infos = []
    started = time.perf_counter()
    for index, (topic, payload) in enumerate(sightings(count)):
        if rate is not None and (delay := started + index / rate - time.perf_counter()) > 0:
            time.sleep(delay)
        published.append(time.time())
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()
    if times is not None:
        times.write_text("".join(f"{at:.6f}\n" for at in published))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--times", type=Path, default=None)
    args = parser.parse_args()
    publish(args.port, args.messages, args.rate, args.times)


if __name__ == "__main__":
    main()
