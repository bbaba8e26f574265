"""The console's API against a running gateway: devices in trouble first, safe dead letters,
/metrics and /readyz from the same read-model, the rule editor refusing what could never fire
(the running set kept), the backtest giving what ``lantern rules test`` gives, the
diagnostics zip without a secret, and a clean stop with a live page open."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.app import Gateway
from gateway.backtest import backtest
from gateway.clock import ManualClock
from gateway.config import Settings
from gateway.localbroker import Mosquitto
from gateway.receiver import Receiver
from gateway.rulesdir import read_rules, store_catalog
from gateway.web.pages import plain_error
from tests.gateway.console import WEB_TOKENS, bearer
from tests.helpers import (
    Publisher,
    make_settings,
    running_gateway,
    settled,
    status,
    wait_until,
)

EXAMPLES = Path(__file__).parents[2] / "gateway" / "examples"
ZONES = [{"id": "coffee-aisle", "name": "Coffee aisle", "scanners": ["coffee-aisle"]}]
OFFER = """\
id: quick-offer
when: {event: zone.entered, zone: coffee-aisle}
if: 'visitor.segment == null'
then:
  - emit: {type: lantern.offer.triggered, data: {offer: pods-10}}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "quick-offer.yaml").write_text(OFFER)
    return directory


@pytest.fixture
def console_settings(gateway_settings: Settings, rules_dir: Path, tmp_path: Path) -> Settings:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    shutil.copy(EXAMPLES / "recordings" / "coffee-pods.jsonl", recordings)
    return gateway_settings.model_copy(
        update={
            "zones": tuple(gateway_settings.model_validate({"zones": ZONES}).zones),
            "rules": gateway_settings.rules.model_copy(update={"dir": rules_dir}),
            "web": gateway_settings.web.model_copy(update={"recordings_dir": recordings}),
        }
    )


pytestmark = pytest.mark.settings(
    web={"tokens": WEB_TOKENS, "meraki_secret": "s3cret"},
    http_sink={"token": "central-token-do-not-show"},
)


async def get(gateway: Gateway, path: str, role: str = "admin", **params: Any) -> Any:
    assert gateway.web is not None
    async with (
        aiohttp.ClientSession(headers=bearer(role)) as session,
        session.get(gateway.web.url + path, params=params) as response,
    ):
        assert response.status == 200, (path, response.status, await response.text())
        if response.content_type == "application/json":
            return await response.json()
        return await response.read()


async def send(gateway: Gateway, method: str, path: str, body: bytes | str) -> tuple[int, Any]:
    assert gateway.web is not None
    async with (
        aiohttp.ClientSession(headers=bearer("marketer")) as session,
        session.request(method, gateway.web.url + path, data=body) as response,
    ):
        return response.status, await response.json()


async def test_devices_in_trouble_come_first_with_why_and_their_health(
    gateway: Gateway, device: Publisher, clock: ManualClock
) -> None:
    telemetry = {"ver": "v3.3.0", "uptime": 5120, "rssi": -61, "freeHeap": 91000, "ip": "x"}
    await device.send(
        [
            ("espresense/rooms/kitchen/telemetry", json.dumps(telemetry)),
            ("lantern/s1/scanner/till-1", "]C1010590123412345715210526"),
            ("lantern/s1/device/coffee-1/status", "online"),
        ]
    )
    await settled(gateway, 3)
    clock.advance(200)
    await device.send(
        [
            ("lantern/s1/device/coffee-1/status", "offline"),  # its last will
            ("lantern/s1/scanner/till-1", "]C1010590123412345715210526"),
        ]
    )
    await settled(gateway, 5)
    clock.advance(150)  # the kitchen scanner is now 350 s silent: longer than its 300 s
    await wait_until(lambda: not status(gateway).device_rows()[1]["online"])
    devices = await get(gateway, "/api/devices", "technician")
    assert [d["device_id"] for d in devices] == ["kitchen", "coffee-1", "till-1"]
    kitchen, coffee, till = devices
    assert (kitchen["online"], kitchen["offline_reason"]) == (False, "silent")
    assert kitchen["silent_for_s"] == 350 and kitchen["silent_since"] is not None
    assert kitchen["health"] == {
        "firmware": "v3.3.0", "uptime_s": 5120, "wifi_rssi_dbm": -61, "free_heap_bytes": 91000
    }  # fmt: skip
    assert (coffee["online"], coffee["offline_reason"]) == (False, "last will")
    assert (till["online"], till["silent_since"]) == (True, None)
    page = (await get(gateway, "/", "technician")).decode()
    assert "silent for 5 min — no message for longer than 5 min" in page
    assert "silent for 2 min — last will" in page


async def test_every_value_shown_is_text_and_dead_letters_keep_no_identity(
    gateway: Gateway, device: Publisher
) -> None:
    beacon = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"
    await device.send(
        [
            ("lantern/s1/scanner/<script>alert(1)<", "]C1010590123412345715210526"),
            ("espresense/devices/x/office", json.dumps({"id": f"iBeacon:{beacon}", "rssi": "x"})),
        ]
    )
    await settled(gateway, 2)
    page = (await get(gateway, "/", "technician")).decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;" in page
    (letter,) = await get(gateway, "/api/dead-letters", "technician")
    assert letter["kind"] == "espresense: undecodable" and letter["reason"]
    assert beacon not in letter["payload_preview"] and "<id>" in letter["payload_preview"]
    assert beacon not in page


async def test_metrics_and_readiness_read_the_same_status(
    gateway: Gateway, device: Publisher, broker: Mosquitto
) -> None:
    await device.send([("lantern/s1/scanner/till-1", "]C1010590123412345715210526")])
    await settled(gateway, 1)
    await wait_until(lambda: status(gateway).sinks()[0]["delivered"] >= 1)
    text = (await get(gateway, "/metrics", "technician")).decode()
    for line in (
        'lantern_messages_total{family="barcode"} 1.0',
        "lantern_events_committed_total 1.0",
        'lantern_sink_delivered_total{sink="http"} 1.0',
        "lantern_outbox_depth 0.0",
        "lantern_mqtt_connected 1.0",
        "lantern_presence_visitors 0.0",
    ):
        assert line in text.splitlines(), line
    assert gateway.web is not None
    readyz = gateway.web.url + "/readyz"
    await asyncio.to_thread(broker.stop)
    try:
        async with aiohttp.ClientSession() as session:

            async def not_ready() -> bool:
                async with session.get(readyz) as response:
                    return response.status == 503

            await wait_until(not_ready)
            async with session.get(readyz) as response:
                (reason,) = (await response.json())["reasons"]
            assert reason.startswith(f"broker 127.0.0.1:{broker.port} not connected")
    finally:
        await asyncio.to_thread(broker.start)
    await gateway.wait_connected()


@pytest.mark.settings(web={"tokens": WEB_TOKENS, "metrics_public": True})
async def test_metrics_can_be_public_for_a_scraper_without_a_token(gateway: Gateway) -> None:
    assert gateway.web is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.web.url + "/metrics") as response:
            assert response.status == 200
        async with session.get(gateway.web.url + "/api/status") as response:
            assert response.status == 401


async def test_a_bad_rule_is_refused_with_its_field_and_the_running_set_kept(
    console_settings: Settings, clock: ManualClock, rules_dir: Path
) -> None:
    async with running_gateway(console_settings, clock) as gateway:
        misspelt = OFFER.replace("visitor.segment", "visitor.segmnt")
        code, checked = await send(gateway, "POST", "/api/rules/quick-offer/check", misspelt)
        assert (code, checked["ok"]) == (200, False)
        code, refused = await send(gateway, "PUT", "/api/rules/quick-offer", misspelt)
        assert code == 422
        (problem,) = refused["problems"]
        assert (problem["file"], problem["field"]) == ("quick-offer.yaml", "if")
        assert "visitor has no field 'segmnt'" in problem["message"]
        assert (rules_dir / "quick-offer.yaml").read_text() == OFFER
        assert status(gateway).running_rules().ids() == ("quick-offer",)
        code, _ = await send(gateway, "PUT", "/api/rules/other", OFFER)
        assert code == 422  # the body's id is not the one being replaced
        second = OFFER.replace("id: quick-offer", "id: second-offer")
        code, saved = await send(gateway, "PUT", "/api/rules/second-offer", second)
        assert (code, saved) == (200, {"ok": True, "problems": [], "rules": 2})
        assert status(gateway).running_rules().ids() == ("quick-offer", "second-offer")
        assert (rules_dir / "second-offer.yaml").read_text() == second
        listed = await get(gateway, "/api/rules", "marketer")
        assert [(r["id"], r["file"]) for r in listed] == [
            ("quick-offer", "quick-offer.yaml"),
            ("second-offer", "second-offer.yaml"),
        ]
        assert listed[1]["source"] == second


async def test_the_backtest_gives_what_lantern_rules_test_gives(
    console_settings: Settings, clock: ManualClock
) -> None:
    store = Settings.model_validate(
        {
            **yaml.safe_load((EXAMPLES / "store.yaml").read_text()),
            "data_dir": console_settings.data_dir,
            "mqtt": {"url": console_settings.mqtt.url, "client_id": "backtest-console"},
            "web": console_settings.web.model_dump(),
            "rules": {"dir": EXAMPLES / "rules"},
        }
    )
    recording = EXAMPLES / "recordings" / "coffee-pods.jsonl"
    rules = read_rules(EXAMPLES / "rules", store_catalog(store))
    expected = list(backtest(store, rules, recording.read_text().splitlines(), None))
    async with running_gateway(store, clock) as gateway:
        body = json.dumps({"recording": "coffee-pods.jsonl"})
        code, result = await send(gateway, "POST", "/api/rules/backtest", body)
        assert code == 200, result
        assert result == {"lines": json.loads(json.dumps(expected)), "truncated": False}
        draft = (EXAMPLES / "rules" / "coffee-pods-offer.yaml").read_text()
        draft_of = {"id": "coffee-pods-offer", "text": draft}
        request: dict[str, Any] = {"recording": "coffee-pods.jsonl", "draft": draft_of}
        code, result = await send(gateway, "POST", "/api/rules/backtest", json.dumps(request))
        lines = result["lines"]
        fired = [x for x in lines if x.get("kind") == "trace" and x["outcome"] == "fired"]
        assert code == 200 and fired  # explained: when it would have fired
        request["recording"] = "../store.yaml"
        code, _ = await send(gateway, "POST", "/api/rules/backtest", json.dumps(request))
        assert code == 404


async def test_diagnostics_hold_what_support_needs_and_no_secret(
    gateway: Gateway, device: Publisher
) -> None:
    await device.send([("lantern/s1/scanner/till-1", b"\xff not a code")])  # logged once
    await settled(gateway, 1)
    body = await get(gateway, "/api/diagnostics", "technician")
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = set(archive.namelist())
        text = "".join(archive.read(name).decode() for name in names)
        config = json.loads(archive.read("config.json"))
    assert {"config.json", "status.json", "log.txt", "dead_letters.json", "versions.json"} <= names
    assert "central-token-do-not-show" not in text and "s3cret" not in text
    for token in WEB_TOKENS:
        assert token["sha256"] not in text
    assert config["web"]["tokens"][0] == {"name": "technician-1", "role": "technician"}
    assert config["http_sink"]["token"] == "***"
    assert "dead letter (barcode: undecodable)" in text  # the log lines are there


async def test_a_technician_wakes_a_sink_out_of_a_long_backoff(
    broker: Mosquitto, tmp_path: Path, clock: ManualClock, device: Publisher
) -> None:
    """The central record was away and the sink backs off for a minute; it is back, and the
    technician's "retry now" delivers at once. An unknown sink is a 404."""
    central = Receiver()
    await central.start()
    await central.stop()
    settings = make_settings(
        tmp_path / "data",
        broker.url,
        web={"tokens": WEB_TOKENS},
        http_sink={"url": central.url, "retry_min_s": 60, "retry_max_s": 60},
    )
    async with running_gateway(settings, clock) as gateway:
        assert gateway.web is not None
        await device.send([("lantern/s1/scanner/till-1", "9501101531000")])
        await wait_until(lambda: bool(status(gateway).sinks()[0]["last_error"]))
        await central.start()
        async with aiohttp.ClientSession(headers=bearer("technician")) as session:
            async with session.post(f"{gateway.web.url}/api/sinks/nope/wake") as response:
                assert response.status == 404
            async with session.post(f"{gateway.web.url}/api/sinks/http/wake") as response:
                assert response.status == 200
        await wait_until(lambda: len(central.events) == 1, timeout_s=5)  # not in 30-60 s
    await central.stop()


async def test_a_live_page_updates_and_the_gateway_still_stops_at_once(
    gateway_settings: Settings, clock: ManualClock
) -> None:
    async with running_gateway(gateway_settings, clock) as gateway:
        assert gateway.web is not None
        session = aiohttp.ClientSession(headers=bearer("technician"))
        response = await session.get(gateway.web.url + "/live/status")
        assert response.headers["content-type"].startswith("text/event-stream")
        first = await response.content.readuntil(b"\n\n")
        assert first.startswith(b"event: update\ndata: ")
        assert set(json.loads(first.split(b"data: ", 1)[1])) >= {"overview", "devices"}
    # The stream was open while the gateway stopped: it ended rather than holding it.
    assert await response.content.read() == b""
    response.close()
    await session.close()


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        ("cannot connect: Connection refused", "nothing answers at that address"),
        ("broker refused the connection: not authorized", "refused the user name or password"),
        (
            "the broker refused the connection: bad user name or password",
            "refused the user name or password",
        ),
    ],
)
def test_a_refused_login_reads_as_credentials_not_as_nothing_answering(
    error: str, meaning: str
) -> None:
    assert meaning in plain_error(error)
