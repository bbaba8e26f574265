"""Rule evaluation rate with 10 rules and with 1,000, on the same triggers, side by side.

    .venv/bin/python -m tests.benchmarks.rules [--triggers 50000] [--rounds 3]

(As a module from the checkout: run as a file, this script's name would hide the ``rules``
package.)

One seeded stream of zone entries, exits, dwells and barcode reads in a store of 12 zones,
2,000 visitors and 4 tills is evaluated by an engine holding the 10 rules a store might
start with, and by one holding those and 990 more that a chain accumulates: offers for other
stores' zones and other products, device and reorder notices, a few on this store's zones
with filters these triggers do not pass. The goal is that 1,000 rules keep at least 0.7 of
the 10-rule throughput: a trigger's cost must not grow with the rules that cannot match it.
Each round runs both engines afresh (empty limit counters) on the whole stream; the best
round of each is reported. Both must give the same actions.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from biip.checksums import gs1_standard_check_digit

from rules.engine import RuleEngine, StoreContext, Trigger
from rules.model import RuleSet, parse_rules

SEED = 20261124
START = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
STORE = StoreContext(id="s1", name="Store One", timezone="Europe/Amsterdam")
ZONES = ["coffee-aisle", "bakery", "pickup", "dairy", *(f"aisle-{n}" for n in range(1, 9))]
TILLS = [f"till-{n}" for n in range(1, 5)]
SEGMENTS = ["loyalty", "staff", None, None]  # most visitors are not in any audience
DWELL_THRESHOLDS_S = [45.0, 120.0]
GOAL_RATIO = 0.7


def gtin(seed: int) -> str:
    body = f"{4_000_000_000_000 + seed * 7919:013d}"
    return body + str(gs1_standard_check_digit(body))


STREAM_GTINS = [gtin(n) for n in range(50)]  # the products this store's tills scan


def publish(topic: str, **payload: Any) -> dict[str, Any]:
    return {"publish": {"topic": topic, "payload": payload}}


def emit(event: str, **data: Any) -> dict[str, Any]:
    return {"emit": {"type": event, "data": data}}


def base_rules() -> list[dict[str, Any]]:
    """Ten rules a store might start with; several fire on the stream."""
    signage = "store/{{ store.id }}/signage/{{ zone.id }}"
    return [
        {
            "id": "coffee-pods-offer",
            "when": {"event": "zone.dwelled", "zone": "coffee-aisle", "dwell_at_least": "45s"},
            "if": 'visitor.segment == "loyalty" && now.hour < 11',
            "then": [
                publish(signage, offer="pods-10", visitor="{{ visitor.id }}"),
                emit("lantern.offer.triggered", offer="pods-10"),
            ],
            "limits": {"per_visitor": "1/day", "global": "200/hour"},
        },
        {
            "id": "bakery-linger",
            "when": {"event": "zone.dwelled", "zone": "bakery", "dwell_at_least": "2m"},
            "then": [publish(signage, offer="bread-2for1")],
            "limits": {"per_visitor": "1/day"},
        },
        {
            "id": "pickup-arrival",
            "when": {"event": "zone.entered", "zone": "pickup"},
            "if": 'visitor.segment == "loyalty"',
            "then": [publish("store/{{ store.id }}/staff/pickup", visitor="{{ visitor.id }}")],
            "limits": {"per_visitor": "1/hour", "cooldown": "10m"},
        },
        {
            "id": "aisle-dwell-report",
            "when": {"event": "zone.exited"},
            "if": 'event.data.zone.startsWith("aisle-") && event.data.dwell_s >= 10.0',
            "then": [
                emit("lantern.aisle.dwell_reported", zone="{{ event.data.zone }}"),
            ],
        },
        {
            "id": "staff-in-dairy",
            "when": {"event": "zone.entered", "zone": "dairy", "segment": "staff"},
            "then": [emit("lantern.staff.located", zone="dairy")],
            "limits": {"per_visitor": "1/hour"},
        },
        {
            "id": "pods-scan-coupon",
            "when": {"event": "scan.read", "gtin": STREAM_GTINS[0]},
            "then": [publish("store/{{ store.id }}/till/{{ event.device }}/coupon", pct=10)],
            "limits": {"global": "100/hour"},
        },
        {
            "id": "till-1-scans",
            "when": {"event": "scan.read", "device": "till-1"},
            "if": 'event.data.gtin.endsWith("7")',
            "then": [emit("lantern.till.sampled", gtin="{{ event.data.gtin }}")],
            "limits": {"global": "30/minute"},
        },
        {
            "id": "evening-bakery",
            "when": {"event": "zone.entered", "zone": "bakery"},
            "active": {"hours": "17:00-21:00"},
            "then": [publish(signage, offer="bread-half-price")],
        },
        {
            "id": "crowded-coffee",
            "when": {"event": "zone.entered", "zone": "coffee-aisle"},
            "if": "zone.occupancy > 8",
            "then": [publish("store/{{ store.id }}/staff/help", zone="{{ zone.id }}")],
            "limits": {"per_zone": "1/15m"},
        },
        {
            "id": "low-stock-notice",
            "when": {"event": "reorder.requested"},
            "then": [emit("lantern.staff.notified", device="{{ event.device }}")],
        },
    ]


def extra_rules(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Rules that accumulate: mostly for other zones, products and event types; a few on
    this store's zones whose filters (dwell, segment) the stream never passes."""
    extra: list[dict[str, Any]] = []
    for n in range(count):
        kind = rng.choice(["zone", "zone", "zone", "scan", "scan", "device", "reorder"])
        offer = publish("store/{{ store.id }}/signage/x", offer=f"o-{n}", v="{{ visitor.id }}")
        if n < 5:  # on this store's zones, never passing the filters
            when = {
                "event": "zone.dwelled",
                "zone": ZONES[n],
                "dwell_at_least": "10m",
                "segment": "vip",
            }
        elif kind == "zone":
            event = rng.choice(["zone.entered", "zone.exited", "zone.dwelled"])
            when = {"event": event, "zone": f"other-zone-{n}"}
            if event == "zone.dwelled":
                when["dwell_at_least"] = rng.choice(["45s", "2m"])
        elif kind == "scan":
            when = {"event": "scan.read", "gtin": gtin(1_000 + n)}
        elif kind == "device":
            when = {"event": rng.choice(["device.offline", "device.online"]), "device": f"d-{n}"}
        else:
            when = {"event": "reorder.cleared", "device": f"machine-{n}"}
        extra.append(
            {
                "id": f"extra-{n:04d}",
                "when": when,
                "if": 'visitor.segment == "loyalty" && now.hour >= 8',
                "then": [offer, emit("lantern.offer.triggered", offer=f"o-{n}")],
                "limits": {"per_visitor": "1/day", "global": "50/hour"},
            }
        )
    return extra


_BENCH_UUID = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"  # the benchmarks' beacons: major = segment


def chain_rules(count: int) -> list[dict[str, Any]]:
    """The ten base rules and ``count - 10`` accumulated ones, always the same."""
    return [*base_rules(), *extra_rules(count - len(base_rules()), random.Random(SEED))]


def store_sections(specs: list[dict[str, Any]], rooms: list[str]) -> dict[str, Any]:
    """The ``zones``, ``audiences`` and ``devices`` of a store.yaml in which every one of these
    rules is valid (a store refuses a rule naming a zone, segment or device it does not have):
    each of ``rooms`` is a zone of its own, every zone a rule names another, heard by a
    scanner of its own that the benchmark's stream never uses."""
    named = [rule["when"] for rule in specs]
    zones = [{"id": room, "scanners": [room]} for room in rooms]
    zones += [
        {"id": zone, "scanners": [f"{zone}-scanner"]}
        for zone in sorted({when["zone"] for when in named if "zone" in when} - set(rooms))
    ]
    segments = sorted({when["segment"] for when in named if "segment" in when} | {"loyalty"})
    return {
        "zones": zones,
        "audiences": [
            {
                "segment": segment,
                "identities": [f"ibeacon:{_BENCH_UUID}-{n}-*"],
            }
            for n, segment in enumerate(segments)
        ],
        "devices": [
            {"id": device}
            for device in sorted({when["device"] for when in named if "device" in when})
        ],
    }


def rule_set(specs: list[dict[str, Any]]) -> RuleSet:
    return parse_rules({f"{spec['id']}.yaml": yaml.safe_dump(spec) for spec in specs})


def stream(count: int, rng: random.Random) -> list[Trigger]:
    visitors = [(f"p-{n:05d}", rng.choice(SEGMENTS)) for n in range(2_000)]
    occupancy = dict.fromkeys(ZONES, 0)
    triggers: list[Trigger] = []
    at = START
    for n in range(count):
        at += timedelta(milliseconds=rng.randint(50, 1_000))
        if rng.random() < 0.25:
            till = rng.choice(TILLS)
            code = rng.choice(STREAM_GTINS)
            triggers.append(
                Trigger(
                    type="lantern.scan.read",
                    time=at,
                    id=f"e{n}",
                    subject=till,
                    device=till,
                    data={"code": code, "gtin": code, "symbology": "EAN-13"},
                )
            )
            continue
        visitor, segment = rng.choice(visitors)
        zone = rng.choice(ZONES)
        event = rng.choice(["entered", "exited", "dwelled"])
        dwell_s = round(rng.uniform(1.0, 300.0), 1)
        data: dict[str, Any] = {"visitor": visitor, "zone": zone, "segment": segment}
        if event == "entered":
            occupancy[zone] += 1
        elif event == "exited":
            occupancy[zone] = max(0, occupancy[zone] - 1)
            data["dwell_s"] = dwell_s
        else:
            data |= {"dwell_s": dwell_s, "threshold_s": rng.choice(DWELL_THRESHOLDS_S)}
        triggers.append(
            Trigger(
                type=f"lantern.zone.{event}",
                time=at,
                id=f"e{n}",
                subject=visitor,
                device=f"scanner-{zone}",
                data=data,
                visitor={"id": visitor, "segment": segment, "zone": zone, "dwell_s": dwell_s},
                zone={"id": zone, "name": zone.title(), "occupancy": occupancy[zone]},
            )
        )
    return triggers


def run(rules: RuleSet, triggers: list[Trigger]) -> tuple[float, int, int]:
    """Seconds, actions and traces for the whole stream, on a fresh engine."""
    engine = RuleEngine(rules, STORE)
    actions = 0
    start = time.perf_counter()
    for trigger in triggers:
        actions += len(engine.evaluate(trigger))
    elapsed = time.perf_counter() - start
    traces = sum(sum(counts.values()) for counts in engine.summary().values())
    return elapsed, actions, traces


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--triggers", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(SEED)
    base = base_rules()
    small = rule_set(base)
    load_start = time.perf_counter()
    large = rule_set(base + extra_rules(1_000 - len(base), rng))
    load_s = time.perf_counter() - load_start
    triggers = stream(args.triggers, rng)
    print(f"{len(triggers):,} triggers; 1,000 rules parsed and compiled in {load_s:.2f} s")

    best: dict[str, float] = {}
    results: dict[str, tuple[int, int]] = {}
    for _ in range(args.rounds):  # alternate, so drift in the machine hits both alike
        for name, rules in (("10 rules", small), ("1,000 rules", large)):
            elapsed, actions, traces = run(rules, triggers)
            best[name] = min(best.get(name, elapsed), elapsed)
            results[name] = (actions, traces)
    print(f"{'engine':<14}{'triggers/s':>12}{'actions':>10}{'traces':>10}")
    for name, seconds in best.items():
        actions, traces = results[name]
        print(f"{name:<14}{len(triggers) / seconds:>12,.0f}{actions:>10,}{traces:>10,}")
    ratio = best["10 rules"] / best["1,000 rules"]
    verdict = "meets" if ratio >= GOAL_RATIO else "MISSES"
    print(f"1,000 rules / 10 rules throughput: {ratio:.2f} ({verdict} the {GOAL_RATIO} goal)")
    if results["10 rules"][0] != results["1,000 rules"][0]:
        raise SystemExit("the two engines gave different actions")


if __name__ == "__main__":
    main()
