from datetime import UTC, datetime, timedelta

from devices.health import Inventory
from devices.model import DeviceStatus, Sighting, Telemetry

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def sighting(scanner: str, **beacon: object) -> Sighting:
    return Sighting(
        device_id=scanner, scanner=scanner, identity="ibeacon:x-1-2", beacon=beacon or None
    )


def test_silence_longer_than_the_expected_interval_flags_offline_once() -> None:
    inventory = Inventory({"office": 60.0})
    assert inventory.observe([sighting("office")], T0) == [sighting("office")]
    assert inventory.tick(T0 + timedelta(seconds=59)) == []
    assert inventory.tick(T0 + timedelta(seconds=61)) == [
        DeviceStatus(device_id="office", online=False)
    ]
    assert inventory.tick(T0 + timedelta(seconds=200)) == []
    # The broker's last will arriving after we flagged it makes no second offline event.
    assert (
        inventory.observe(
            [DeviceStatus(device_id="office", online=False)], T0 + timedelta(seconds=201)
        )
        == []
    )
    # Heard again: online once.
    back = inventory.observe([sighting("office")], T0 + timedelta(seconds=300))
    assert back == [DeviceStatus(device_id="office", online=True), sighting("office")]


def test_last_will_offline_is_emitted_and_devices_without_interval_are_never_flagged() -> None:
    inventory = Inventory({"till-1": None})
    inventory.observe(
        [Telemetry(device_id="till-1", values={"battery_pct": 80, "firmware": "1.2"})], T0
    )
    assert inventory.tick(T0 + timedelta(days=1)) == []
    offline = DeviceStatus(device_id="till-1", online=False)
    assert inventory.observe([offline], T0 + timedelta(days=1)) == [offline]
    (record,) = inventory.devices()
    assert record.online is False
    assert record.health == {"battery_pct": 80, "firmware": "1.2"}


def test_a_tlm_beacon_updates_its_own_health_not_the_scanners() -> None:
    inventory = Inventory()
    inventory.observe(
        [sighting("office", format="eddystone-tlm", battery_mv=2840, temperature_c=19.0)], T0
    )
    records = {record.device_id: record for record in inventory.devices()}
    assert records["ibeacon:x-1-2"].health == {"battery_mv": 2840, "temperature_c": 19.0}
    assert records["office"].health == {}
    assert inventory.tick(T0 + timedelta(days=1)) == [
        DeviceStatus(device_id="office", online=False)
    ]
