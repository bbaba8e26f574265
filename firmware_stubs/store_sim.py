"""Host simulators of a store's devices, publishing the same topics and payloads as the real ones.

* ESPresense BLE scanners, one per room: shoppers carrying a loyalty-app iBeacon or a phone with
  a random address walk from room to room; each scanner in range reports them with an RSSI and
  a distance from a log-distance path-loss model, as ESPresense does.
* Barcode scanners at the tills: GS1-128 reads of real GTINs with a batch/lot, an expiry date
  and a unique serial, plus now and then a plain EAN-13.
* Optionally the smart devices: a coffee machine reporting its pod level, and Meraki
  Scanning API posts of phones walking the Wi-Fi floor plan's aisles.
* Every device has a retained last will on its status topic.

Deterministic for a seed: :meth:`StoreSimulator.messages` yields ``(seconds, topic, payload)``
from simulated time alone, so a recording made from it is reproducible. ``python -m
firmware_stubs.store_sim --record FILE`` writes one in the recording format (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ROOMS = ("entrance", "coffee-aisle", "bakery", "pickup", "checkout")
LOYALTY_UUID = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"  # the store app's iBeacon UUID
PRODUCTS = ("09501101531000", "05901234123457", "04006381333931", "08712566328208")
_RSSI_AT_1M_DBM = -59  # ESPresense's default calibrated power for phones and beacons
_PATH_LOSS_EXPONENT = 2.7  # indoors with shelving: between free space (2) and walls (3-4)
_SCANNER_RANGE_M = 12.0
_ROOM_SPACING_M = 8.0  # rooms sit on a line 8 m apart: a shopper is near one, heard by two
_SMART_DEVICE_INTERVAL_S = 10.0  # the coffee machine and the Meraki posts, both every 10 s
_PODS_FULL = 40
# The demo store's Wi-Fi floor plan (gateway/examples/store.yaml): 3 aisles, 20 x 4 m each.
_FLOOR_LENGTH_M = 20.0
_AISLE_WIDTH_M = 4.0
_AISLES = 3
_WIFI_PHONES = 6


@dataclass
class Shopper:
    identity: str  # ESPresense id
    mac: str
    room_index: int
    offset_m: float
    leave_at_s: float


class StoreSimulator:
    def __init__(self, store_id: str, seed: int = 1, shoppers: int = 20, tills: int = 3) -> None:
        self.store_id = store_id
        self._random = random.Random(seed)
        self._tills = tills
        self._shoppers = [self._new_shopper(number, 0.0) for number in range(shoppers)]
        self._serial = 0
        self._pods = _PODS_FULL
        # Wi-Fi phones as [x, y] on the floor plan, each in the middle of an aisle.
        self._phones = [
            [self._random.uniform(0, _FLOOR_LENGTH_M), _AISLE_WIDTH_M * (n % _AISLES + 0.5)]
            for n in range(_WIFI_PHONES)
        ]

    def _new_shopper(self, number: int, now_s: float) -> Shopper:
        mac = "".join(f"{self._random.randrange(256):02x}" for _ in range(6))
        if number % 3 == 0:  # a third carry the loyalty app
            identity = f"iBeacon:{LOYALTY_UUID}-100-{number}"
        else:
            mac = f"{int(mac[:2], 16) | 0x02:02x}{mac[2:]}"  # phones randomise: local bit set
            identity = mac
        return Shopper(
            identity, mac, self._random.randrange(len(ROOMS)), 0.0, now_s + self._linger_s()
        )

    def _linger_s(self) -> float:
        return self._random.uniform(10, 90)

    def last_wills(self) -> list[tuple[str, str]]:
        """(topic, payload) of each device's will: what the broker says if it drops."""
        return [(f"espresense/rooms/{room}/status", "offline") for room in ROOMS] + [
            (f"lantern/{self.store_id}/device/till-{n}/status", "offline")
            for n in range(self._tills)
        ]

    def births(self) -> list[tuple[str, str]]:
        return [(topic, "online") for topic, _ in self.last_wills()]

    def messages(
        self, sightings_per_s: float, scans_per_min: float = 12, smart_devices: bool = False
    ) -> Iterator[tuple[float, str, str]]:
        """An endless stream of (simulated seconds, topic, payload), in time order.

        With ``smart_devices``, also the coffee machine's pod level and the Wi-Fi access
        points' Meraki posts of a few phones walking the aisles (the demo store's).
        """
        now_s = 0.0
        next_scan_s = self._random.expovariate(scans_per_min / 60)
        next_report_s = _SMART_DEVICE_INTERVAL_S if smart_devices else math.inf
        while True:
            now_s += self._random.expovariate(sightings_per_s)
            while next_scan_s <= now_s:
                yield next_scan_s, *self._scan()
                next_scan_s += self._random.expovariate(scans_per_min / 60)
            while next_report_s <= now_s:
                yield next_report_s, *self._pods_report()
                yield next_report_s, *self._wifi_post(next_report_s)
                next_report_s += _SMART_DEVICE_INTERVAL_S
            yield now_s, *self._sighting(now_s)

    def _pods_report(self) -> tuple[str, str]:
        """The coffee machine uses a few pods between reports; staff refill it when empty."""
        self._pods = (
            _PODS_FULL if self._pods <= 0 else max(0, self._pods - self._random.randint(0, 3))
        )
        payload = json.dumps({"slot": "pods", "level": self._pods, "unit": "count"})
        return f"lantern/{self.store_id}/reorder/coffee-machine-1", payload

    def _wifi_post(self, now_s: float) -> tuple[str, str]:
        """A Meraki Scanning API v3 post: phones drifting along the aisles of the floor plan."""
        observations = []
        for number, phone in enumerate(self._phones):
            phone[0] = (phone[0] + self._random.uniform(-1, 3)) % _FLOOR_LENGTH_M
            if self._random.random() < 0.1:  # now and then a shopper turns into the next aisle
                phone[1] = (phone[1] + _AISLE_WIDTH_M) % (_AISLE_WIDTH_M * _AISLES)
            observations.append(
                {
                    "clientMac": f"da:a1:19:00:00:{number:02x}",
                    "latestRecord": {"nearestApMac": "aa:aa:aa:00:00:01", "nearestApRssi": "-55"},
                    "locations": [{"x": f"{phone[0]:.2f}", "y": f"{phone[1]:.2f}"}],
                }
            )
        post = {"version": "3.0", "type": "WiFi", "data": {"observations": observations}}
        return f"lantern/{self.store_id}/wifi/meraki", json.dumps(post)

    def _sighting(self, now_s: float) -> tuple[str, str]:
        number = self._random.randrange(len(self._shoppers))
        shopper = self._shoppers[number]
        if now_s >= shopper.leave_at_s:
            step = self._random.choice((-1, 1))
            shopper.room_index = min(max(shopper.room_index + step, 0), len(ROOMS) - 1)
            shopper.leave_at_s = now_s + self._linger_s()
        shopper.offset_m = max(0.3, shopper.offset_m * 0.8 + self._random.uniform(0, 2.0))
        # The scanner that hears it: usually its own room, sometimes a neighbour.
        heard_from = shopper.room_index + self._random.choice((0, 0, 0, -1, 1))
        heard_from = min(max(heard_from, 0), len(ROOMS) - 1)
        distance = math.hypot(
            shopper.offset_m, abs(heard_from - shopper.room_index) * _ROOM_SPACING_M
        )
        distance = min(distance, _SCANNER_RANGE_M)
        rssi = _RSSI_AT_1M_DBM - 10 * _PATH_LOSS_EXPONENT * math.log10(distance)
        rssi += self._random.gauss(0, 2.0)
        payload = {
            "id": shopper.identity,
            "mac": shopper.mac,
            "rssi@1m": _RSSI_AT_1M_DBM,
            "rssi": round(rssi, 2),
            "raw": round(distance, 2),
            "distance": round(distance, 2),
            "var": round(self._random.uniform(0, 1), 2),
            "int": 1000,
        }
        return f"espresense/devices/{shopper.identity}/{ROOMS[heard_from]}", json.dumps(payload)

    def _scan(self) -> tuple[str, str]:
        till = self._random.randrange(self._tills)
        gtin = self._random.choice(PRODUCTS)
        self._serial += 1
        if self._random.random() < 0.2:
            code = f"]E0{gtin[1:]}"  # a plain EAN-13 off a shelf label
        else:
            expiry = f"27{self._random.randint(1, 12):02d}{self._random.randint(1, 28):02d}"
            lot = f"LOT{self._random.randint(1, 99):02d}"
            # AI 10 is variable length: the GS separator ends it before the serial (AI 21).
            code = f"]C101{gtin}17{expiry}10{lot}\x1d21S{self._serial:07d}"
        return f"lantern/{self.store_id}/scanner/till-{till}", code


def recording_line(at: datetime, topic: str, payload: str) -> str:
    """One recording line (docs/architecture.md), published at QoS 1 at ``at`` (UTC)."""
    t = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"t": t, "topic": topic, "qos": 1, "payload": payload})


def recording_lines(
    simulator: StoreSimulator, start: datetime, duration_s: float, sightings_per_s: float
) -> Iterator[str]:
    """The recording format (docs/architecture.md), from simulated time."""
    for seconds, topic, payload in simulator.messages(sightings_per_s):
        if seconds > duration_s:
            return
        yield recording_line(start + timedelta(seconds=seconds), topic, payload)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="demo-store")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=20.0, help="sightings per second")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--start", default="2026-11-23T08:00:00+00:00")
    parser.add_argument("--record", help="write a recording to this file ('-': stdout)")
    args = parser.parse_args(argv)
    simulator = StoreSimulator(args.store, args.seed)
    start = datetime.fromisoformat(args.start).astimezone(UTC)
    out = sys.stdout if args.record in (None, "-") else open(args.record, "w")  # noqa: SIM115
    with out:
        for line in recording_lines(simulator, start, args.seconds, args.rate):
            out.write(line + "\n")


if __name__ == "__main__":
    main()
