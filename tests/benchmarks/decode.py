"""Decode rate per device family, single core: messages/s through each pure decoder.

    .venv/bin/python -m tests.benchmarks.decode [--seconds 1.0]

Each family decodes the test vectors of tests/fixtures/ (and simulator traffic where the
fixtures have only a line or two) in a loop for the given time; also the raw-advertisement
parser. Figures only: no target is asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from devices.ble import parse_advertisement
from devices.model import Message
from firmware_stubs.store_sim import StoreSimulator
from gateway.config import DEFAULT_SOURCES
from gateway.router import Router, default_decoders
from tests.fixture_files import load_json, load_jsonl

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def messages_by_family() -> dict[str, list[Message]]:
    router = Router(DEFAULT_SOURCES, "s1", default_decoders())
    raw: list[tuple[str, bytes]] = []
    for line in load_jsonl("espresense.jsonl") + load_jsonl("theengs_raw.jsonl"):
        raw.append((line["topic"], json.dumps(line["payload"]).encode()))
    raw.append(("lantern/s1/wifi/meraki", json.dumps(load_json("meraki_v3_wifi.json")).encode()))
    raw += [
        ("lantern/s1/reorder/coffee-1", json.dumps(line["payload"]).encode())
        for line in load_jsonl("reorder.jsonl")
    ]
    raw += [
        ("lantern/s1/scanner/till-1", scan["scan"].encode())
        for scan in load_json("gs1_scans.json")
        if "error" not in scan["expect"]
    ]
    stream = StoreSimulator("s1", seed=5, shoppers=200).messages(100.0)
    raw += [(topic, payload.encode()) for _, topic, payload in (next(stream) for _ in range(500))]
    families: dict[str, list[Message]] = {}
    for topic, payload in raw:
        route = router.route(topic)
        if route is not None:
            families.setdefault(route.kind, []).append(Message(topic, payload, NOW, route.fields))
    return families


def rate(work: Callable[[], object], seconds: float) -> float:
    count = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            work()
        count += 100
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    decoders = default_decoders()
    print(f"{'family':<16}{'messages':>10}{'msg/s':>12}")
    for kind, messages in sorted(messages_by_family().items()):
        decode = decoders[kind]
        index = 0

        def one(
            decode: Callable[[Message], object] = decode, messages: list[Message] = messages
        ) -> object:
            nonlocal index
            index = (index + 1) % len(messages)
            return decode(messages[index])

        print(f"{kind:<16}{len(messages):>10}{rate(one, args.seconds):>12,.0f}")
    adverts = [bytes.fromhex(entry["adv_hex"]) for entry in load_json("ble_adverts.json")]
    position = 0

    def one_advert() -> object:
        nonlocal position
        position = (position + 1) % len(adverts)
        return parse_advertisement(adverts[position])

    print(f"{'raw adv (GAP)':<16}{len(adverts):>10}{rate(one_advert, args.seconds):>12,.0f}")


if __name__ == "__main__":
    main()
