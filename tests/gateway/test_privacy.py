"""No raw MAC address is stored, logged or forwarded: every fixture and test payload through
the whole pipeline, then the outbox files, the logs and the HTTP bodies are searched for every
address in every spelling."""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from firmware_stubs.store_sim import StoreSimulator
from gateway.app import OUTBOX_FILE_NAME
from gateway.clock import ManualClock
from gateway.config import Settings
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
    forwarded = b"\n".join([*receiver.bodies, status_page])
    assert b"lantern.presence.sighted" in forwarded  # the sightings did go through
    assert b"dead letter" in logged  # and the broken ones were logged, topic and reason
    for mac in sorted(macs):
        for form in spellings(mac):
            assert form not in stored, f"{form!r} stored in the outbox"
            assert form not in logged, f"{form!r} in the logs"
            assert form not in forwarded, f"{form!r} sent over HTTP or shown on the status page"
