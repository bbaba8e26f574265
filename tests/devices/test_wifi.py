"""Wi-Fi presence: the Meraki v3 fixture as it is, Bluetooth posts, AP observations, the
webhook secret, addresses kept out of names, and a fuzz test."""

from __future__ import annotations

import contextlib
import copy
import json
import re
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import wifi
from devices.ble import find_mac
from devices.model import Message
from lantern.errors import DecodeError
from tests.devices.fuzzing import ANY_JSON, key_value_table, near, with_changes
from tests.fixture_files import load_json

RECEIVED_AT = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
TOPIC = "lantern/store-1/wifi/meraki"
MERAKI = load_json("meraki_v3_wifi.json")
ADVERTS = {entry["name"]: entry for entry in load_json("ble_adverts.json")}
IBEACON = ADVERTS["ibeacon"]
IBEACON_IDENTITY = "ibeacon:41424344-4546-4748-4940-414243444546-1-2"
EDDYSTONE_UID = ADVERTS["eddystone-uid"]
EDDYSTONE_TLM = ADVERTS["eddystone-tlm"]
CLIENT = "11:22:33:44:55:66"
RANDOM_CLIENT = "da:a1:19:3c:5e:07"  # 0xda: the locally administered bit (0x02) is set
AP = "aa:aa:aa:44:44:44"
# A Cisco AP's default name: "AP" and its own address in Cisco's dotted spelling.
CISCO_AP_NAME = "AP0c85.25c2.7f4e"


def message(payload: bytes | dict[str, Any], topic: str = TOPIC, **fields: str) -> Message:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return Message(topic=topic, payload=raw, received_at=RECEIVED_AT, fields=fields)


def sightings(
    payload: bytes | dict[str, Any], topic: str = TOPIC, **fields: str
) -> list[wifi.WifiSighting]:
    observations = wifi.parse(message(payload, topic, **fields))
    assert observations is not None
    assert all(isinstance(item, wifi.WifiSighting) for item in observations)
    return [item for item in observations if isinstance(item, wifi.WifiSighting)]


def sighting(
    payload: bytes | dict[str, Any], topic: str = TOPIC, **fields: str
) -> wifi.WifiSighting:
    (only,) = sightings(payload, topic, **fields)
    return only


def meraki(kind: str = "WiFi", *observations: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {
        "version": "3.0",
        "secret": "s",
        "type": kind,
        "data": {"observations": [*observations], **data},
    }


def _replace(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def fixture_with(**changes: Any) -> dict[str, Any]:
    """The Meraki fixture with its one observation's keys replaced (None removes one)."""
    document: dict[str, Any] = copy.deepcopy(MERAKI)
    _replace(document["data"]["observations"][0], changes)
    return document


def fixture_location(**changes: Any) -> dict[str, Any]:
    """The Meraki fixture with its location's keys replaced (None removes one)."""
    document: dict[str, Any] = copy.deepcopy(MERAKI)
    _replace(document["data"]["observations"][0]["locations"][0], changes)
    return document


def hex_digits(text: str) -> str:
    return re.sub(r"[^0-9a-f]", "", text.lower())


def assert_no_address(text: str, mac: str) -> None:
    """Neither ``mac`` (in any spelling) nor any other address is written into ``text``."""
    assert find_mac(text) is None, text
    assert hex_digits(mac) not in hex_digits(text), text


# --- the Meraki Scanning API v3 fixture ------------------------------------------------------


def test_meraki_fixture_is_one_wifi_sighting() -> None:
    result = sighting(MERAKI, source="meraki")

    assert result.device_id == "meraki"
    assert result.technology == "wifi"
    assert result.observed_at == datetime(2019, 11, 28, 14, 27, 46, tzinfo=UTC)
    assert result.mac == "112233445566"
    assert result.mac_random is False  # 0x11: the locally administered bit (0x02) is clear
    assert result.ap_mac == "aaaaaa444444"
    assert result.rssi == -47.0  # "-47": Meraki v3 sends it as a string
    assert result.position == (8.591860719528196, 11.404523745521399)  # strings there too
    assert result.floor_plan == "3rd Floor"
    assert result.identity is None
    assert result.beacon is None
    assert result.tx_power is None
    assert result.subject() == "112233445566"


def test_meraki_fixture_scanner_is_the_nearest_aps_tags() -> None:
    # A Wi-Fi post names no AP, only the nearest AP's tags (["", "API-TEST", "Office", ""]):
    # the empty ones dropped, the rest joined as Meraki spells them, space-separated.
    result = sighting(MERAKI)

    assert result.scanner == "API-TEST Office"
    assert_no_address(result.scanner, AP)
    assert_no_address(result.device_id, AP)


def test_meraki_fixture_event_data_is_json_ready_without_envelope_fields() -> None:
    data = sighting(MERAKI).event_data()

    assert json.loads(json.dumps(data)) == data
    assert data == {
        "scanner": "API-TEST Office",
        "mac": "112233445566",
        "mac_random": False,
        "rssi": -47.0,
        "position": [8.591860719528196, 11.404523745521399],
        "technology": "wifi",
        "ap_mac": "aaaaaa444444",
        "floor_plan": "3rd Floor",
    }


def test_meraki_fixture_secret_is_not_part_of_the_sighting() -> None:
    assert "supersecret" not in json.dumps(sighting(MERAKI).event_data())


def test_device_falls_back_to_the_last_topic_level() -> None:
    assert sighting(MERAKI, "lantern/store-1/wifi/controller-2").device_id == "controller-2"


def test_device_named_by_the_topic_fields_first() -> None:
    assert sighting(MERAKI, "lantern/store-1/wifi/x", source="dashboard").device_id == "dashboard"


@pytest.mark.parametrize(
    ("client", "mac", "random"),
    [
        (RANDOM_CLIENT, "daa1193c5e07", True),
        ("DA-A1-19-3C-5E-07", "daa1193c5e07", True),
        ("02:00:00:00:00:01", "020000000001", True),
        ("12:34:56:78:9a:bc", "123456789abc", True),  # 0x12 has the bit too
        (CLIENT, "112233445566", False),
        ("00:1a:2b:3c:4d:5e", "001a2b3c4d5e", False),
        ("fc:fb:fa:00:00:01", "fcfbfa000001", False),  # 0xfc: the bit is clear
    ],
)
def test_mac_random_is_the_locally_administered_bit(client: str, mac: str, random: bool) -> None:
    result = sighting(fixture_with(clientMac=client))

    assert (result.mac, result.mac_random) == (mac, random)


@pytest.mark.parametrize("version", ["3.0", "3", 3, 3.0])
def test_version_spellings(version: Any) -> None:
    assert sighting({**MERAKI, "version": version}).mac == "112233445566"


def test_numbers_sent_as_numbers_are_read_too() -> None:
    document = fixture_with(latestRecord={"time": "2019-11-28T14:27:46Z", "nearestApRssi": -52})
    location = document["data"]["observations"][0]["locations"][0]
    location.update(x=1.5, y=2)

    result = sighting(document)

    assert (result.rssi, result.position, result.ap_mac) == (-52.0, (1.5, 2.0), None)


def test_the_latest_location_wins_whatever_its_place_in_the_list() -> None:
    def location(x: str, time: str | None, floor: str) -> dict[str, Any]:
        return {"x": x, "y": "1", "time": time, "floorPlanName": floor, "nearestApTags": [floor]}

    document = fixture_with(
        locations=[
            location("1", "2019-11-28T14:27:40Z", "one"),
            location("2", "2019-11-28T15:27:50+01:00", "two"),  # 14:27:50Z: the latest
            location("3", None, "three"),
            location("4", "2019-11-28T14:27:45Z", "four"),
        ],
        latestRecord=None,
    )

    result = sighting(document)

    assert (result.position, result.floor_plan, result.scanner) == ((2.0, 1.0), "two", "two")
    assert result.observed_at == datetime(2019, 11, 28, 14, 27, 50, tzinfo=UTC)


def test_locations_without_times_take_the_last() -> None:
    document = fixture_with(
        locations=[{"x": "1", "y": "1"}, {"x": "2", "y": "2"}], latestRecord=None
    )

    result = sighting(document)

    assert (result.position, result.observed_at, result.rssi) == ((2.0, 2.0), None, None)


def test_latest_record_time_beats_the_locations_time() -> None:
    document = fixture_with(latestRecord={"time": "2019-11-28T14:30:00Z"})

    assert sighting(document).observed_at == datetime(2019, 11, 28, 14, 30, tzinfo=UTC)


def test_a_location_without_both_coordinates_has_no_position() -> None:
    assert sighting(fixture_location(y=None)).position is None


def test_an_observation_without_locations_or_record_is_still_a_sighting() -> None:
    result = sighting(meraki("WiFi", {"clientMac": CLIENT}), source="meraki")

    assert (result.mac, result.scanner, result.observed_at, result.position) == (
        "112233445566",
        "meraki",
        None,
        None,
    )


def test_every_observation_is_a_sighting() -> None:
    result = sightings(meraki("WiFi", {"clientMac": CLIENT}, {"clientMac": RANDOM_CLIENT}))

    assert [(item.mac, item.mac_random) for item in result] == [
        ("112233445566", False),
        ("daa1193c5e07", True),
    ]


@pytest.mark.parametrize(
    "document",
    [
        meraki("WiFi"),
        {"version": "3.0", "type": "WiFi"},
        {"version": "3.0", "type": "WiFi", "data": None},
        {"version": "3.0", "type": "WiFi", "data": {"observations": None}},
    ],
)
def test_a_post_without_observations_is_no_sighting(document: dict[str, Any]) -> None:
    assert sightings(document) == []


# --- Bluetooth posts -------------------------------------------------------------------------


def ble_post(*beacons: dict[str, Any], kind: str = "BLE", **observation: Any) -> dict[str, Any]:
    return meraki(
        kind,
        {
            "clientMac": "c6:69:cd:00:00:01",  # 0xc6: a Wi-Fi reading would say "random"
            "name": None,
            "bleBeacons": [*beacons],
            "locations": [{"x": 3.5, "y": "4.25", "time": "2024-05-01T10:00:00Z"}],
            "latestRecord": {
                "time": "2024-05-01T10:00:01Z",
                "nearestApMac": AP,
                "nearestApRssi": -62,
            },
            **observation,
        },
        reportingAps=[
            {"mac": "aa:aa:aa:11:11:11", "name": "Entrance", "tags": ["door"]},
            {"mac": AP.upper(), "name": "Checkout", "tags": ["tills"]},
        ],
    )


@pytest.mark.parametrize("kind", ["BLE", "Bluetooth"])
def test_ble_post_decodes_the_ibeacon_raw_data(kind: str) -> None:
    result = sighting(ble_post({"bleType": "iBeacon", "rawData": IBEACON["adv_hex"]}, kind=kind))

    assert result.technology == "ble"
    assert result.identity == IBEACON_IDENTITY
    assert result.subject() == IBEACON_IDENTITY
    assert result.beacon == IBEACON["expect"]
    assert result.tx_power == IBEACON["expect"]["tx_power_1m"]
    assert result.mac == "c669cd000001"
    assert result.mac_random is None  # Meraki does not say whether a BLE address is random
    assert result.scanner == "Checkout"  # the nearest AP's name, from reportingAps
    assert result.ap_mac == "aaaaaa444444"
    assert (result.rssi, result.position) == (-62.0, (3.5, 4.25))
    assert result.observed_at == datetime(2024, 5, 1, 10, 0, 1, tzinfo=UTC)


def test_ble_post_with_an_uppercase_raw_data() -> None:
    result = sighting(ble_post({"rawData": IBEACON["adv_hex"].upper()}))

    assert result.identity == IBEACON_IDENTITY


def test_ble_post_eddystone_uid() -> None:
    result = sighting(ble_post({"rawData": EDDYSTONE_UID["adv_hex"]}))

    assert result.identity == "eddystone:12345678901234678901-000000000001"
    assert result.beacon is not None
    assert result.beacon["format"] == "eddystone-uid"
    assert result.tx_power is None  # the UID frame's power is at 0 m, not 1 m


def test_ble_post_beacon_with_an_identity_wins_over_telemetry() -> None:
    result = sighting(
        ble_post({"rawData": EDDYSTONE_TLM["adv_hex"]}, {"rawData": EDDYSTONE_UID["adv_hex"]})
    )

    assert result.identity == "eddystone:12345678901234678901-000000000001"


def test_ble_post_telemetry_only_is_a_beacon_without_identity() -> None:
    result = sighting(ble_post({"rawData": EDDYSTONE_TLM["adv_hex"]}))

    assert result.identity is None
    assert result.beacon is not None
    assert result.beacon["format"] == "eddystone-tlm"


@pytest.mark.parametrize(
    "beacons", [[], [{"rawData": ""}], [{"rawData": None}], [{"bleType": "unknown"}], None]
)
def test_ble_post_without_raw_data_has_no_beacon(beacons: list[dict[str, Any]] | None) -> None:
    result = sighting(ble_post(bleBeacons=beacons))

    assert (result.identity, result.beacon, result.technology) == (None, None, "ble")


def test_wifi_post_ignores_ble_beacons() -> None:
    result = sighting(fixture_with(bleBeacons=[{"rawData": IBEACON["adv_hex"]}]))

    assert (result.identity, result.beacon) == (None, None)


def test_ble_post_scanner_falls_back_to_the_aps_tags_then_the_locations_tags() -> None:
    document = ble_post({"rawData": IBEACON["adv_hex"]})
    document["data"]["reportingAps"][1]["name"] = ""
    assert sighting(document).scanner == "tills"

    document["data"]["reportingAps"] = []
    document["data"]["observations"][0]["locations"][0]["nearestApTags"] = ["aisle", "3"]
    assert sighting(document).scanner == "aisle 3"

    document["data"]["observations"][0]["locations"][0]["nearestApTags"] = None
    assert sighting(document, source="meraki").scanner == "meraki"


# --- the generic access point observation -----------------------------------------------------


def test_ap_observation() -> None:
    result = sighting(
        {"ap": "lobby-ap", "mac": RANDOM_CLIENT, "rssi": -61, "time": "2026-03-14T09:26:50Z"},
        "lantern/store-1/wifi/controller",
    )

    assert result.device_id == result.scanner == "lobby-ap"
    assert (result.mac, result.mac_random, result.rssi) == ("daa1193c5e07", True, -61.0)
    assert result.observed_at == datetime(2026, 3, 14, 9, 26, 50, tzinfo=UTC)
    assert (result.ap_mac, result.position, result.floor_plan) == (None, None, None)
    assert result.technology == "wifi"


def test_ap_observation_without_ap_is_the_sources() -> None:
    result = sighting({"mac": CLIENT, "rssi": "-70"}, "lantern/store-1/wifi/ap-7")

    assert (result.device_id, result.scanner, result.rssi, result.observed_at) == (
        "ap-7",
        "ap-7",
        -70.0,
        None,
    )


# --- addresses stay out of names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ap", "ap_mac"),
    [
        ("aa:bb:cc:dd:ee:ff", "aabbccddeeff"),
        ("AA-BB-CC-DD-EE-FF", "aabbccddeeff"),
        ("aabbccddeeff", "aabbccddeeff"),
        ("ap-aabbccddeeff", "aabbccddeeff"),
        (CISCO_AP_NAME, "0c8525c27f4e"),
        ("lobby 0C85.25C2.7F4E", "0c8525c27f4e"),
    ],
)
def test_an_ap_named_by_its_address_is_not_the_scanner(ap: str, ap_mac: str) -> None:
    result = sighting({"ap": ap, "mac": CLIENT, "rssi": -50}, "lantern/store-1/wifi/controller")

    assert (result.device_id, result.scanner, result.ap_mac) == ("controller", "controller", ap_mac)
    assert_no_address(result.device_id, ap_mac)
    assert_no_address(result.scanner, ap_mac)


@pytest.mark.parametrize(
    ("source", "ap_mac"),
    [
        ("aa:bb:cc:dd:ee:ff", "aabbccddeeff"),
        ("AABBCCDDEEFF", "aabbccddeeff"),
        (CISCO_AP_NAME, "0c8525c27f4e"),
    ],
)
def test_a_source_named_by_its_address_is_not_the_device(source: str, ap_mac: str) -> None:
    result = sighting({"mac": CLIENT, "rssi": -50}, f"lantern/store-1/wifi/{source}")

    assert (result.device_id, result.scanner, result.ap_mac) == ("wifi", "wifi", ap_mac)

    post = sighting(MERAKI, f"lantern/store-1/wifi/{source}", source=source)
    assert post.device_id == "wifi"
    assert_no_address(post.device_id, ap_mac)


@pytest.mark.parametrize(
    ("tags", "address"),
    [
        (["aa:aa:aa:44:44:44"], AP),
        (["ap", "aaaaaa444444"], AP),
        (["", CISCO_AP_NAME, "Office"], CISCO_AP_NAME),
    ],
)
def test_tags_carrying_an_address_are_not_the_scanner(tags: list[str], address: str) -> None:
    result = sighting(fixture_location(nearestApTags=tags), source="meraki")

    assert result.scanner == "meraki"
    assert_no_address(result.scanner, address)


def test_an_ap_name_carrying_an_address_is_not_the_scanner() -> None:
    document = ble_post({"rawData": IBEACON["adv_hex"]})
    document["data"]["reportingAps"][1]["name"] = "AP aa:aa:aa:44:44:44"

    result = sighting(document)

    assert result.scanner == "tills"
    assert_no_address(result.scanner, AP)


# --- broken messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", "payload is not UTF-8 (byte 0)"),
        (b"not json", "Wi-Fi message is not valid JSON: Expecting value at 0"),
        (b'{"version": "3.0"', "Wi-Fi message is not valid JSON: Expecting ',' delimiter at 17"),
        (b'{"version": NaN}', "Wi-Fi message is not valid JSON: NaN is not a JSON number"),
        (b"[]", "Wi-Fi message must be a JSON object, got an array"),
        (
            b'{"ap": "lobby"}',
            "neither a Meraki Scanning API post (version, type, data) nor an AP observation (mac)",
        ),
        ({**MERAKI, "version": "2.0"}, "Meraki Scanning API version '2.0' is not 3.0"),
        ({**MERAKI, "version": None}, "Meraki Scanning API version 'None' is not 3.0"),
        (
            {k: v for k, v in MERAKI.items() if k != "version"},
            "Meraki Scanning API version 'None' is not 3.0",
        ),
        ({**MERAKI, "type": "Zigbee"}, "Meraki post type 'Zigbee' is not WiFi, BLE or Bluetooth"),
        ({**MERAKI, "type": "wifi"}, "Meraki post type 'wifi' is not WiFi, BLE or Bluetooth"),
        ({**MERAKI, "type": None}, "Meraki post type '' is not WiFi, BLE or Bluetooth"),
        ({**MERAKI, "type": 3}, "type must be a string, got a number"),
        ({**MERAKI, "data": []}, "data must be an object, got an array"),
        ({**MERAKI, "data": "x"}, "data must be an object, got a string"),
        (meraki("WiFi", observations=[1]), "observations must be a list of objects"),
        (meraki("WiFi", observations={}), "observations must be a list of objects"),
        (fixture_with(clientMac=None), "Meraki observation has no clientMac"),
        (fixture_with(clientMac=""), "Meraki observation has no clientMac"),
        (fixture_with(clientMac=112233445566), "clientMac must be a string, got a number"),
        (fixture_with(clientMac="11:22:33"), "not a MAC address: '11:22:33'"),
        (fixture_with(latestRecord=[]), "latestRecord must be an object, got an array"),
        (fixture_with(latestRecord={"nearestApMac": "ap-1"}), "not a MAC address: 'ap-1'"),
        (
            fixture_with(latestRecord={"nearestApRssi": "loud"}),
            "nearestApRssi must be a number, got 'loud'",
        ),
        (
            fixture_with(latestRecord={"nearestApRssi": "NaN"}),
            "nearestApRssi is out of range: 'NaN'",
        ),
        (
            fixture_with(latestRecord={"nearestApRssi": "-1e999"}),
            "nearestApRssi is out of range: '-1e999'",
        ),
        (
            fixture_with(latestRecord={"nearestApRssi": True}),
            "nearestApRssi must be a number, got a boolean",
        ),
        (
            fixture_with(latestRecord={"time": "yesterday"}),
            "time is not an RFC 3339 time: 'yesterday'",
        ),
        (
            fixture_with(latestRecord={"time": "2019-11-28T14:27:46"}),
            "time has no time zone: '2019-11-28T14:27:46'",
        ),
        (fixture_with(locations={}), "locations must be a list of objects"),
        (fixture_location(x="8,59"), "x must be a number, got '8,59'"),
        (fixture_location(x="abc"), "x must be a number, got 'abc'"),
        (fixture_location(y="Infinity"), "y is out of range: 'Infinity'"),
        (fixture_location(y=[1]), "y must be a number, got an array"),
        (
            fixture_location(nearestApTags="API-TEST Office"),
            "nearestApTags must be a list of strings",
        ),
        (fixture_location(nearestApTags=["a", 1]), "nearestApTags must be a list of strings"),
        (fixture_location(floorPlanName=3), "floorPlanName must be a string, got a number"),
        (ble_post({"rawData": "4c00zz"}), "bleBeacons rawData is not hex: '4c00zz'"),
        (ble_post({"rawData": 1}), "rawData must be a string, got a number"),
        (ble_post(bleBeacons="x"), "bleBeacons must be a list of objects"),
        (
            meraki("BLE", {"clientMac": CLIENT}, reportingAps=[{"mac": "nope", "name": "a"}]),
            "not a MAC address: 'nope'",
        ),
        (
            meraki("BLE", {"clientMac": CLIENT}, reportingAps=[{"mac": AP, "tags": "x"}]),
            "tags must be a list of strings",
        ),
        ({"mac": ""}, "AP observation has no mac"),
        ({"mac": None, "ap": "x"}, "AP observation has no mac"),
        ({"mac": 5}, "mac must be a string, got a number"),
        ({"mac": "phone"}, "not a MAC address: 'phone'"),
        ({"mac": CLIENT, "rssi": "strong"}, "rssi must be a number, got 'strong'"),
        ({"mac": CLIENT, "ap": 7}, "ap must be a string, got a number"),
        ({"mac": CLIENT, "time": 1700000000}, "time must be an RFC 3339 time, got a number"),
    ],
)
def test_broken_messages_say_why(payload: bytes | dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        wifi.parse(message(payload))
    assert caught.value.reason == reason


# --- the webhook's shared secret ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "secret", "valid"),
    [
        (MERAKI, "supersecret", True),
        ({"secret": "s3cr\u00e9t"}, "s3cr\u00e9t", True),
        (MERAKI, "wrong", False),
        (MERAKI, "supersecre", False),
        (MERAKI, "supersecret ", False),
        (MERAKI, "SUPERSECRET", False),
        (MERAKI, "", False),  # an empty configured secret accepts nothing
        ({"secret": ""}, "", False),
        ({**MERAKI, "secret": ""}, "supersecret", False),
        ({k: v for k, v in MERAKI.items() if k != "secret"}, "supersecret", False),
        ({"secret": None}, "supersecret", False),
        ({"secret": 12345}, "12345", False),
        ({"secret": ["supersecret"]}, "supersecret", False),
        ({"secret": {"value": "supersecret"}}, "supersecret", False),
        # JSON's "\ud800" escape is a lone surrogate: a mismatch, not an exception.
        (json.loads('{"secret": "\\ud800"}'), "supersecret", False),
        (json.loads('{"secret": "\\ud800"}'), "\ud800", True),
    ],
)
def test_validate_secret(payload: dict[str, Any], secret: str, valid: bool) -> None:
    assert wifi.validate_secret(payload, secret) is valid


# --- fuzz --------------------------------------------------------------------------------------


# Near-valid Meraki posts and AP observations (tests/devices/fuzzing.py), arbitrary JSON and
# arbitrary bytes.
_ODD_VALUES: list[Any] = [
    None, True, 0, -47, 2.5, 10**400, "", "x", "-47", "NaN", "1e999", [], {}, [{}], ["a"]
]  # fmt: skip


_table = partial(key_value_table, odd_values=_ODD_VALUES)
_object = partial(near, odd_values=_ODD_VALUES)

# Mostly good values; the last of each list is broken in its own way.
_TIMES = [
    "2019-11-28T14:27:46Z",
    "2019-11-28T15:27:46+01:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2019-11-28T14:27:46",
]
_ADDRESSES = [CLIENT, RANDOM_CLIENT, "AABBCCDDEEFF", "11-22-33-44-55-66", "11:22:33"]
_NAMES = ["Checkout", "", "aa:bb:cc:dd:ee:ff", CISCO_AP_NAME, "ap aabbccddeeff"]
_TAGS = [["", "API-TEST", "Office"], ["aa:bb:cc:dd:ee:ff"], ["ap", CISCO_AP_NAME], [1]]
_LOCATION = _object(
    {"x": "8.59", "y": "11.4", "time": _TIMES[0], "nearestApTags": _TAGS[0]},
    {
        "x": ["8.59", 8.59, " 3 ", "abc"],
        "y": ["11.4", 11, "-0", "inf"],
        "time": _TIMES,
        "nearestApTags": _TAGS,
        "floorPlanName": ["3rd Floor", "", 3],
    },
)
_LATEST = _object(
    {"time": _TIMES[0], "nearestApMac": AP, "nearestApRssi": "-47"},
    {
        "time": _TIMES,
        "nearestApMac": [AP, "AAAAAA444444", "aaaa.aa44.4444", "ap"],
        "nearestApRssi": [-47, "-47.5", "x"],
    },
)
_RAW_DATA = st.one_of(
    st.sampled_from([entry["adv_hex"] for entry in ADVERTS.values()]),
    st.sampled_from(["zz", "", "0", "4c00", IBEACON["adv_hex"][:-2], IBEACON["adv_hex"].upper()]),
    st.binary(max_size=31).map(bytes.hex),
)
_BEACONS = st.lists(st.fixed_dictionaries({"rawData": _RAW_DATA}), max_size=2)


def _observation(
    locations: list[dict[str, Any]],
    latest: dict[str, Any],
    beacons: list[dict[str, Any]],
    pairs: list[tuple[str, Any]],
) -> dict[str, Any]:
    base = {"clientMac": CLIENT, "locations": locations, "latestRecord": latest}
    return with_changes({**base, "bleBeacons": beacons}, pairs)


_OBSERVATIONS = st.builds(
    _observation,
    st.lists(_LOCATION, max_size=2),
    _LATEST,
    _BEACONS,
    st.lists(
        st.sampled_from(
            _table(
                {
                    "clientMac": _ADDRESSES,
                    "latestRecord": [{}, {"nearestApRssi": "-50"}],
                    "bleBeacons": [[], [{"rawData": IBEACON["adv_hex"]}], [{"rawData": 1}]],
                }
            )
        ),
        max_size=2,
    ),
)
_REPORTING_AP = _object(
    {"mac": AP, "name": "Checkout"},
    {"mac": [AP, "x"], "name": _NAMES, "tags": [["tills"], [CISCO_AP_NAME]]},
)


def _post(
    kind: str,
    observations: list[dict[str, Any]],
    aps: list[dict[str, Any]],
    pairs: list[tuple[str, Any]],
) -> bytes:
    data = {"observations": observations, "reportingAps": aps}
    document = with_changes({"version": "3.0", "type": kind, "data": data}, pairs)
    return json.dumps(document).encode()


_POSTS = st.builds(
    _post,
    st.sampled_from(["WiFi", "BLE"]),
    st.lists(_OBSERVATIONS, min_size=1, max_size=2),
    st.lists(_REPORTING_AP, max_size=2),
    st.lists(
        st.sampled_from(
            _table(
                {
                    "version": ["3.0", "3", 3, 3.0, "2.0"],
                    "type": ["BLE", "Bluetooth", "WiFi", "wifi"],
                }
            )
        ),
        max_size=2,
    ),
)
_AP_OBSERVATIONS = _object(
    {"mac": CLIENT, "rssi": -61},
    {"ap": _NAMES, "mac": _ADDRESSES, "rssi": [-61, "-61", -61.5, "x"], "time": _TIMES},
    changes=3,
).map(lambda document: json.dumps(document).encode())
_PAYLOADS = st.one_of(
    _POSTS,
    _POSTS,
    _POSTS,
    _AP_OBSERVATIONS,
    ANY_JSON.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(
        st.sampled_from(["version", "type", "data", "mac", "ap", "rssi", "time"]),
        ANY_JSON,
        max_size=4,
    ).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=40),
)
_SOURCES = st.sampled_from(["meraki", "", "aa:bb:cc:dd:ee:ff", CISCO_AP_NAME, "ap-7"])


@given(source=_SOURCES, payload=_PAYLOADS)
def test_fuzz_only_decode_errors_escape(source: str, payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        for result in sightings(payload, f"lantern/store-1/wifi/{source}"):
            # Whatever the names say, no address is written into the scanner or the device,
            # and the event data is JSON-ready.
            assert find_mac(result.scanner) is None
            assert find_mac(result.device_id) is None
            assert not re.search(r"[0-9a-f]{4}\.[0-9a-f]{4}\.", result.scanner.lower())
            json.dumps(result.event_data())
