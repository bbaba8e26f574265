"""README's promise, as it words it: "No raw MAC address is stored, logged, shown or forwarded:
not a shopper's, not a store device's." Every fixture and test payload, and devices that publish
under their own address on every kind of topic level, go through the whole gateway; then the
outbox files, the logs, the HTTP bodies and the status page are searched for every address in
every spelling, and the events of a scanner publishing on ``lantern/{store}/scanner/<MAC>``
name it by the same pseudonym as its address in a payload."""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from devices.model import ScanRead, Sighting
from firmware_stubs.store_sim import StoreSimulator
from gateway.app import OUTBOX_FILE_NAME
from gateway.clock import ManualClock
from gateway.config import Settings
from gateway.privacy import Pseudonymizer, load_or_create_secret
from gateway.receiver import Receiver
from tests.fixture_files import load_json, load_jsonl
from tests.gateway.console import WEB_TOKENS, bearer
from tests.helpers import (
    Publisher,
    outbox_rows,
    running_gateway,
    sink_delivered,
    status,
    wait_until,
)

_MAC = re.compile(r"^(?:[0-9A-Fa-f]{2}[:-]?){5}[0-9A-Fa-f]{2}$")
_MAC_KEYS = {"mac", "id", "clientMac", "apMac", "nearestApMac", "ap"}
MERAKI_SECRET = "supersecret"
SCANNER_MAC = "aabbccddeeff"
SCANNER_TOPIC = "lantern/s1/scanner/AA:BB:CC:DD:EE:FF"
SCANNER_CODE = "]C0SHELF-LABEL-4711"
LOYALTY_BEACON = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-100-3"
THEENGS_IBEACON = (
    b'{"id": "A0:B7:65:01:02:08", "rssi": -70,'
    b' "manufacturerdata": "4c000215426c7565436861726d426561636f6e730efe1355c5"}'
)


def macs_in(value: Any) -> Iterator[str]:
    """Every MAC in a payload's MAC-bearing keys (and topic levels), as 12 lowercase hex."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _MAC_KEYS and isinstance(item, str) and _MAC.match(item):
                yield re.sub("[:-]", "", item).lower()
            yield from macs_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from macs_in(item)
    elif isinstance(value, str):
        for level in value.split("/"):
            if _MAC.match(level):
                yield re.sub("[:-]", "", level).lower()


STATUS_PAGE_MARK = b"\0status page\0"


def forwarded_events(bodies: list[bytes]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for body in bodies:
        if not body.startswith(STATUS_PAGE_MARK):
            document = json.loads(body)
            events.extend(document if isinstance(document, list) else [document])
    return events


def status_pages(bodies: list[bytes]) -> bytes:
    return b"".join(body for body in bodies if body.startswith(STATUS_PAGE_MARK))


def spellings(mac: str) -> set[bytes]:
    pairs = [mac[i : i + 2] for i in range(0, 12, 2)]
    forms = {mac, ":".join(pairs), "-".join(pairs), ".".join(mac[i : i + 4] for i in (0, 4, 8))}
    return {form.encode() for text in forms for form in (text.lower(), text.upper())}


def mqtt_payloads() -> list[tuple[str, bytes]]:
    messages: list[tuple[str, bytes]] = []
    for line in load_jsonl("espresense.jsonl") + load_jsonl("theengs_raw.jsonl"):
        messages.append((line["topic"], json.dumps(line["payload"]).encode()))
    meraki = load_json("meraki_v3_wifi.json")
    messages.append(("lantern/s1/wifi/meraki", json.dumps(meraki).encode()))
    for line in load_jsonl("reorder.jsonl"):
        messages.append(("lantern/s1/reorder/coffee-1", json.dumps(line["payload"]).encode()))
    for scan in load_json("gs1_scans.json"):
        messages.append(("lantern/s1/scanner/till-1", scan["scan"].encode()))
    simulator = StoreSimulator("s1", seed=3, shoppers=30)
    stream = simulator.messages(50.0)
    messages += [
        (topic, payload.encode()) for _, topic, payload in (next(stream) for _ in range(200))
    ]
    messages += [
        # A generic access point observation, and Theengs' decoded form with the MAC as topic.
        (
            "lantern/s1/wifi/ap-7",
            b'{"ap": "ap-7", "mac": "3C:22:FB:12:34:56", "rssi": -61,'
            b' "time": "2026-11-23T08:00:00Z"}',
        ),
        (
            "home/gw2/BTtoMQTT/C1D2E3F4A5B6",
            b'{"id": "C1:D2:E3:F4:A5:B6", "rssi": -77, "brand": "Xiaomi"}',
        ),
        # Store devices publishing under their own address, on every kind of topic level.
        (SCANNER_TOPIC, SCANNER_CODE.encode()),
        ("lantern/s1/reorder/5C-CF-7F-01-02-03", b'{"slot": "pods", "level": 12}'),
        ("lantern/s1/device/5ccf7f010204/status", b'{"status": "online", "battery_pct": 80}'),
        ("espresense/rooms/A0B765010205/telemetry", b'{"uptime": 60, "ver": "v4.0.1"}'),
        ("espresense/devices/iBeacon:" + LOYALTY_BEACON + "/a0b765010206", b'{"rssi": -60}'),
        ("home/A0:B7:65:01:02:07/BTtoMQTT/undecoded", THEENGS_IBEACON),
        # Broken payloads carrying MACs: dead letters must not keep them either.
        ("espresense/devices/0a1b2c3d4e5f/office", b'{"mac": "0a1b2c3d4e5f", "rssi": '),
        ("lantern/s1/wifi/ap-7", b'{"ap": "ap-7", "mac": "5E-6F-70-81-92-A3", "rssi": "loud"}'),
        ("home/gw2/BTtoMQTT/undecoded", b'{"id": "D4:E5:F6:07:18:29", "manufacturerdata": "zz"}'),
    ]
    return messages


# Every console page and API answer a token can read.
CONSOLE_PATHS = (
    "/api/status",
    "/",
    "/floor",
    "/rules",
    "/metrics",
    "/api/devices",
    "/api/dead-letters",
    "/api/rules/traces",
    "/api/diagnostics",
)


@pytest.mark.settings(
    http_sink={"exclude_types": []},
    web={"meraki_secret": MERAKI_SECRET, "meraki_validator": "v", "tokens": WEB_TOKENS},
)
async def test_no_raw_mac_in_the_outbox_the_logs_or_the_http_bodies(
    gateway_settings: Settings,
    clock: ManualClock,
    device: Publisher,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = mqtt_payloads()
    meraki = load_json("meraki_v3_wifi.json")
    macs = {mac for topic, payload in messages for mac in macs_in(topic)}
    for _, payload in messages:
        try:
            macs |= set(macs_in(json.loads(payload)))
        except ValueError:
            macs |= {
                m.replace("-", "").lower()
                for m in re.findall(r"[0-9a-fA-F-]{12,17}", payload.decode())
                if _MAC.match(m)
            }
    assert len(macs) >= 30, "the test needs addresses to look for"
    caplog.set_level(logging.DEBUG)
    async with running_gateway(gateway_settings, clock) as gateway:
        await device.send(messages)
        assert gateway.web is not None
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{gateway.web.url}/meraki", json=meraki) as response,
        ):
            assert response.status == 200
        await wait_until(lambda: gateway.ingest.received >= len(messages) + 1)
        await wait_until(lambda: sink_delivered(gateway) == status(gateway).events_committed)
        status_page = b""
        async with aiohttp.ClientSession() as session:
            for path in CONSOLE_PATHS:
                async with session.get(f"{gateway.web.url}{path}", headers=bearer("admin")) as r:
                    assert r.status == 200, path
                    body = await r.read()
                if path == "/api/diagnostics":  # a zip: what support would read
                    with zipfile.ZipFile(io.BytesIO(body)) as archive:
                        body = b"".join(archive.read(name) for name in archive.namelist())
                status_page += body
    ((dead,),) = outbox_rows(gateway_settings, "SELECT count(*) FROM dead_letters")
    assert dead >= 3
    stored = b"".join(
        path.read_bytes() for path in gateway_settings.data_dir.glob(f"{OUTBOX_FILE_NAME}*")
    )
    logged = "\n".join(
        record.getMessage() + str(record.exc_info or "") for record in caplog.records
    ).encode()
    bodies = [*receiver.bodies, STATUS_PAGE_MARK + status_page]
    forwarded = b"\n".join(bodies)
    assert b"lantern.presence.sighted" in forwarded  # the sightings did go through
    assert b"dead letter" in logged  # and the broken ones were logged, topic and reason
    reads = [event for event in forwarded_events(bodies) if event["type"] == "lantern.scan.read"]
    (read,) = [event for event in reads if event["data"]["code"] == SCANNER_CODE]
    pseudonymizer = Pseudonymizer(load_or_create_secret(gateway_settings.data_dir))
    scanner = pseudonymizer.pseudonym(SCANNER_MAC, datetime.fromisoformat(read["time"]))
    assert (read["source"], read["subject"]) == (f"/stores/s1/devices/{scanner}", scanner)
    assert scanner.encode() in status_pages(bodies)  # shown, by its pseudonym
    for mac in sorted(macs):
        for form in spellings(mac):
            assert form not in stored, f"{form!r} stored in the outbox"
            assert form not in logged, f"{form!r} in the logs"
            assert form not in forwarded, f"{form!r} sent over HTTP or shown on the status page"


# --- topic levels, one observation at a time ---------------------------------------------

DAY = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("level", "private"),
    [
        ("AA:BB:CC:DD:EE:FF", "{p}"),
        ("aa-bb-cc-dd-ee-ff", "{p}"),
        ("aabbccddeeff", "{p}"),
        ("esp32-AABBCCDDEEFF", "esp32-{p}"),
        ("till-3", "till-3"),
        (
            "coffee-2f234454-cf6d-4a0f-adf2-f4911ba9ffa6",
            "coffee-2f234454-cf6d-4a0f-adf2-f4911ba9ffa6",
        ),
    ],
)
def test_an_address_in_a_topic_level_is_the_pseudonym_of_that_address(
    level: str, private: str
) -> None:
    pseudonymizer = Pseudonymizer(b"k" * 32)
    address = pseudonymizer.pseudonym(SCANNER_MAC, DAY)  # as in a payload's mac field

    read = pseudonymizer.apply(ScanRead(device_id=level, code="x"), DAY)
    sighting = pseudonymizer.apply(Sighting(device_id=level, scanner=level), DAY)

    assert read.device_id == private.format(p=address)
    assert (sighting.device_id, sighting.scanner) == (read.device_id, read.device_id)


def test_a_topic_levels_pseudonym_changes_with_the_day_as_an_addresss_does() -> None:
    pseudonymizer = Pseudonymizer(b"k" * 32)
    read = ScanRead(device_id="AA:BB:CC:DD:EE:FF", code="x")
    today = pseudonymizer.apply(read, DAY)
    tomorrow = pseudonymizer.apply(read, DAY + timedelta(days=1))

    assert today.device_id == pseudonymizer.pseudonym(SCANNER_MAC, DAY)
    assert tomorrow.device_id == pseudonymizer.pseudonym(SCANNER_MAC, DAY + timedelta(days=1))
    assert today.device_id != tomorrow.device_id
