"""Presence engine throughput: a crowd of concurrent visitors in a big store, single core.

    .venv/bin/python -m tests.benchmarks.presence [--sightings 500000] [--visitors 10000]
    .venv/bin/python tests/benchmarks/presence.py [...]   (the same)

A seeded stream: ``--visitors`` visitors at once across 10 zones of 3 scanners each (30
scanners), each heard mostly by its own zone's scanners and sometimes by a neighbouring
zone's, a few moving to the next zone and a few leaving (replaced by newcomers) every
simulated second, at ``--rate`` sightings per simulated second; ``tick`` runs once a
simulated second, as live. Only the engine's calls are timed, not building the sightings.
Prints sightings/s, events/s, the tick's cost and the peak RSS. Figures only: no target is
asserted.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

if not __package__:
    # Run as a script, this folder comes first on the path, and its rules.py benchmark would
    # stand in for the rules package: look in the checkout instead.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from devices.model import Sighting
from rules.presence import PresenceEngine, PresenceSettings, ZoneEvent, ZoneExited
from rules.zones import Audiences, AudienceSpec, ZoneMap, ZoneSpec

ZONE_COUNT = 10
SCANNERS_PER_ZONE = 3
START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
LOYALTY = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"
DWELL_THRESHOLDS_S = (30.0, 60.0, 120.0)
# Per simulated second: the share of visitors who walk to the next zone, and who leave.
MOVE_SHARE = 0.01
LEAVE_SHARE = 0.002


def zones() -> ZoneMap:
    return ZoneMap(
        ZoneSpec(
            id=f"zone-{z}",
            name=f"Zone {z}",
            scanners=tuple(f"scanner-{z}-{k}" for k in range(SCANNERS_PER_ZONE)),
        )
        for z in range(ZONE_COUNT)
    )


class Crowd:
    """Where each visitor is; who comes, moves and goes. Seeded."""

    def __init__(self, rng: random.Random, visitors: int) -> None:
        self.rng = rng
        self.made = 0
        self.moves = 0
        self.zone_of: dict[str, int] = {}
        self.ids: list[str] = []
        for _ in range(visitors):
            self._arrive()

    def _arrive(self) -> None:
        self.made += 1
        if self.rng.random() < 0.1:  # the store app's beacon: a loyalty member
            visitor = f"ibeacon:{LOYALTY}-{self.made // 65536}-{self.made % 65536}"
        else:
            visitor = f"p-{self.made:020x}"
        self.ids.append(visitor)
        self.zone_of[visitor] = self.rng.randrange(ZONE_COUNT)

    def second_passes(self) -> None:
        for _ in range(round(len(self.ids) * MOVE_SHARE)):
            visitor = self.rng.choice(self.ids)
            self.zone_of[visitor] = (self.zone_of[visitor] + self.rng.choice((-1, 1))) % ZONE_COUNT
            self.moves += 1
        for _ in range(round(len(self.ids) * LEAVE_SHARE)):
            index = self.rng.randrange(len(self.ids))
            gone = self.ids[index]
            self.ids[index] = self.ids[-1]
            self.ids.pop()
            del self.zone_of[gone]
            self._arrive()

    def sighting(self) -> Sighting:
        visitor = self.rng.choice(self.ids)
        zone = self.zone_of[visitor]
        if self.rng.random() < 0.7:
            distance_m = self.rng.uniform(0.5, 3.0)
        else:  # a neighbouring zone's scanner hears them too, farther
            zone = (zone + self.rng.choice((-1, 1))) % ZONE_COUNT
            distance_m = self.rng.uniform(3.0, 8.0)
        scanner = f"scanner-{zone}-{self.rng.randrange(SCANNERS_PER_ZONE)}"
        identity = visitor if visitor.startswith("ibeacon:") else None
        mac = None if identity else visitor
        if self.rng.random() < 0.5:  # ESPresense reports a distance; others only rssi
            return Sighting(
                device_id=scanner,
                scanner=scanner,
                identity=identity,
                mac=mac,
                distance_m=distance_m,
            )
        rssi = -59.0 - 20.0 * math.log10(distance_m)  # free space, -59 dBm at 1 m
        return Sighting(device_id=scanner, scanner=scanner, identity=identity, mac=mac, rssi=rssi)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sightings", type=int, default=500_000)
    parser.add_argument("--visitors", type=int, default=10_000)
    # docs/architecture.md: a big store makes 2.5k sightings/s sustained, 10k/s in bursts.
    parser.add_argument("--rate", type=int, default=2_500, help="sightings per simulated second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rss_before = peak_rss_mib()
    rng = random.Random(args.seed)
    crowd = Crowd(rng, args.visitors)
    audiences = Audiences([AudienceSpec(segment="loyalty", identities=(f"ibeacon:{LOYALTY}-*",))])
    engine = PresenceEngine(zones(), PresenceSettings(), audiences, DWELL_THRESHOLDS_S)

    kinds: Counter[str] = Counter()

    def count(event: ZoneEvent) -> None:
        kind = event.cloud_event_type()
        kinds[f"{kind} ({event.reason})" if isinstance(event, ZoneExited) else kind] += 1

    observe_s = tick_s = 0.0
    tick_max_s = 0.0
    ticks = 0
    done = 0
    second = 0
    while done < args.sightings:
        second += 1
        crowd.second_passes()
        batch_size = min(args.rate, args.sightings - done)
        batch = [crowd.sighting() for _ in range(batch_size)]
        step = timedelta(seconds=1 / batch_size)
        base = START + timedelta(seconds=second)
        times = [base + step * i for i in range(batch_size)]

        started = time.perf_counter()
        for sighting, now in zip(batch, times, strict=True):
            for event in engine.observe(sighting, now):
                count(event)
        observe_s += time.perf_counter() - started

        started = time.perf_counter()
        for event in engine.tick(base + timedelta(seconds=1)):
            count(event)
        elapsed = time.perf_counter() - started
        tick_s += elapsed
        tick_max_s = max(tick_max_s, elapsed)
        ticks += 1
        done += batch_size

    events = sum(kinds.values())
    total_s = observe_s + tick_s
    print(f"sightings            {done:,} over {second} simulated s ({args.rate:,}/s)")
    print(f"visitors at once     {args.visitors:,} target, {engine.visitor_count:,} tracked")
    print(f"sightings/s          {done / total_s:,.0f}  (observe + tick, {total_s:.2f} s)")
    print(f"events/s             {events / total_s:,.0f}  ({events:,} events)")
    for kind, number in sorted(kinds.items()):
        print(f"  {kind:<33} {number:,}")
    print(f"tick                 mean {tick_s / ticks * 1e3:.2f} ms, max {tick_max_s * 1e3:.2f} ms")
    print(f"crowd                {crowd.moves:,} walks to the next zone, {crowd.made:,} visitors")
    print(f"evicted              {engine.evicted:,}")
    print(f"occupancy            {sum(engine.occupancy().values()):,} in zones")
    print(f"peak RSS             {peak_rss_mib():.1f} MiB (before the run: {rss_before:.1f} MiB)")


if __name__ == "__main__":
    main()
