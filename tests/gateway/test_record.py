"""``lantern record``: live traffic in the recording format, replayable by the backtest."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.backtest import backtest, read_recording
from gateway.clock import ManualClock
from gateway.config import DEFAULT_SOURCES
from gateway.localbroker import Mosquitto, free_port
from gateway.record import http_mirror_topic, record
from gateway.router import Router, default_decoders
from lantern.errors import BrokerUnreachable
from rules.model import parse_rules
from tests.fixture_files import load_json
from tests.helpers import Publisher, make_settings, running_gateway, status, wait_until

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
        self.client.disconnect()  # first: it wakes paho's network thread, which then ends
        self.client.loop_stop()


SCAN = "]C1010950110153000317211234"


@pytest.fixture
def watcher(broker: Mosquitto) -> Iterator[RecorderWatch]:
    watch = RecorderWatch(broker.port)
    yield watch
    watch.close()


async def test_recorded_traffic_keeps_no_address_and_replays_as_it_decoded(
    broker: Mosquitto, tmp_path: Path, device: Publisher, watcher: RecorderWatch
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
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        recording = tasks.create_task(record(settings, out, stop))
        # "online" follows the subscription on the recorder's connection.
        await asyncio.to_thread(watcher.online.wait, 15)
        await device.send(messages)
        await wait_until(lambda: len(out.read_text().splitlines()) == len(messages))
        stop.set()
    assert recording.result() == len(messages)
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


def test_the_gateway_does_not_subscribe_to_its_own_http_mirror() -> None:
    mirror = http_mirror_topic("s1", "lantern/s1/wifi/meraki")
    subscriptions = Router(DEFAULT_SOURCES, "s1", default_decoders()).subscriptions()
    assert not [topic for topic, _ in subscriptions if paho.topic_matches_sub(topic, mirror)]


async def test_meraki_posts_over_http_are_recorded_too(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, watcher: RecorderWatch
) -> None:
    out = tmp_path / "wifi.jsonl"
    meraki = load_json("meraki_v3_wifi.json")
    settings = make_settings(
        tmp_path / "data",
        broker.url,
        web={"meraki_validator": "v", "meraki_secret": meraki["secret"]},
        zones=[{"id": "floor", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}],
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(record(settings, out, stop))
        await asyncio.to_thread(watcher.online.wait, 15)
        async with running_gateway(settings, clock) as gateway, aiohttp.ClientSession() as session:
            assert gateway.web is not None
            async with session.post(f"{gateway.web.url}/meraki", json=meraki) as response:
                assert response.status == 200
            await wait_until(lambda: out.exists() and out.read_text() != "")
            received = gateway.ingest.received  # the post alone, not its mirror
            committed = status(gateway).events_committed
        stop.set()
    assert received == 1
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


async def test_an_unreachable_broker_is_an_error_not_an_empty_recording(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", f"mqtt://127.0.0.1:{free_port()}")
    with pytest.raises(BrokerUnreachable, match=r"mqtt.url: cannot reach the broker at 127.0.0.1:"):
        await record(settings, tmp_path / "none.jsonl", asyncio.Event(), connect_timeout_s=1.0)
