"""Wi-Fi and reorder sources end to end: real Mosquitto, the Meraki receiver, real files."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import Settings
from gateway.receiver import Receiver
from tests.fixture_files import load_json
from tests.helpers import (
    Publisher,
    outbox_rows,
    running_gateway,
    sink_delivered,
    status,
    wait_until,
)

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


MERAKI = load_json("meraki_v3_wifi.json")


@pytest.mark.settings(web={"meraki_validator": "abc123", "meraki_secret": MERAKI["secret"]})
async def test_meraki_receiver_checks_the_validator_and_the_secret(
    gateway: Gateway, gateway_settings: Settings
) -> None:
    assert gateway.web is not None
    url = f"{gateway.web.url}/meraki"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert (response.status, await response.text()) == (200, "abc123")
        async with session.post(url, json={**MERAKI, "secret": "wrong"}) as response:
            assert response.status == 403
        without_secret = {k: v for k, v in MERAKI.items() if k != "secret"}
        async with session.post(url, json=without_secret) as response:
            assert response.status == 403
        async with session.post(url, json=MERAKI) as response:
            assert response.status == 200
    # Answered only after commit: the event is already in the outbox.
    rows = [
        (kind, json.loads(body))
        for kind, body in outbox_rows(gateway_settings, "SELECT type, body FROM events")
    ]
    sightings = [body for kind, body in rows if kind == "lantern.presence.sighted"]
    assert len(sightings) == 1
    data = sightings[0]["data"]
    assert data["position"] == [8.591860719528196, 11.404523745521399]
    assert data["rssi"] == -47.0
    assert data["technology"] == "wifi"
    assert data["mac"].startswith("p-") and data["ap_mac"].startswith("p-")
    assert MERAKI["secret"] not in json.dumps(rows)


async def test_a_generic_access_point_observation_over_mqtt(
    gateway: Gateway, gateway_settings: Settings, device: Publisher
) -> None:
    await device.send(
        [
            (
                "lantern/s1/wifi/ap-aisle-3",
                '{"ap": "ap-aisle-3", "mac": "DA:A1:19:00:00:01", "rssi": -61,'
                ' "time": "2026-11-24T10:00:00Z"}',
            )
        ]
    )
    await wait_until(lambda: status(gateway).events_committed >= 1)
    (event,) = [
        json.loads(body)
        for (body,) in outbox_rows(
            gateway_settings, "SELECT body FROM events WHERE type = 'lantern.presence.sighted'"
        )
    ]
    assert event["source"] == "/stores/s1/devices/ap-aisle-3"
    assert event["time"] == "2026-11-24T10:00:00Z"
    assert event["data"]["scanner"] == "ap-aisle-3"
    assert event["data"]["mac_random"] is True  # 0xda has the locally administered bit
    assert event["data"]["rssi"] == -61


@pytest.mark.settings(devices=REGISTRY)
async def test_reorder_is_requested_after_three_low_reports_across_a_restart(
    gateway_settings: Settings, clock: ManualClock, device: Publisher, receiver: Receiver
) -> None:
    topic = "lantern/s1/reorder/coffee-1"

    async def publish_and_settle(levels: list[float], events: int) -> None:
        async with running_gateway(gateway_settings, clock) as gateway:
            await device.send([(topic, level(value)) for value in levels])
            await wait_until(lambda: status(gateway).events_committed >= events)
            await wait_until(lambda: sink_delivered(gateway) >= events)
        clock.advance(1.0)  # time passes between runs: ids stay time-ordered across them

    def reorder_events() -> list[dict[str, Any]]:
        return sorted(
            (e for e in receiver.events.values() if e["type"].startswith("lantern.reorder.")),
            key=lambda event: event["id"],
        )

    # Two low reports (two telemetry events), then the gateway restarts mid-streak.
    await publish_and_settle([8, 7], 2)
    assert reorder_events() == []
    await publish_and_settle([6, 5, 20], 4)
    (requested,) = reorder_events()
    assert requested["type"] == "lantern.reorder.requested"
    assert requested["source"] == "/stores/s1/devices/coffee-1"
    assert requested["data"] == {
        "slot": "pods",
        "level": 6.0,
        "unit": "count",
        "gtin": COFFEE_PODS_GTIN,
    }
    # 20 is above the threshold but not above the re-arm level: still outstanding.
    await publish_and_settle([50], 2)
    cleared = reorder_events()[-1]
    assert cleared["type"] == "lantern.reorder.cleared"
    assert cleared["data"]["level"] == 50.0
    assert len(reorder_events()) == 2
