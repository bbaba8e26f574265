"""The benchmark's publisher, in a process of its own so that it takes no CPU from the measured one.

    python -m tests.benchmarks.nodered.publisher PORT FILE

FILE holds one JSON array ``[topic, payload]`` a line; each is published at QoS 1 to the broker
on 127.0.0.1:PORT, and the process exits once the broker has acknowledged every one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

INFLIGHT_MESSAGES = 1000  # enough that the publisher waits on the broker's acks only rarely
ACK_TIMEOUT_S = 120.0  # a loaded 2-core box acknowledges 50,000 messages well within this


def publish(port: int, messages: Iterable[tuple[str, str]]) -> int:
    """Publish at QoS 1; returns how many, once the broker has acknowledged all of them."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
    client.max_inflight_messages_set(INFLIGHT_MESSAGES)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + ACK_TIMEOUT_S
        for info in infos:
            info.wait_for_publish(timeout=max(deadline - time.monotonic(), 0.0))
        unacknowledged = sum(not info.is_published() for info in infos)
        if unacknowledged:
            raise SystemExit(f"error: the broker did not acknowledge {unacknowledged} messages")
    finally:
        client.disconnect()
        client.loop_stop()
    return len(infos)


def main() -> None:
    port, path = int(sys.argv[1]), Path(sys.argv[2])
    with path.open() as lines:
        messages = [(topic, payload) for topic, payload in map(json.loads, lines)]
    start = time.perf_counter()
    count = publish(port, messages)
    print(f"published {count} messages in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
