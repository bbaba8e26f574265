from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import theengs
from devices.ble import find_mac
from devices.model import Message, Sighting
from lantern.errors import DecodeError
from tests.fixture_files import load_jsonl

RECEIVED_AT = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
FIXTURES = load_jsonl("theengs_raw.jsonl")
IBEACON_IDENTITY = "ibeacon:426c7565-4368-6172-6d42-6561636f6e73-3838-4949"
# beacontools tests/test_parser.py test_eddystone_uid, as Theengs publishes service data.
EDDYSTONE_UID_HEX = "00e3123456789012346789010000000000010000"
# Theengs Decoder's published output for the fixture's iBeacon (tests/BLE expected JSON).
DECODED_IBEACON = {
    "id": "AA:BB:CC:DD:EE:01",
    "rssi": -70,
    "brand": "GENERIC",
    "model": "iBeacon",
    "model_id": "IBEACON",
    "type": "BCON",
    "mfid": "4c00",
    "uuid": "426c7565436861726d426561636f6e73",
    "major": 3838,
    "minor": 4949,
    "txpower": -59,
}
# Theengs Decoder README: an ATC-firmware Xiaomi thermometer; its name holds half the address.
DECODED_SENSOR = {
    "id": "A4:C1:38:80:00:21",
    "name": "ATC_800021",
    "rssi": -90,
    "servicedatauuid": "0x181a",
    "servicedata": "a4c138800021010700e5",
    "brand": "Xiaomi",
    "model": "LYWSD03MMC",
    "model_id": "LYWSD03MMC_ATC",
    "tempc": 26.3,
    "tempf": 79.34,
    "hum": 49,
    "batt": 29,
    "volt": 2.487,
}


def message(topic: str, payload: bytes | dict[str, Any], **fields: str) -> Message:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return Message(topic=topic, payload=raw, received_at=RECEIVED_AT, fields=fields)


def sighting(payload: dict[str, Any], topic: str = "home/gw1/BTtoMQTT/undecoded") -> Sighting:
    (observation,) = theengs.parse(message(topic, payload)) or []
    assert isinstance(observation, Sighting)
    return observation


@pytest.mark.parametrize("entry", FIXTURES, ids=[entry["payload"]["id"] for entry in FIXTURES])
def test_fixture_messages(entry: dict[str, Any]) -> None:
    result = sighting(entry["payload"], entry["topic"])

    assert result.scanner == result.device_id == "TheengsGateway"
    assert result.mac == entry["payload"]["id"].replace(":", "").lower()
    assert result.rssi == entry["payload"]["rssi"]
    expect = entry["expect"]
    if expect["format"] == "apple-other":
        # "apple-other" names a non-beacon, and its "note" is prose: nothing to decode, so
        # the sighting carries no beacon and no identity, only the random address.
        assert result.beacon is None
        assert result.identity is None
        assert result.mac_random is True
    else:
        assert result.beacon is not None
        for key, expected in expect.items():
            assert result.beacon[key] == expected, key
        assert result.identity == IBEACON_IDENTITY
        assert result.tx_power == expect["tx_power_1m"]


def test_router_fields_name_the_gateway() -> None:
    (entry, _) = FIXTURES
    observations = theengs.parse(
        message("home/store-7/BTtoMQTT/undecoded", entry["payload"], gw="store-7", id="undecoded")
    )

    assert observations is not None
    assert isinstance(observations[0], Sighting)
    assert observations[0].scanner == "store-7"


def test_decoded_ibeacon_gets_the_raw_decoders_identity() -> None:
    result = sighting(DECODED_IBEACON, "home/gw1/BTtoMQTT/AABBCCDDEE01")

    assert result.identity == IBEACON_IDENTITY
    assert result.beacon == {
        "format": "ibeacon",
        "uuid": "426c7565-4368-6172-6d42-6561636f6e73",
        "major": 3838,
        "minor": 4949,
        "tx_power_1m": -59,
    }


def test_decoded_ibeacon_reporting_voltage_instead_of_power() -> None:
    payload = {k: v for k, v in DECODED_IBEACON.items() if k != "txpower"} | {"volt": 2.6}

    result = sighting(payload, "home/gw1/BTtoMQTT/AABBCCDDEE01")

    assert result.identity == IBEACON_IDENTITY
    assert result.beacon is not None
    assert "tx_power_1m" not in result.beacon


def test_a_positive_measured_power_byte_gives_no_tx_power() -> None:
    """Theengs Decoder tests/BLE/test_ble.cpp "NRF51822": the byte after the minor is 0x1a,
    which Theengs reports as ``volt`` 2.6; it is kept in the frame as sent, and the distance
    model gets no calibrated power from it."""
    payload = {
        "id": "AA:BB:CC:DD:EE:02",
        "rssi": -70,
        "manufacturerdata": "4c000215fda50693a4e24fb1afcfc6eb07647825000100021a",
        "brand": "GENERIC",
        "model": "iBeacon",
        "model_id": "IBEACON",
        "type": "BCON",
        "mfid": "4c00",
        "uuid": "fda50693a4e24fb1afcfc6eb07647825",
        "major": 1,
        "minor": 2,
        "volt": 2.6,
    }

    result = sighting(payload, "home/gw1/BTtoMQTT/AABBCCDDEE02")

    assert result.identity == "ibeacon:fda50693-a4e2-4fb1-afcf-c6eb07647825-1-2"
    assert result.beacon is not None
    assert result.beacon["tx_power_1m"] == 26
    assert result.tx_power is None


# Theengs Decoder tests/BLE/test_ble.cpp, "Cleargrass round sensor": service data whose address
# bytes are placeholders (not hex), which Theengs still decodes to the expected values below, as
# Theengs Gateway publishes them beside the raw field.
CORRUPT_SERVICE_DATA = {
    "id": "AA:BB:CC:DD:EE:03",
    "rssi": -72,
    "servicedatauuid": "0xfdcd",
    "servicedata": "8816xxxxxxxxxxxx0104f4003b01020164",
    "brand": "Xiaomi",
    "model": "CG_round_v1",
    "model_id": "CGG1",
    "tempc": 24.4,
    "tempf": 75.92,
    "hum": 31.5,
    "batt": 100,
}


def test_a_corrupt_raw_field_beside_good_decoded_values_keeps_the_sighting() -> None:
    result = sighting(CORRUPT_SERVICE_DATA, "home/gw1/BTtoMQTT/AABBCCDDEE03")

    assert result.mac == "aabbccddee03"
    raw_fields = ("id", "rssi", "servicedatauuid", "servicedata")
    assert result.beacon == {"format": "theengs"} | {
        key: value for key, value in CORRUPT_SERVICE_DATA.items() if key not in raw_fields
    }
    assert result.raw_errors == {"servicedata": "servicedata is not hex"}
    assert "xxxx" not in json.dumps(result.event_data())  # the raw content is not kept


@pytest.mark.parametrize(
    ("manufacturerdata", "reason"),
    [
        # The fixture iBeacon's data cut by one digit, as a relay that truncates a buffer.
        (
            "4c000215426c7565436861726d426561636f6e730efe1355c",
            "manufacturerdata is not hex",
        ),
        ("4c000215426c7565436861726d42", "iBeacon data is 12 bytes, expected 23"),
    ],
)
def test_a_corrupt_manufacturerdata_beside_the_decoded_ibeacon_keeps_its_identity(
    manufacturerdata: str, reason: str
) -> None:
    result = sighting(DECODED_IBEACON | {"manufacturerdata": manufacturerdata})

    assert result.identity == IBEACON_IDENTITY
    assert result.tx_power == -59
    assert result.raw_errors == {"manufacturerdata": reason}
    assert result.event_data()["raw_errors"] == {"manufacturerdata": reason}


def test_a_corrupt_raw_field_beside_a_good_one_keeps_the_good_ones_frame() -> None:
    payload = {
        "id": "11:22:33:44:55:66",
        "rssi": -80,
        "manufacturerdata": "4cz0",
        "servicedata": EDDYSTONE_UID_HEX,
        "servicedatauuid": "0xfeaa",
    }

    result = sighting(payload)

    assert result.identity == "eddystone:12345678901234678901-000000000001"
    assert result.raw_errors == {"manufacturerdata": "manufacturerdata is not hex"}


def test_a_sighting_with_good_raw_fields_notes_nothing() -> None:
    assert "raw_errors" not in sighting(FIXTURES[0]["payload"]).event_data()


def test_eddystone_service_data() -> None:
    payload = {
        "id": "11:22:33:44:55:66",
        "mac_type": 0,
        "rssi": -80,
        "servicedata": EDDYSTONE_UID_HEX,
        "servicedatauuid": "0xfeaa",
    }

    result = sighting(payload)

    assert result.identity == "eddystone:12345678901234678901-000000000001"
    assert result.mac_random is False


def test_decoded_sensor_values_without_addresses() -> None:
    result = sighting(DECODED_SENSOR, "home/gw1/BTtoMQTT/A4C138800021")

    assert result.identity is None
    assert result.mac == "a4c138800021"
    assert result.beacon == {
        "format": "theengs",
        "brand": "Xiaomi",
        "model": "LYWSD03MMC",
        "model_id": "LYWSD03MMC_ATC",
        "tempc": 26.3,
        "tempf": 79.34,
        "hum": 49,
        "batt": 29,
        "volt": 2.487,
    }


def test_sensor_values_naming_an_address_are_dropped() -> None:
    payload = DECODED_SENSOR | {"peer": "a4:c1:38:80:00:22", "peermac": "x", "nested": {"a": 1}}

    result = sighting(payload)

    assert result.beacon is not None
    assert {"peer", "peermac", "nested", "name", "servicedata", "id"}.isdisjoint(result.beacon)


def test_id_from_topic_when_payload_has_none() -> None:
    assert sighting({"rssi": -60}, "home/gw1/BTtoMQTT/A4C138800021").mac == "a4c138800021"


@pytest.mark.parametrize(
    ("mac_type", "random"), [(0, False), (1, True), (2, False), (3, True), (9, None)]
)
def test_mac_type(mac_type: int, random: bool | None) -> None:
    assert sighting({"id": "a4c138800021", "rssi": -60, "mac_type": mac_type}).mac_random is random


@pytest.mark.parametrize(
    "topic", ["home/gw1/BTtoMQTT", "home/gw1/MQTTtoBT/config", "home/gw1/SYStoMQTT", "other"]
)
def test_other_topics_are_not_mine(topic: str) -> None:
    assert theengs.parse(message(topic, b"{}")) is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'"x"', "must be a JSON object"),
        (b"\xc3\x28", "not UTF-8"),
        ({"id": "a4c138800021"}, "no rssi"),
        ({"id": "a4c138800021", "rssi": "-60"}, "rssi must be a number"),
        ({"rssi": -60}, "no id"),
        ({"id": "not-a-mac", "rssi": -60}, "not a MAC"),
        ({"id": 42, "rssi": -60}, "id must be a string"),
        ({"id": "a4c138800021", "rssi": -60, "mac_type": "1"}, "mac_type must be an integer"),
        (
            {"id": "a4c138800021", "rssi": -60, "manufacturerdata": "4cz0"},
            "manufacturerdata is not hex",
        ),
        ({"id": "a4c138800021", "rssi": -60, "manufacturerdata": "4c"}, "company id"),
        ({"id": "a4c138800021", "rssi": -60, "manufacturerdata": "4c000215aa"}, "iBeacon data"),
        ({"id": "a4c138800021", "rssi": -60, "servicedata": "00e3"}, "no servicedatauuid"),
        (
            {"id": "a4c138800021", "rssi": -60, "servicedata": "20", "servicedatauuid": "0xfeaa"},
            "TLM",
        ),
        (DECODED_IBEACON | {"uuid": "426c"}, "invalid ibeacon: uuid"),
        (DECODED_IBEACON | {"major": "3838"}, "invalid ibeacon: major"),
    ],
)
def test_broken_messages_raise_with_a_reason(payload: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        theengs.parse(message("home/gw1/BTtoMQTT/undecoded", payload))


# --- fuzz -------------------------------------------------------------------------------


# Frame layouts are fuzzed byte by byte in test_ble.py; here, whole and broken frames as
# Theengs publishes them, and random hex (RANDOM_HEX). A message is rssi, id and a few
# (key, value) pairs drawn from this table: far cheaper to generate than optional keys.
RANDOM_HEX = object()
_ODD_VALUES = [None, True, "-70", "", "zz", [], {}, 10**400, 2.5]
_FIELD_VALUES: dict[str, list[Any]] = {
    "mac_type": [0, 1, 2, 3, 4, -1],
    "manufacturerdata": [
        "4c000215426c7565436861726d426561636f6e730efe1355c5",
        "4c000215426c7565436861726d42656163",
        "4c0010060319247bbc68",
        "1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c509",
        "1801beac2f23",
        "4c",
        "4cz0",
        RANDOM_HEX,
    ],
    "servicedata": [
        EDDYSTONE_UID_HEX,
        "00e3",
        "10f8036769746875620063697472757a",
        "10f804",
        "30e34549445f74657374",
        RANDOM_HEX,
    ],
    "servicedatauuid": ["0xfeaa", "0xfe95"],
    "model_id": ["IBEACON", "LYWSD03MMC"],
    "uuid": ["426c7565436861726d426561636f6e73", "426c"],
    "major": [0, 3838, 70000, -1],
    "minor": [4949],
    "txpower": [-59, 12, 200],
    "tempc": [21.5, {"c": "aa:bb:cc:dd:ee:ff"}],
    "distance": [1.5, -1],
}
_FIELDS = [
    (key, value) for key, values in _FIELD_VALUES.items() for value in [*values, *_ODD_VALUES]
]


def _message(rssi: Any, address: Any, fields: list[tuple[str, Any]], raw: bytes) -> bytes:
    document = {key: raw.hex() if value is RANDOM_HEX else value for key, value in fields}
    return json.dumps({"rssi": rssi, "id": address, **document}).encode()


_MESSAGES = st.builds(
    _message,
    st.sampled_from([*range(-100, 1, 5), -70.5, *_ODD_VALUES]),
    st.sampled_from(["AA:BB:CC:DD:EE:01", "aabbccddee01"] * 4 + ["x", 42, None]),
    st.lists(st.sampled_from(_FIELDS), max_size=6),
    st.binary(max_size=26),
)
_PAYLOADS = st.one_of(
    _MESSAGES,
    _MESSAGES,
    _MESSAGES,
    st.sampled_from([b'{"id": "aabbccddee01", "rssi": NaN}', b'{"rssi": -1e999}', b"[]"]),
    st.binary(max_size=24),
)
_TOPICS = st.sampled_from(
    [
        *["home/gw1/BTtoMQTT/undecoded"] * 6,
        "home/gw1/BTtoMQTT/AABBCCDDEE01",
        "home//BTtoMQTT/undecoded",
        "home/gw1/SYStoMQTT",
    ]
)


@given(topic=_TOPICS, payload=_PAYLOADS)
def test_fuzz_only_decode_errors_escape(topic: str, payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        theengs.parse(message(topic, payload))


def test_beacon_never_carries_an_address() -> None:
    for payload in (DECODED_SENSOR, DECODED_IBEACON, *(entry["payload"] for entry in FIXTURES)):
        beacon = sighting(payload).beacon or {}
        assert not [
            value for value in beacon.values() if isinstance(value, str) and find_mac(value)
        ]
