import json
from datetime import UTC, datetime, timedelta

from devices import theengs
from devices.health import Inventory
from devices.model import DeviceStatus, Message, Sighting, Telemetry
from devices.registry import DeviceSpec

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


# --- beacons the registry names ----------------------------------------------------------

# beacontools tests/test_parser.py: an Eddystone-UID and an Eddystone-TLM frame, relayed as
# Theengs Gateway publishes service data, both from one beacon's address (as a daily
# pseudonym would stand there once the gateway has replaced it).
SHELF_TAG = "eddystone:12345678901234678901-000000000001"
UID_SERVICE_DATA = "00e3123456789012346789010000000000010000"
TLM_SERVICE_DATA = "20000b1813000000146700002ac4"
TLM_HEALTH = {"battery_mv": 2840, "temperature_c": 19.0, "uptime_s": 1094.8}


def beacon_sighting(service_data: str, address: str = "0a1b2c3d4e5f") -> Sighting:
    payload = {"id": address, "rssi": -70, "servicedata": service_data, "servicedatauuid": "feaa"}
    message = Message("home/gw1/BTtoMQTT/undecoded", json.dumps(payload).encode(), T0)
    (sighting,) = theengs.parse(message) or []
    assert isinstance(sighting, Sighting)
    return sighting


def registry(**tag: object) -> list[DeviceSpec]:
    return [
        DeviceSpec(id="gw1", expected_interval_s=None),
        DeviceSpec.model_validate({"id": "shelf-tag-12", "beacon": SHELF_TAG, **tag}),
    ]


def test_a_named_beacons_tlm_battery_shows_under_its_name() -> None:
    inventory = Inventory.from_registry(registry())

    inventory.observe([beacon_sighting(UID_SERVICE_DATA)], T0)
    inventory.observe([beacon_sighting(TLM_SERVICE_DATA)], T0 + timedelta(seconds=1))

    records = {record.device_id: record for record in inventory.devices()}
    assert set(records) == {"gw1", "shelf-tag-12"}  # no record under a pseudonym
    assert records["shelf-tag-12"].health == TLM_HEALTH
    assert records["gw1"].health == {}


def test_a_named_beacons_silence_is_flagged_under_its_name_and_its_return_too() -> None:
    inventory = Inventory.from_registry(registry(expected_interval_s=60))
    inventory.observe([beacon_sighting(UID_SERVICE_DATA)], T0)

    assert inventory.tick(T0 + timedelta(seconds=61)) == [
        DeviceStatus(device_id="shelf-tag-12", online=False)
    ]
    back = inventory.observe([beacon_sighting(UID_SERVICE_DATA)], T0 + timedelta(seconds=90))
    assert back[0] == DeviceStatus(device_id="shelf-tag-12", online=True)


def test_telemetry_from_another_address_is_not_the_named_beacons() -> None:
    inventory = Inventory.from_registry(registry())
    inventory.observe([beacon_sighting(UID_SERVICE_DATA)], T0)
    # The beacon's address changed (a new day's pseudonym): the old one no longer maps to it,
    # and telemetry from a stranger's address stays under that address.
    inventory.observe([beacon_sighting(UID_SERVICE_DATA, "0a1b2c3d4e60")], T0)
    inventory.observe([beacon_sighting(TLM_SERVICE_DATA, "0a1b2c3d4e5f")], T0)

    records = {record.device_id: record for record in inventory.devices()}
    assert records["shelf-tag-12"].health == {}
    assert records["0a1b2c3d4e5f"].health == TLM_HEALTH
