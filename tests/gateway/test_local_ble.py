"""The local radio source with a fake scanner that delivers real AdvertisementData objects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bluetooth_data_tools import parse_advertisement_data_bytes

from devices import theengs
from devices.model import Message, Sighting
from gateway.config import BleSettings
from gateway.mqtt import Inbound
from gateway.sources.ble import BleSource
from tests.fixture_files import load_json

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


def run_briefly(source: BleSource, seconds: float) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(source.run())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


@pytest.mark.parametrize("fixture", ADVERTS, ids=[entry["name"] for entry in ADVERTS])
def test_fixture_advertisements_decode_through_the_gateway_path(fixture: dict[str, Any]) -> None:
    received: list[Inbound] = []
    scanner = FakeScanner([advertisement(fixture["adv_hex"])])
    source = BleSource(BleSettings(enabled=True), "s1", received.append, scanner)
    run_briefly(source, 0.05)
    (inbound,) = received
    assert inbound.topic == "lantern/s1/ble/gateway"
    message = Message(inbound.topic, inbound.payload, datetime.now(UTC), {"gw": "gateway"})
    (sighting,) = theengs.parse(message) or []
    assert isinstance(sighting, Sighting)
    assert sighting.rssi == -60
    assert sighting.mac_random is True
    assert sighting.beacon is not None
    for key, value in fixture["expect"].items():
        assert sighting.beacon[key] == pytest.approx(value), key


def test_the_watchdog_restarts_a_silent_scanner_and_counts_it() -> None:
    scanner = FakeScanner([])
    source = BleSource(
        BleSettings(enabled=True, stall_timeout_s=0.05), "s1", lambda _: None, scanner
    )
    run_briefly(source, 0.4)
    assert source.restarts >= 3
    assert scanner.starts == source.restarts + 1


def test_no_adapter_is_one_clear_log_line_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    scanner = FakeScanner([], fail=BleakError("No Bluetooth adapters found."))
    source = BleSource(BleSettings(enabled=True), "s1", lambda _: None, scanner)
    with caplog.at_level(logging.ERROR):
        asyncio.run(asyncio.wait_for(source.run(), 5))
    (record,) = caplog.records
    assert "local Bluetooth off" in record.getMessage()
    assert "No Bluetooth adapters found" in record.getMessage()
