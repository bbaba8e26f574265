"""The console as its users see it, in real Chromium: a technician logs in with a token and
watches a device go silent without reloading; the floor map fills after sightings; a
marketer's misspelt rule is refused with its field while the running set keeps running; each
role is kept to its own; /docs works from the box alone. Each page is photographed at 390 px
(a phone) and 1400 px into build/screenshots/ for a reviewer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import Settings
from gateway.web.history import HISTORY_INTERVAL_S
from tests.browser.conftest import SCREENSHOTS
from tests.fixture_files import load_json
from tests.gateway.console import TOKENS, WEB_TOKENS
from tests.helpers import Publisher, running_gateway, settled, status

PHONE, DESKTOP = 390, 1400
ZONES = [
    {"id": "coffee-aisle", "name": "Coffee aisle", "scanners": ["coffee-aisle"]},
    {"id": "bakery", "name": "Bakery", "scanners": ["bakery"]},
    {"id": "aisle-1", "name": "Aisle 1", "polygon": [[0, 0], [20, 0], [20, 12], [0, 12]]},
    {"id": "aisle-2", "name": "Aisle 2", "polygon": [[20, 0], [40, 0], [40, 12], [20, 12]]},
]
OFFER = """\
id: coffee-offer
description: A member at the coffee aisle sees a pods offer
when: {event: zone.entered, zone: coffee-aisle}
if: 'visitor.segment == null'
then:
  - emit: {type: lantern.offer.triggered, data: {offer: pods-10}}
"""
MERAKI = load_json("meraki_v3_wifi.json")


@pytest.fixture
def console_settings(gateway_settings: Settings, tmp_path: Path) -> Settings:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "coffee-offer.yaml").write_text(OFFER)
    return Settings.model_validate(
        {
            **gateway_settings.model_dump(),
            "timezone": "Europe/Amsterdam",
            "zones": ZONES,
            "rules": {"dir": rules},
            "web": {
                "port": 0,
                "tokens": WEB_TOKENS,
                "meraki_secret": MERAKI["secret"],
                "meraki_validator": "v",
            },
        }
    )


@pytest.fixture
async def console(console_settings: Settings, clock: ManualClock) -> AsyncIterator[Gateway]:
    async with running_gateway(console_settings, clock) as gateway:
        yield gateway


async def logged_in(browser: Browser, gateway: Gateway, role: str, path: str = "/") -> Page:
    assert gateway.web is not None
    page = await browser.new_page(viewport={"width": DESKTOP, "height": 900})
    response = await page.goto(gateway.web.url + path)
    assert response is not None and response.status == 401  # the login form
    await page.fill("#token", TOKENS[role])
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    return page


async def photograph(page: Page, name: str) -> None:
    """The whole page at a phone's width and a desktop's; the phone's must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (PHONE, DESKTOP):
        await page.set_viewport_size({"width": width, "height": 900})
        await page.wait_for_timeout(100)  # the layout settles
        scroll_width = await page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{name} scrolls sideways at {width} px"
        await page.screenshot(path=SCREENSHOTS / f"{name}-{width}.png", full_page=True)


async def test_a_technician_sees_a_device_go_silent_without_reloading(
    browser: Browser, console: Gateway, device: Publisher, clock: ManualClock
) -> None:
    telemetry = {"ver": "v3.3.0", "uptime": 5120, "rssi": -61, "freeHeap": 91000}
    await device.send(
        [
            ("espresense/rooms/bakery/telemetry", json.dumps(telemetry)),
            ("lantern/s1/scanner/till-1", "]C1010590123412345715210526"),
            ("lantern/s1/scanner/till-1", b"\xff not a code"),
        ]
    )
    await settled(console, 3)
    page = await logged_in(browser, console, "technician")
    devices = page.locator("#devices")
    await expect(devices.locator("[data-device=bakery]")).to_contain_text("online")
    await expect(devices).to_contain_text("firmware: v3.3.0")
    await page.evaluate("window.notReloaded = true")
    clock.advance(301)  # the bakery scanner's 300 s pass with no word from it
    bakery = devices.locator("[data-device=bakery]")
    await expect(bakery).to_contain_text("silent for 5 min", timeout=10_000)
    assert await page.evaluate("window.notReloaded") is True
    assert await devices.locator("li").first.get_attribute("data-device") == "bakery"
    await expect(page.locator("#dead-letters")).to_contain_text("barcode: undecodable")
    await photograph(page, "status")


async def test_the_floor_map_shows_occupancy_after_sightings(
    browser: Browser, console: Gateway, device: Publisher, clock: ManualClock
) -> None:
    beacon = "iBeacon:0a0b0c0d-0000-4000-8000-000000000001-1-2"
    sighting = json.dumps({"id": beacon, "rssi": -60.0, "distance": 1.5})
    await device.send([(f"espresense/devices/{beacon}/coffee-aisle", sighting)])
    await settled(console, 1)
    page = await logged_in(browser, console, "marketer", "/floor")
    await expect(page.locator("svg.floor [data-zone=coffee-aisle] .count")).to_have_text("1")
    for _ in range(4):  # samples for the charts, one each 10 s of the gateway's clock
        clock.advance(HISTORY_INTERVAL_S)
        await page.wait_for_timeout(50)
    assert console.web is not None
    response = await page.request.post(console.web.url + "/meraki", data=json.dumps(MERAKI))
    assert response.status == 200  # a Wi-Fi phone at (8.6, 11.4) m: in aisle 1
    await expect(page.locator("svg.floor [data-zone=aisle-1] .count")).to_have_text(
        "1", timeout=10_000
    )
    await expect(page.locator("#charts [data-chart=messages_per_s] polyline")).to_have_count(
        1, timeout=10_000
    )
    await photograph(page, "floor")


async def test_a_marketers_misspelt_rule_is_refused_and_the_running_set_kept(
    browser: Browser, console: Gateway
) -> None:
    page = await logged_in(browser, console, "marketer")
    assert page.url.endswith("/rules")  # a marketer's home
    await page.click("[data-rule=coffee-offer]")
    await expect(page.locator("#rule-text")).to_have_value(OFFER)
    await page.fill("#rule-text", OFFER.replace("visitor.segment", "visitor.segmnt"))
    problems = page.locator("#problems")
    await expect(problems).to_contain_text(
        "coffee-offer.yaml: if: visitor.segmnt: visitor has no field 'segmnt'"
    )  # as they typed, before saving
    await page.click("#save")
    await expect(page.locator("#saved")).to_contain_text("Not saved")
    assert status(console).running_rules()["coffee-offer"].condition is not None
    source = status(console).rule_sources()["coffee-offer"][1]
    assert source == OFFER  # the file as it was
    await page.select_option("#recording", index=0)
    diagnostics = await page.evaluate("fetch('/api/diagnostics').then(r => r.status)")
    assert diagnostics == 403
    await photograph(page, "rules")


async def test_a_technician_cannot_edit_rules_and_the_docs_need_no_internet(
    browser: Browser, console: Gateway
) -> None:
    page = await logged_in(browser, console, "technician")
    refused = await page.evaluate(
        "fetch('/api/rules/coffee-offer', {method: 'PUT', body: 'id: x'}).then(r => r.status)"
    )
    assert refused == 403
    assert (await page.goto(page.url.rstrip("/") + "/rules")).status == 403  # type: ignore[union-attr]
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    assert console.web is not None
    await page.goto(console.web.url + "/docs")
    await expect(page.locator(".swagger-ui .title")).to_contain_text("Lantern store console")
    await expect(page.locator(".opblock-tag-section").first).to_be_visible()
    assert errors == []
