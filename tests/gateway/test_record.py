"""``lantern record``: live traffic to DESIGN.md's recording format, replayable by the backtest."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.backtest import backtest, read_recording
from gateway.localbroker import Mosquitto
from gateway.record import record
from rules.model import parse_rules
from tests.fixture_files import load_json
from tests.helpers import Publisher, make_settings, running_gateway, wait_until

PHONE_MAC = "c2f0aa000001"


class RecorderWatch:
    """Sees the recorder's retained "online", which it publishes after subscribing."""

    def __init__(self, port: int) -> None:
        self.online = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{port}")
        self.client.on_message = lambda _c, _u, m: m.payload == b"online" and self.online.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("lantern/s1/recorder/status", qos=1)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


SCAN = "]C1010950110153000317211234"


def test_recorded_traffic_keeps_no_address_and_replays_as_it_decoded(
    broker: Mosquitto, tmp_path: Path
) -> None:
    out = tmp_path / "today.jsonl"
    settings = make_settings(
        tmp_path / "data", broker.url, zones=[{"id": "bakery", "scanners": ["bakery"]}]
    )
    messages: list[tuple[str, bytes | str]] = [
        (
            f"espresense/devices/{PHONE_MAC}/bakery",
            json.dumps({"id": PHONE_MAC, "mac": "C2:F0:AA:00:00:01", "rssi": -60, "distance": 1}),
        ),
        ("lantern/s1/scanner/till-1", SCAN),
        ("lantern/s1/scanner/till-2", b"\xff\xfe not text"),
    ]

    watcher = RecorderWatch(broker.port)

    async def scenario() -> int:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            recording = tasks.create_task(record(settings, out, stop))
            # "online" follows the subscription on the recorder's connection.
            await asyncio.to_thread(watcher.online.wait, 15)
            with Publisher(broker.port) as device:
                device.publish_all(messages)
            await wait_until(lambda: len(out.read_text().splitlines()) == len(messages))
            stop.set()
        return recording.result()

    try:
        assert asyncio.run(scenario()) == len(messages)
    finally:
        watcher.close()
    text = out.read_text(encoding="utf-8")
    for spelling in (PHONE_MAC, "c2:f0:aa:00:00:01"):
        assert spelling not in text.lower()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [set(line) for line in lines] == [
        {"t", "topic", "qos", "payload"},
        {"t", "topic", "qos", "payload"},
        {"t", "topic", "qos", "payload_b64"},
    ]
    assert lines[1]["payload"] == SCAN
    replayed = [message.inbound for message in read_recording(text.splitlines())]
    assert replayed[2].payload == b"\xff\xfe not text"

    # The backtest decodes the stand-in address: the visitor enters the bakery.
    output = list(backtest(settings, parse_rules({}), text.splitlines()))
    (entered,) = [line for line in output if line.get("type") == "lantern.zone.entered"]
    assert entered["data"]["zone"] == "bakery"
    assert entered["subject"].startswith("p-")


def test_meraki_posts_over_http_are_recorded_too(broker: Mosquitto, tmp_path: Path) -> None:
    out = tmp_path / "wifi.jsonl"
    meraki = load_json("meraki_v3_wifi.json")
    settings = make_settings(
        tmp_path / "data",
        broker.url,
        web={"meraki_validator": "v", "meraki_secret": meraki["secret"]},
        mqtt={"client_id": "lantern-http-mirror"},
        zones=[{"id": "floor", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}],
    )
    watcher = RecorderWatch(broker.port)

    async def scenario() -> int:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(record(settings, out, stop))
            await asyncio.to_thread(watcher.online.wait, 15)
            async with running_gateway(settings) as gateway, aiohttp.ClientSession() as session:
                assert gateway.web is not None
                async with session.post(f"{gateway.web.url}/meraki", json=meraki) as response:
                    assert response.status == 200
                await wait_until(lambda: out.exists() and out.read_text() != "")
                await asyncio.sleep(0.5)  # the mirror is not ingested: nothing more comes
                committed = gateway.outbox.events_committed
            stop.set()
        return committed

    try:
        committed = asyncio.run(scenario())
    finally:
        watcher.close()
    text = out.read_text(encoding="utf-8")
    (line,) = [json.loads(line) for line in text.splitlines()]
    assert line["topic"] == "lantern/s1/wifi/meraki"  # as the gateway ingested it
    assert meraki["secret"] not in text
    for observation in meraki["data"]["observations"]:
        assert observation["clientMac"].lower() not in text.lower()
    # Replayed, the post places its phones on the floor as it did live.
    replayed = list(backtest(settings, parse_rules({}), text.splitlines()))
    entered = [e for e in replayed if e.get("type") == "lantern.zone.entered"]
    assert len(entered) == len(meraki["data"]["observations"])
    assert committed == 2 * len(entered)  # live: a sighting and a zone entry each, no more
