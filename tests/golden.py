"""Lantern's own events for a fixed stream, kept in ``tests/fixtures/golden_events.jsonl``.

The stream: every test vector of ``tests/fixtures/``, the example recordings, a few thousand
store-simulator messages and a handful of edge cases (int-valued numbers, non-finite values,
odd time offsets, every kind of ESPresense id, broken payloads), each part through a fresh
pipeline from ``gateway.build.build`` with the example store and rules, a fixed pseudonym key
and a seeded id generator, the time-driven steps ticking once a second as live. The output is
every event body as the outbox keeps it, byte for byte, and every dead letter's kind and reason.

The golden file is not an outside vector: it pins what Lantern makes of its inputs, so that a
faster path must make exactly the same. To rewrite it after a deliberate change of output:

    .venv/bin/python -m tests.golden --write
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.ble import parse_advertisement
from devices.model import Sighting
from firmware_stubs.store_sim import StoreSimulator
from gateway.backtest import read_recording
from gateway.batch import Inbound
from gateway.build import build
from gateway.config import Settings, load_settings
from gateway.events import IdGenerator
from gateway.pipeline import DedupWindow, Processed
from gateway.privacy import Pseudonymizer
from gateway.rulesdir import read_rules
from tests.fixture_files import FIXTURES_DIR, load_json, load_jsonl

GOLDEN_FILE = FIXTURES_DIR / "golden_events.jsonl"
EXAMPLES = Path(__file__).parents[1] / "gateway" / "examples"
STORE = "demo-store"
PSEUDONYM_KEY = b"lantern-golden-events"  # fixed, not secret: the same pseudonyms every run
ID_SEED = 11
SIM_MESSAGES = 2_000
START = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # 08:00 in the store: before the offer's 11:00
_STEP = timedelta(milliseconds=250)  # between two hand-made messages
_TICK = timedelta(seconds=1)  # as the live ingest loop ticks
_TRAILING = timedelta(minutes=15)  # ticks after a part's last message: exits, silences
MEMBER = "iBeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-100-3"


@dataclass(frozen=True, slots=True)
class Admitted:
    """A sighting made outside a decoder, as ``lantern decode --adv`` admits one."""

    sighting: Sighting
    at: datetime


Item = Inbound | Admitted


def _message(at: datetime, topic: str, payload: bytes | str, dup: bool = False) -> Inbound:
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    return Inbound.delivered(topic, data, 1, 1, dup, at, 1)


def _spaced(pairs: list[tuple[str, bytes | str]], start: datetime) -> list[Item]:
    return [
        _message(start + index * _STEP, topic, payload)
        for index, (topic, payload) in enumerate(pairs)
    ]


def _theengs_raw(adv_hex: str, address: str) -> str:
    """A raw advertisement as the local radio hands it in (gateway/sources/ble.py's shape)."""
    advertisement = parse_advertisement(bytes.fromhex(adv_hex))
    document: dict[str, object] = {"id": address, "rssi": -64, "mac_type": 1}
    for company_id, data in advertisement.manufacturer_data.items():
        document["manufacturerdata"] = (company_id.to_bytes(2, "little") + data).hex()
    for service_uuid, data in advertisement.service_data.items():
        document["servicedatauuid"] = service_uuid
        document["servicedata"] = data.hex()
    return json.dumps(document, separators=(",", ":"))


def fixture_part() -> list[Item]:
    """Every vector of tests/fixtures/, on the topic its family is routed from."""
    pairs: list[tuple[str, bytes | str]] = []
    for line in load_jsonl("espresense.jsonl") + load_jsonl("theengs_raw.jsonl"):
        pairs.append((line["topic"], json.dumps(line["payload"])))
    pairs.append((f"lantern/{STORE}/wifi/meraki", json.dumps(load_json("meraki_v3_wifi.json"))))
    pairs += [
        (f"lantern/{STORE}/reorder/coffee-machine-1", json.dumps(line["payload"]))
        for line in load_jsonl("reorder.jsonl")
    ]
    pairs += [
        (f"lantern/{STORE}/scanner/till-1", scan["scan"]) for scan in load_json("gs1_scans.json")
    ]
    pairs += [
        (f"lantern/{STORE}/scanner/till-2", case["uri"])
        for case in load_json("gs1_digital_link.json")
    ]
    adverts = load_json("ble_adverts.json")
    pairs += [
        (f"lantern/{STORE}/ble/local", _theengs_raw(entry["adv_hex"], f"F0:00:00:00:00:{n:02X}"))
        for n, entry in enumerate(adverts)
    ]
    items = _spaced(pairs, START)
    at = START + len(pairs) * _STEP
    for entry in adverts:
        advertisement = parse_advertisement(bytes.fromhex(entry["adv_hex"]))
        assert advertisement.frame is not None
        sighting = Sighting(
            device_id="local",
            scanner="local",
            identity=advertisement.frame.identity(),
            tx_power=advertisement.tx_power,
            beacon=advertisement.frame.fields(),
        )
        items.append(Admitted(sighting, at))
        at += _STEP
    return items


def _espresense(espresense_id: str, room: str, **payload: object) -> tuple[str, str]:
    return f"espresense/devices/{espresense_id}/{room}", json.dumps(
        {"id": espresense_id, **payload}
    )


_IBEACON_ADV = "0201061aff4c0002154142434445464748494041424344454600010002f8"


def edge_part() -> list[Item]:
    """Cases the vectors leave out: how numbers, times, ids and broken payloads come out."""
    eddy = "12345678901234678901"
    pairs: list[tuple[str, bytes | str]] = [
        # ESPresense: each kind of id, numbers sent as integers, measured powers of each sign.
        _espresense(MEMBER, "bakery", rssi=-70, distance=3, **{"rssi@1m": -59.4}),
        _espresense("altBeacon:2F234454-CF6D-4A0F-ADF2-F4911BA9FFA6-7-8", "bakery", rssi=-71.5),
        _espresense(f"eddy:{eddy}-000000000001", "pickup", rssi=-66, **{"rssi@1m": 4}),
        _espresense(f"eddy:{eddy[:10]}{eddy[8:10]}{eddy[10:]}-0000000000AB", "pickup", rssi=-66),
        _espresense("irk:" + "AB" * 16, "entrance", rssi=-80.25, distance=12.5),
        _espresense("tile:c2f0aa0000f1", "entrance", rssi=-80),
        _espresense("known:C2:F0:AA:00:00:F2", "entrance", rssi=-80, mac="C2-F0-AA-00-00-F3"),
        _espresense("name:Pixel 7", "checkout", rssi=-75, distance=0.5),
        _espresense("name:Far away", "checkout", rssi=-1e20, distance=1.5e17),
        _espresense("apple:1005:9-26", "checkout", rssi=-75, speed=0.1, interval=None),
        ("espresense/devices/c2f0aa0000f4/checkout", json.dumps({"rssi": -60})),
        # ... and broken ones: each a dead letter with its reason.
        _espresense("iBeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-70000-1", "bakery", rssi=-70),
        _espresense(f"eddy:{eddy[:10]}ff{eddy[10:]}-000000000001", "pickup", rssi=-66),
        _espresense("irk:1234", "pickup", rssi=-66),
        _espresense(MEMBER, "bakery"),
        _espresense(MEMBER, "bakery", rssi="-70"),
        _espresense(MEMBER, "bakery", rssi=True),
        (f"espresense/devices/{MEMBER}/bakery", '{"id": "x", "rssi": -70, "distance": 1e999}'),
        (f"espresense/devices/{MEMBER}/bakery", '{"id": "x", "rssi": NaN}'),
        (f"espresense/devices/{MEMBER}/bakery", '{"id": "x", "rssi": -70,}'),
        (f"espresense/devices/{MEMBER}/bakery", "[1, 2]"),
        (f"espresense/devices/{MEMBER}/bakery", b'{"id": "\xff"}'),
        (f"espresense/devices/{MEMBER}/bakery", '{"a":' * 2000 + "1" + "}" * 2000),
        # ESPresense telemetry and status: health under the inventory's names, the rest as
        # sent, non-finite and nested values included.
        (
            "espresense/rooms/bakery/telemetry",
            '{"ip": "10.0.0.5", "uptime": 1234, "ver": "v3.3.1", "rssi": -50, "freeHeap": 12345,'
            ' "mV": 3700, "batt": 95, "count": 3, "nested": {"a": null, "b": [1, 2.5, -0.0]},'
            ' "big": 1e999, "huge": 123456789012345678901234567890, "text": "caf\\u00e9 \\u2028",'
            ' "far": 1e20, "tiny": 1e-7, "edge": 9999999999999998.0, "floats": [1e16, -2.5e300]}',
        ),
        ("espresense/rooms/bakery/status", "offline"),
        ("espresense/rooms/bakery/status", "online"),
        ("espresense/rooms/bakery/status", "maybe"),
        ("espresense/rooms/bakery/telemetry", '{"uptime": "long"}'),
        # Theengs: a device the gateway decoded, an iBeacon it decoded, a corrupt raw field
        # beside good decoded ones, an address in the gateway's name.
        (
            "home/TheengsGateway/BTtoMQTT/A4C138AABBCC",
            '{"id": "A4:C1:38:AA:BB:CC", "name": "ATC_AABBCC", "rssi": -60, "brand": "Xiaomi",'
            ' "model": "LYWSD03MMC", "model_id": "LYWSD03MMC", "tempc": 21.5, "hum": 45,'
            ' "batt": 80, "volt": 2.9, "spike": 1e999, "count": 3e16, "mac_type": 0,'
            ' "note": "at A4C138AABBCC"}',
        ),
        (
            "home/TheengsGateway/BTtoMQTT/426C75654368",
            '{"id": "42:6C:75:65:43:68", "rssi": -61, "model_id": "IBEACON",'
            ' "uuid": "426c7565436861726d426561636f6e73", "major": 3838, "minor": 4949,'
            ' "txpower": -59, "mac_type": 3}',
        ),
        (
            "home/TheengsGateway/BTtoMQTT/A4C138AABBCD",
            '{"id": "A4:C1:38:AA:BB:CD", "rssi": -62, "model_id": "LYWSD03MMC", "tempc": 20,'
            ' "manufacturerdata": "zz", "servicedata": "8816xxxx", "servicedatauuid": "0xfe95"}',
        ),
        (
            "home/AA-BB-CC-00-00-01/BTtoMQTT/undecoded",
            '{"id": "AA:BB:CC:00:00:02", "rssi": -90, "manufacturerdata": "4c00"}',
        ),
        (
            "home/TheengsGateway/BTtoMQTT/undecoded",
            '{"id": "AA:BB:CC:00:00:03", "rssi": -90, "model_id": "IBEACON", "uuid": "426c",'
            ' "major": 1, "minor": 2}',
        ),
        (
            "home/TheengsGateway/BTtoMQTT/undecoded",
            '{"id": "AA:BB:CC:00:00:04", "rssi": -90, "model_id": "IBEACON",'
            ' "uuid": "426c7565436861726d426561636f6e73", "major": "1", "minor": 2.0}',
        ),
        # Wi-Fi: an AP observation with a local time, a Meraki Bluetooth post with a beacon,
        # a source named by its address.
        (
            f"lantern/{STORE}/wifi/ap-bakery",
            '{"ap": "ap-bakery", "mac": "DA:A1:19:00:00:99", "rssi": -50,'
            ' "time": "2026-11-23T08:00:30.25+01:00"}',
        ),
        (
            f"lantern/{STORE}/wifi/AA-BB-CC-00-00-05",
            '{"ap": "AP0c85.25c2.7f4e", "mac": "12:a1:19:00:00:98", "rssi": "-51.5"}',
        ),
        (
            f"lantern/{STORE}/wifi/meraki",
            json.dumps(
                {
                    "version": "3.0",
                    "type": "Bluetooth",
                    "data": {
                        "reportingAps": [
                            {"mac": "aa:aa:aa:00:00:02", "name": "ap-entrance", "tags": ["front"]}
                        ],
                        "observations": [
                            {
                                "clientMac": "f0:00:00:00:00:aa",
                                "latestRecord": {
                                    "time": "2026-11-23T07:00:40Z",
                                    "nearestApMac": "aa:aa:aa:00:00:02",
                                    "nearestApRssi": -70,
                                },
                                "locations": [
                                    {
                                        "time": "2026-11-23T07:00:39Z",
                                        "x": 1,
                                        "y": "2.5",
                                        "nearestApTags": ["front", "door"],
                                        "floorPlanName": "G",
                                    },
                                    {"time": "2026-11-23T07:00:38Z", "x": 9, "y": 9},
                                ],
                                "bleBeacons": [{"rawData": _IBEACON_ADV}],
                            }
                        ],
                    },
                }
            ),
        ),
        (f"lantern/{STORE}/wifi/meraki", '{"version": "2.0", "data": {}}'),
        # Reorder: a plain report with capacity and product, Matter, usage, broken ones.
        (
            f"lantern/{STORE}/reorder/coffee-machine-1",
            '{"slot": "pods", "level": 8, "unit": "Count", "capacity": 40, "gtin": "7612100055557",'
            ' "time": "2026-11-23T07:00:41.5Z"}',
        ),
        (
            f"lantern/{STORE}/reorder/purifier-1",
            '{"condition": 20, "degradationDirection": "Up", "changeIndication": "Warning",'
            ' "replacementProductList": [{"productIdentifierType": "GTIN14",'
            ' "productIdentifierValue": "07612100055557"}, {"productIdentifierType": "OEM",'
            ' "productIdentifierValue": "F-1"}]}',
        ),
        (f"lantern/{STORE}/reorder/purifier-1", '{"changeIndication": 0}'),
        (f"lantern/{STORE}/reorder/coffee-machine-1", '{"slot": "pods", "usage": 2}'),
        (f"lantern/{STORE}/reorder/coffee-machine-1", '{"slot": "pods", "level": -1}'),
        # Barcode scanners: JSON reads with their own time (one offset of seconds), an address
        # as the scanner's topic level.
        (
            f"lantern/{STORE}/scanner/till-1",
            '{"code": "]C1010590123412345715210526", "symbology": "GS1-128",'
            ' "time": "2026-11-23T08:00:01.5+01:00"}',
        ),
        (
            f"lantern/{STORE}/scanner/till-1",
            '{"code": "9501101531000\\r\\n", "time": "2026-11-23T07:00:01-00:00:30"}',
        ),
        (f"lantern/{STORE}/scanner/AA:BB:CC:DD:EE:FF", "]E00123601057072"),
        (f"lantern/{STORE}/scanner/till-1", '{"code": ""}'),
        # Any device's status, plain and with health; then the will.
        (f"lantern/{STORE}/device/till-1/status", "online"),
        (
            f"lantern/{STORE}/device/till-1/status",
            '{"status": "online", "battery_pct": 80, "uptime_s": 100.5, "firmware": "1.2",'
            ' "queued": 2, "extra": null}',
        ),
        (f"lantern/{STORE}/device/till-1/status", "disconnected"),
        (f"lantern/{STORE}/device/till-1/status", '{"status": "sleepy"}'),
        # The gateway's own limits.
        (f"lantern/{STORE}/nobody/listens", "x"),
        (f"lantern/{STORE}/scanner/till-1", "9" * (64 * 1024 + 1)),
    ]
    items = _spaced(pairs, START)
    # A redelivery of a committed message (DUP set) makes no second event.
    first = items[0]
    assert isinstance(first, Inbound)
    items.append(_message(START + len(pairs) * _STEP, first.topic, first.payload, dup=True))
    return items


def recording_part(name: str) -> list[Item]:
    lines = (EXAMPLES / "recordings" / name).read_text(encoding="utf-8").splitlines()
    return [message.inbound for message in read_recording(lines)]


def simulator_part() -> list[Item]:
    simulator = StoreSimulator(STORE, seed=3, shoppers=60)
    items: list[Item] = [_message(START, topic, payload) for topic, payload in simulator.births()]
    stream = simulator.messages(40.0, smart_devices=True)
    last = START
    for _ in range(SIM_MESSAGES):
        seconds, topic, payload = next(stream)
        last = START + timedelta(seconds=seconds)
        items.append(_message(last, topic, payload))
    items += [_message(last, topic, payload) for topic, payload in simulator.last_wills()]
    return items


def parts() -> Iterator[tuple[str, list[Item]]]:
    yield "fixtures", fixture_part()
    yield "edge cases", edge_part()
    for path in sorted((EXAMPLES / "recordings").glob("*.jsonl")):
        yield f"recording {path.name}", recording_part(path.name)
    yield "store simulator", simulator_part()


def _lines(processed: Processed) -> Iterator[str]:
    for row in processed.batch.events:
        yield row.body
    for letter in processed.batch.dead_letters:
        yield json.dumps(
            {"dead_letter": letter.kind, "topic": letter.topic, "reason": letter.reason},
            ensure_ascii=False,
        )


def settings() -> Settings:
    return load_settings(EXAMPLES / "store.yaml", environ={})


def golden_lines() -> Iterator[str]:
    """The golden file's lines: a header per part, then what each message and tick made."""
    store = settings()
    rules = read_rules(EXAMPLES / "rules")
    for name, items in parts():
        yield json.dumps({"part": name})
        pipeline = build(
            store,
            rules,
            Pseudonymizer(PSEUDONYM_KEY),
            IdGenerator(random.Random(ID_SEED)),
            DedupWindow(store.outbox.dedup_window_messages),
        ).pipeline
        next_tick: datetime | None = None
        for item in items:
            at = item.at if isinstance(item, Admitted) else item.received_at
            next_tick = next_tick or at + _TICK
            while next_tick <= at:
                yield from _lines(pipeline.tick(next_tick))
                next_tick += _TICK
            if isinstance(item, Admitted):
                yield from _lines(pipeline.admit([item.sighting], item.at))
            else:
                yield from _lines(pipeline.process([item]))
        assert next_tick is not None
        end = next_tick + _TRAILING
        while next_tick <= end:
            yield from _lines(pipeline.tick(next_tick))
            next_tick += _TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {GOLDEN_FILE.name}")
    args = parser.parse_args()
    text = "".join(line + "\n" for line in golden_lines())
    if args.write:
        GOLDEN_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {text.count(chr(10))} lines to {GOLDEN_FILE}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
