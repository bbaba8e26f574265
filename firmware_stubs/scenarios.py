"""The example rules' scenarios as recordings (docs/architecture.md), one per rule.

Each scenario is a few minutes of the demo store (``gateway/examples/store.yaml``) in which
its rule should fire, and someone for whom it should not: the backtest tests and the
marketers' documentation both replay them. Deterministic: the files under
``gateway/examples/recordings/`` are exactly what ``python -m firmware_stubs.scenarios``
writes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firmware_stubs.store_sim import LOYALTY_UUID, recording_line

STORE_ID = "demo-store"
# 09:30 in Amsterdam on a Tuesday: within the coffee offer's morning hours.
MORNING = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
_RSSI_AT_1M_DBM = -59
LOYAL_MEMBER = f"iBeacon:{LOYALTY_UUID}-100-3"
PASSER_BY = "c2f0aa000001"  # a phone with a randomised address (local bit set)

Line = tuple[datetime, str, str]


def _espresense(at: datetime, visitor: str, room: str, distance_m: float) -> Line:
    payload = {"id": visitor, "rssi@1m": _RSSI_AT_1M_DBM, "rssi": -59.0, "distance": distance_m}
    if not visitor.startswith("iBeacon:"):
        payload["mac"] = visitor
    return at, f"espresense/devices/{visitor}/{room}", json.dumps(payload)


def _walk(
    start: datetime, visitor: str, stays: list[tuple[str, float]], every_s: float = 2.0
) -> Iterator[Line]:
    """A visitor heard every ``every_s`` by the scanner of each room it stays in, in turn."""
    at = start
    for room, seconds in stays:
        end = at + timedelta(seconds=seconds)
        while at < end:
            yield _espresense(at, visitor, room, 1.5)
            at += timedelta(seconds=every_s)


def coffee_pods() -> list[Line]:
    """The member lingers 60 s at the coffee aisle (offer), goes to the bakery, comes back for
    another minute (limited: one offer a day); a passer-by lingers too (condition false)."""
    member = _walk(
        MORNING,
        LOYAL_MEMBER,
        [("entrance", 10), ("coffee-aisle", 60), ("bakery", 40), ("coffee-aisle", 60)],
    )
    stranger = _walk(MORNING + timedelta(seconds=5), PASSER_BY, [("coffee-aisle", 70)])
    return [*member, *stranger]


def pickup() -> list[Line]:
    """The member walks from the entrance to the pick-up desk; a passer-by does too."""
    member = _walk(MORNING, LOYAL_MEMBER, [("entrance", 8), ("pickup", 30)])
    stranger = _walk(MORNING + timedelta(seconds=3), PASSER_BY, [("entrance", 6), ("pickup", 20)])
    return [*member, *stranger]


def reorder() -> list[Line]:
    """The coffee machine's pods run down, one report a minute, and are refilled."""
    topic = f"lantern/{STORE_ID}/reorder/coffee-machine-1"
    levels = [14, 12, 10, 9, 8, 7, 50]  # requested at 8 (third report at or below 10)
    return [
        (
            MORNING + timedelta(minutes=minute),
            topic,
            json.dumps({"slot": "pods", "level": level, "unit": "count"}),
        )
        for minute, level in enumerate(levels)
    ]


def wifi_path() -> list[Line]:
    """A Wi-Fi shopper's path on the floor plan (Meraki posts every 5 s): aisles 1, 2, 3."""
    topic = f"lantern/{STORE_ID}/wifi/meraki"
    path = [(2.0, 30), (6.0, 40), (10.0, 20)]  # (y in metres: the aisle's middle, seconds)
    lines: list[Line] = []
    at = MORNING
    for y, seconds in path:
        for step in range(int(seconds // 5)):
            at += timedelta(seconds=5)
            lines.append((at, topic, _meraki_post(at, x=2.0 + step, y=y)))
    # The store goes on after the shopper has left: a till scan a minute later is what
    # moves the replayed clock past the away timeout that ends their last visit.
    lines.append(
        (at + timedelta(minutes=1), f"lantern/{STORE_ID}/scanner/till-1", "]E05901234123457")
    )
    return lines


def _meraki_post(at: datetime, x: float, y: float) -> str:
    time = at.isoformat().replace("+00:00", "Z")
    observation = {
        "clientMac": "da:a1:19:00:00:2a",
        "manufacturer": "Apple",
        "os": "iOS",
        "latestRecord": {"time": time, "nearestApMac": "aa:aa:aa:00:00:01", "nearestApRssi": "-52"},
        "locations": [{"time": time, "x": str(x), "y": str(y), "floorPlanName": "Ground"}],
    }
    return json.dumps(
        {
            "version": "3.0",
            "type": "WiFi",
            "data": {"networkId": "N_1", "observations": [observation]},
        }
    )


SCENARIOS: dict[str, Callable[[], list[Line]]] = {
    "coffee-pods.jsonl": coffee_pods,
    "pickup.jsonl": pickup,
    "reorder.jsonl": reorder,
    "wifi-path.jsonl": wifi_path,
}


def recording(name: str) -> list[str]:
    return [recording_line(*line) for line in sorted(SCENARIOS[name](), key=lambda line: line[0])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gateway/examples/recordings"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in SCENARIOS:
        (args.out / name).write_text("\n".join(recording(name)) + "\n", encoding="utf-8")
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
