"""Wi-Fi and reorder sources end to end: real Mosquitto, the Meraki receiver, real files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from gateway.localbroker import Mosquitto
from gateway.receiver import Receiver
from tests.fixture_files import load_json
from tests.helpers import Publisher, make_settings, running_gateway, wait_until

COFFEE_PODS_GTIN = "07612100055557"
REGISTRY = [
    {
        "id": "coffee-1",
        "expected_interval_s": 900,
        "slots": [
            {"slot": "pods", "gtin": COFFEE_PODS_GTIN, "threshold": 10, "rearm_level": 40},
        ],
    }
]


def level(value: float) -> str:
    return json.dumps({"slot": "pods", "level": value, "unit": "count"})


def test_meraki_receiver_checks_the_validator_and_the_secret(
    broker: Mosquitto, tmp_path: Path
) -> None:
    meraki = load_json("meraki_v3_wifi.json")

    async def scenario() -> list[Any]:
        settings = make_settings(
            tmp_path, broker.url, web={"meraki_validator": "abc123", "meraki_secret": "supersecret"}
        )
        async with running_gateway(settings) as gateway, aiohttp.ClientSession() as session:
            assert gateway.web is not None
            url = f"{gateway.web.url}/meraki"
            async with session.get(url) as response:
                assert (response.status, await response.text()) == (200, "abc123")
            async with session.post(url, json={**meraki, "secret": "wrong"}) as response:
                assert response.status == 403
            async with session.post(
                url, json={k: v for k, v in meraki.items() if k != "secret"}
            ) as r:
                assert r.status == 403
            async with session.post(url, json=meraki) as response:
                assert response.status == 200
            # Answered only after commit: the event is already in the outbox.
            rows = await gateway.outbox.query("SELECT type, body FROM events")
        return [(kind, json.loads(body)) for kind, body in rows]

    rows = asyncio.run(scenario())
    sightings = [body for kind, body in rows if kind == "lantern.presence.sighted"]
    assert len(sightings) == 1
    data = sightings[0]["data"]
    assert data["position"] == [8.591860719528196, 11.404523745521399]
    assert data["rssi"] == -47.0
    assert data["technology"] == "wifi"
    assert data["mac"].startswith("p-") and data["ap_mac"].startswith("p-")
    assert "supersecret" not in json.dumps(rows)


def test_a_generic_access_point_observation_over_mqtt(broker: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> list[Any]:
        settings = make_settings(tmp_path, broker.url)
        async with running_gateway(settings) as gateway:
            with Publisher(broker.port) as device:
                device.publish_all(
                    [
                        (
                            "lantern/s1/wifi/ap-aisle-3",
                            '{"ap": "ap-aisle-3", "mac": "DA:A1:19:00:00:01", "rssi": -61,'
                            ' "time": "2026-11-24T10:00:00Z"}',
                        )
                    ]
                )
            await wait_until(lambda: gateway.outbox.events_committed >= 1)
            rows = await gateway.outbox.query(
                "SELECT body FROM events WHERE type = 'lantern.presence.sighted'"
            )
        return [json.loads(body) for (body,) in rows]

    (event,) = asyncio.run(scenario())
    assert event["source"] == "/stores/s1/devices/ap-aisle-3"
    assert event["time"] == "2026-11-24T10:00:00Z"
    assert event["data"]["scanner"] == "ap-aisle-3"
    assert event["data"]["mac_random"] is True  # 0xda has the locally administered bit
    assert event["data"]["rssi"] == -61


def test_reorder_is_requested_after_three_low_reports_across_a_restart(
    broker: Mosquitto, tmp_path: Path
) -> None:
    topic = "lantern/s1/reorder/coffee-1"

    async def publish_and_settle(levels: list[float], receiver: Receiver, events: int) -> None:
        settings = make_settings(
            tmp_path, broker.url, http_sink={"url": receiver.url}, devices=REGISTRY
        )
        async with running_gateway(settings) as gateway:
            with Publisher(broker.port) as device:
                device.publish_all([(topic, level(value)) for value in levels])
            await wait_until(lambda: gateway.outbox.events_committed >= events)
            await wait_until(lambda: gateway._sinks[0].delivered >= events)

    def reorder_events(receiver: Receiver) -> list[dict[str, Any]]:
        return sorted(
            (e for e in receiver.events.values() if e["type"].startswith("lantern.reorder.")),
            key=lambda event: event["id"],
        )

    async def scenario() -> None:
        async with Receiver() as receiver:
            # Two low reports (two telemetry events), then the gateway restarts mid-streak.
            await publish_and_settle([8, 7], receiver, 2)
            assert reorder_events(receiver) == []
            await publish_and_settle([6, 5, 20], receiver, 4)
            (requested,) = reorder_events(receiver)
            assert requested["type"] == "lantern.reorder.requested"
            assert requested["source"] == "/stores/s1/devices/coffee-1"
            assert requested["data"] == {
                "slot": "pods",
                "level": 6.0,
                "unit": "count",
                "gtin": COFFEE_PODS_GTIN,
            }
            # 20 is above the threshold but not above the re-arm level: still outstanding.
            await publish_and_settle([50], receiver, 2)
            cleared = reorder_events(receiver)[-1]
            assert cleared["type"] == "lantern.reorder.cleared"
            assert cleared["data"]["level"] == 50.0
            assert len(reorder_events(receiver)) == 2

    asyncio.run(scenario())
