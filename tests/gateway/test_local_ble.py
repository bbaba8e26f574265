"""The local radio source with a fake scanner that delivers real AdvertisementData objects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bluetooth_data_tools import parse_advertisement_data_bytes

from devices import theengs
from devices.model import Message, Sighting
from gateway.batch import Inbound
from gateway.clock import ManualClock
from gateway.config import BleSettings
from gateway.sources.ble import BleSource
from tests.fixture_files import load_json
from tests.helpers import wait_until

ADVERTS = load_json("ble_adverts.json")


def advertisement(adv_hex: str, rssi: int = -60) -> AdvertisementData:
    name, uuids, service_data, manufacturer_data, tx_power = parse_advertisement_data_bytes(
        bytes.fromhex(adv_hex)
    )
    return AdvertisementData(
        name, dict(manufacturer_data), dict(service_data), list(uuids), tx_power, rssi, ()
    )


class FakeScanner:
    """Stands in for BleakScanner: delivers the given advertisements when started."""

    def __init__(self, adverts: list[AdvertisementData], fail: Exception | None = None) -> None:
        self._adverts = adverts
        self._fail = fail
        self.starts = 0
        self._callback: Callable[[BLEDevice, AdvertisementData], None] | None = None

    def __call__(self, detection_callback: Any, **kwargs: Any) -> FakeScanner:
        self._callback = detection_callback
        return self

    async def __aenter__(self) -> FakeScanner:
        self.starts += 1
        if self._fail is not None:
            raise self._fail
        device = BLEDevice("C0:FF:EE:00:00:01", None, {"props": {"AddressType": "random"}})
        for adv in self._adverts:
            assert self._callback is not None
            self._callback(device, adv)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


async def started(source: BleSource) -> asyncio.Task[None]:
    """The source running, its scanner started (every advertisement delivered by then)."""
    task = asyncio.create_task(source.run())
    await asyncio.sleep(0)  # one turn of the loop: the scanner's __aenter__ has run
    return task


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("fixture", ADVERTS, ids=[entry["name"] for entry in ADVERTS])
async def test_fixture_advertisements_decode_through_the_gateway_path(
    fixture: dict[str, Any], clock: ManualClock
) -> None:
    received: list[Inbound] = []
    scanner = FakeScanner([advertisement(fixture["adv_hex"])])
    source = BleSource(BleSettings(enabled=True), "s1", received.append, clock, scanner)
    await stopped(await started(source))
    (inbound,) = received
    assert inbound.topic == "lantern/s1/ble/gateway"
    assert inbound.received_at == clock.now()
    message = Message(inbound.topic, inbound.payload, inbound.received_at, {"gw": "gateway"})
    (sighting,) = theengs.parse(message) or []
    assert isinstance(sighting, Sighting)
    assert sighting.rssi == -60
    assert sighting.mac_random is True
    assert sighting.beacon is not None
    for key, value in fixture["expect"].items():
        assert sighting.beacon[key] == pytest.approx(value), key


async def test_the_watchdog_restarts_a_silent_scanner_and_counts_it(clock: ManualClock) -> None:
    scanner = FakeScanner([])
    settings = BleSettings(enabled=True, stall_timeout_s=60)
    source = BleSource(settings, "s1", lambda _: None, clock, scanner)
    task = await started(source)
    for minute in range(3):
        clock.advance(59)
        await asyncio.sleep(0)
        assert source.restarts == minute  # not yet: the minute is not over
        clock.advance(1)
        await wait_until(
            lambda after=minute + 1: (source.restarts, scanner.starts) == (after, after + 1)
        )
    await stopped(task)
    assert source.restarts == 3
    assert scanner.starts == 4


async def test_no_adapter_is_one_clear_log_line_not_a_crash(
    caplog: pytest.LogCaptureFixture, clock: ManualClock
) -> None:
    scanner = FakeScanner([], fail=BleakError("No Bluetooth adapters found."))
    source = BleSource(BleSettings(enabled=True), "s1", lambda _: None, clock, scanner)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(source.run(), 5)
    (record,) = caplog.records
    assert "local Bluetooth off" in record.getMessage()
    assert "No Bluetooth adapters found" in record.getMessage()
