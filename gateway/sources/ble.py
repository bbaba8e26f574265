"""The box's own Bluetooth radio, through bleak.

Each advertisement is handed to ingest as a Theengs-raw-shaped message on
``lantern/{store}/ble/{scanner}`` (the ``local-ble`` source), so it takes the same decoders,
privacy step, recording and rules as a BLE gateway's message over MQTT.

BlueZ is known to stop delivering advertisements without an error after hours of scanning;
a watchdog restarts the scanner when nothing arrived for ``stall_timeout_s``, and counts it. No
adapter, or no BlueZ (no D-Bus), is one clear log line and the source stops; the rest of the
gateway runs on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from gateway.batch import Inbound
from gateway.clock import Clock
from gateway.config import BleSettings

__all__ = ["BleSource", "advertisement_payload"]

log = logging.getLogger(__name__)

ScannerFactory = Callable[..., AbstractAsyncContextManager[Any]]
_ADDRESS_TYPE_RANDOM = "random"  # BlueZ's AddressType property


def advertisement_payload(device: BLEDevice, advertisement: AdvertisementData) -> bytes:
    """The advertisement as Theengs Gateway would publish it (raw form)."""
    document: dict[str, Any] = {"id": device.address, "rssi": advertisement.rssi}
    props = device.details.get("props", {}) if isinstance(device.details, dict) else {}
    address_type = props.get("AddressType")
    if address_type is not None:
        document["mac_type"] = 1 if address_type == _ADDRESS_TYPE_RANDOM else 0
    if advertisement.tx_power is not None:
        document["txpower"] = advertisement.tx_power
    # Theengs carries one manufacturer and one service entry; a beacon frame needs only one.
    for company_id, data in advertisement.manufacturer_data.items():
        document["manufacturerdata"] = (company_id.to_bytes(2, "little") + data).hex()
        break
    for service_uuid, data in advertisement.service_data.items():
        document["servicedatauuid"] = service_uuid
        document["servicedata"] = data.hex()
        break
    return json.dumps(document, separators=(",", ":")).encode()


class BleSource:
    def __init__(
        self,
        settings: BleSettings,
        store_id: str,
        receive: Callable[[Inbound], None],
        clock: Clock,
        scanner_factory: ScannerFactory = BleakScanner,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._topic = f"lantern/{store_id}/ble/{settings.scanner_name}"
        self._receive = receive
        self._scanner_factory = scanner_factory
        self._last_advertisement = 0.0
        self.advertisements = 0
        self.restarts = 0

    async def run(self) -> None:
        """Scan until cancelled, restarting a stalled scanner; return if there is no radio."""
        while True:
            try:
                async with self._scanner_factory(
                    detection_callback=self._on_advertisement,
                    bluez={"adapter": self._settings.adapter},
                ):
                    self._last_advertisement = self._clock.monotonic()
                    await self._watch()
            except (BleakError, OSError) as exc:
                log.error(
                    "local Bluetooth off: no usable adapter %s or no BlueZ (%s); the gateway "
                    "runs on without it",
                    self._settings.adapter,
                    exc,
                )
                return
            self.restarts += 1
            log.warning(
                "local Bluetooth: no advertisement for %.0f s, restarting the scanner (%d so far)",
                self._settings.stall_timeout_s,
                self.restarts,
            )

    async def _watch(self) -> None:
        """Return when the scanner has been silent for too long."""
        timeout = self._settings.stall_timeout_s
        while (silent := self._clock.monotonic() - self._last_advertisement) < timeout:
            await self._clock.sleep(timeout - silent)

    def _on_advertisement(self, device: BLEDevice, advertisement: AdvertisementData) -> None:
        self._last_advertisement = self._clock.monotonic()
        self.advertisements += 1
        payload = advertisement_payload(device, advertisement)
        self._receive(Inbound.local(self._topic, payload, self._clock.now()))
