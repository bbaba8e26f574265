"""``lantern record``: live traffic to DESIGN.md's recording format, replayable by the backtest."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.backtest import backtest, read_recording
from gateway.localbroker import Mosquitto
from gateway.record import record
from rules.model import parse_rules
from tests.helpers import Publisher, make_settings, wait_until

PHONE_MAC = "c2f0aa000001"
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

    recorder_online = threading.Event()
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id="recorder-watch")
    watcher.on_message = lambda _c, _u, m: m.payload == b"online" and recorder_online.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe("lantern/s1/recorder/status", qos=1)
    watcher.loop_start()

    async def scenario() -> int:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            recording = tasks.create_task(record(settings, out, stop))
            # "online" follows the subscription on the recorder's connection.
            await asyncio.to_thread(recorder_online.wait, 15)
            with Publisher(broker.port) as device:
                device.publish_all(messages)
            await wait_until(lambda: len(out.read_text().splitlines()) == len(messages))
            stop.set()
        return recording.result()

    try:
        assert asyncio.run(scenario()) == len(messages)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
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
