from __future__ import annotations

from typing import Any

import msgspec
import pytest
from bluetooth_data_tools import parse_advertisement_data_bytes
from hypothesis import example, given
from hypothesis import strategies as st

from devices.ble import (
    AltBeaconFrame,
    EddystoneTlmFrame,
    IBeaconFrame,
    build_frame,
    find_mac,
    frame_from_advertisement,
    measured_power,
    parse_advertisement,
    parse_manufacturer_data,
    parse_service_data,
    read_ad_structures,
)
from lantern.errors import DecodeError
from tests.fixture_files import load_json

EDDYSTONE = "0000feaa-0000-1000-8000-00805f9b34fb"
ADVERTS = load_json("ble_adverts.json")

# android-beacon-library AltBeaconTest: Radius Networks (0x0118), reference RSSI -59, mfg byte 9.
ALTBEACON_ADV = "02011a1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c509"
# beacontools tests/test_parser.py test_eddystone_eid: EID "EID_test", tx power -29.
EDDYSTONE_EID_ADV = "0201060303aafe0d16aafe30e34549445f74657374"
# beacontools tests/test_parser.py test_eddystone_tlm_enc: version 1 (encrypted TLM).
ENCRYPTED_TLM_ADV = "0201060303aafe1116aafe20014141414141414141414141deadbeff"


def tlm(battery: bytes, temperature: bytes) -> bytes:
    return b"\x20\x00" + battery + temperature + bytes.fromhex("0000146700002ac4")


@pytest.mark.parametrize("entry", ADVERTS, ids=[entry["name"] for entry in ADVERTS])
def test_fixture_adverts_decode_to_their_expected_values(entry: dict[str, Any]) -> None:
    frame = parse_advertisement(bytes.fromhex(entry["adv_hex"])).frame

    assert frame is not None
    fields = frame.fields()
    for key, expected in entry["expect"].items():
        assert fields[key] == expected, key


@pytest.mark.parametrize(
    ("name", "identity"),
    [
        ("ibeacon", "ibeacon:41424344-4546-4748-4940-414243444546-1-2"),
        ("eddystone-uid", "eddystone:12345678901234678901-000000000001"),
        ("eddystone-url", None),
        ("eddystone-tlm", None),
    ],
)
def test_fixture_frames_give_their_visitor_identity(name: str, identity: str | None) -> None:
    (entry,) = [entry for entry in ADVERTS if entry["name"] == name]
    frame = parse_advertisement(bytes.fromhex(entry["adv_hex"])).frame

    assert frame is not None
    assert frame.identity() == identity


def test_altbeacon_reference_vector() -> None:
    frame = parse_advertisement(bytes.fromhex(ALTBEACON_ADV)).frame

    assert frame is not None
    assert frame.fields() == {
        "format": "altbeacon",
        "id1": "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6",
        "id2": 1,
        "id3": 2,
        "tx_power_1m": -59,
        "manufacturer": 0x0118,
        "reserved": 9,
    }
    assert frame.identity() == "altbeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-1-2"


@pytest.mark.parametrize(
    ("adv_hex", "reserved"),
    [
        # AltBeaconParserTest.testRecognizeBeacon: the manufacturer byte 9, a 0 after it.
        ("02011a1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c50900", 9),
        # AltBeaconParserTest.testParsesBeaconMissingDataField: 23 data bytes, no reserved
        # byte; the library parses it (its data field reads 0), and so does Lantern.
        ("02011a1aff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c5000000", None),
    ],
)
def test_altbeacon_as_the_reference_android_library_parses_it(
    adv_hex: str, reserved: int | None
) -> None:
    frame = parse_advertisement(bytes.fromhex(adv_hex)).frame

    assert isinstance(frame, AltBeaconFrame)
    assert (frame.id1, frame.id2, frame.id3) == ("2f234454-cf6d-4a0f-adf2-f4911ba9ffa6", 1, 2)
    assert (frame.tx_power_1m, frame.manufacturer, frame.reserved) == (-59, 0x0118, reserved)
    assert frame.measured_power_1m() == -59


# Theengs Decoder tests/BLE/test_ble.cpp, manufacturer data "NRF51822": its measured-power byte
# is 0x1a, which Theengs decodes as "volt": 2.6.
NRF51822_IBEACON = bytes.fromhex("0215fda50693a4e24fb1afcfc6eb07647825000100021a")


def test_a_positive_measured_power_byte_is_kept_but_is_no_measured_power() -> None:
    frame = parse_manufacturer_data(0x004C, NRF51822_IBEACON)

    assert isinstance(frame, IBeaconFrame)
    assert frame.tx_power_1m == 26  # as sent
    assert frame.measured_power_1m() is None  # the distance model uses its configured power


@pytest.mark.parametrize(("byte", "expected"), [(-59, -59), (-1, -1), (0, None), (26, None)])
def test_measured_power(byte: int, expected: int | None) -> None:
    assert measured_power(byte) == expected


def test_eddystone_eid_reference_vector() -> None:
    frame = parse_advertisement(bytes.fromhex(EDDYSTONE_EID_ADV)).frame

    assert frame is not None
    assert frame.fields() == {
        "format": "eddystone-eid",
        "eid": b"EID_test".hex(),
        "tx_power_0m": -29,
    }
    assert frame.identity() == "eddystone-eid:4549445f74657374"


def test_encrypted_tlm_is_not_decoded() -> None:
    assert parse_advertisement(bytes.fromhex(ENCRYPTED_TLM_ADV)).frame is None


def test_tlm_gives_device_health() -> None:
    frame = parse_service_data(EDDYSTONE, tlm(b"\x0b\x18", b"\xff\x80"))

    assert isinstance(frame, EddystoneTlmFrame)
    assert frame.temperature_c == -0.5  # signed 8.8 fixed point
    assert frame.telemetry_values() == {"battery_mv": 2840, "temperature_c": -0.5}


def test_tlm_values_the_beacon_does_not_measure_are_none() -> None:
    frame = parse_service_data(EDDYSTONE, tlm(b"\x00\x00", b"\x80\x00"))

    assert isinstance(frame, EddystoneTlmFrame)
    assert (frame.battery_mv, frame.temperature_c) == (None, None)
    assert frame.telemetry_values() == {}
    assert "battery_mv" not in frame.fields()


@pytest.mark.parametrize("uuid", ["feaa", "0xFEAA", "FEAA", EDDYSTONE.upper()])
def test_eddystone_uuid_in_any_spelling(uuid: str) -> None:
    frame = parse_service_data(uuid, bytes.fromhex("30e34549445f74657374"))

    assert frame is not None
    assert frame.format == "eddystone-eid"


def test_eddystone_uid_without_reserved_bytes() -> None:
    frame = parse_service_data(EDDYSTONE, bytes.fromhex("00e3" + "12" * 10 + "34" * 6))

    assert frame is not None
    assert frame.identity() == f"eddystone:{'12' * 10}-{'34' * 6}"


def test_eddystone_url_expansions() -> None:
    # scheme 0 "http://www.", then "example", 0x07 ".com", then "/x"
    frame = parse_service_data(EDDYSTONE, b"\x10\xee\x00example\x07/x")

    assert frame is not None
    assert frame.fields()["url"] == "http://www.example.com/x"


@pytest.mark.parametrize(
    ("company_id", "data"),
    [
        (0x004C, bytes.fromhex("10060319247bbc68")),  # Apple nearby-info, not a beacon
        (0x0075, bytes.fromhex("0215" + "00" * 21)),  # iBeacon layout, but not Apple's id
        (0x0059, b""),
    ],
)
def test_other_manufacturer_data_is_not_a_beacon(company_id: int, data: bytes) -> None:
    assert parse_manufacturer_data(company_id, data) is None


def test_ibeacon_tolerates_a_following_apple_record() -> None:
    data = bytes.fromhex("0215" + "41" * 16 + "00010002f8" + "1005031c")

    frame = parse_manufacturer_data(0x004C, data)

    assert isinstance(frame, IBeaconFrame)
    assert (frame.major, frame.minor, frame.tx_power_1m) == (1, 2, -8)


@pytest.mark.parametrize(
    ("uuid", "data"),
    [
        ("0000fe95-0000-1000-8000-00805f9b34fb", b"\x00" * 20),  # Xiaomi, not Eddystone
        (EDDYSTONE, b"\x40\x00"),  # a frame type we do not decode
    ],
)
def test_other_service_data_is_not_a_beacon(uuid: str, data: bytes) -> None:
    assert parse_service_data(uuid, data) is None


@pytest.mark.parametrize(
    ("decode", "reason"),
    [
        (lambda: parse_manufacturer_data(0x004C, bytes.fromhex("0215" + "41" * 16)), "iBeacon"),
        (lambda: parse_manufacturer_data(0x0118, bytes.fromhex("beac" + "00" * 10)), "AltBeacon"),
        (lambda: parse_manufacturer_data(0x0118, bytes.fromhex("beac" + "00" * 23)), "AltBeacon"),
        (lambda: parse_service_data(EDDYSTONE, b""), "empty"),
        (lambda: parse_service_data(EDDYSTONE, b"\x00\xe3" + b"\x00" * 10), "Eddystone-UID"),
        (lambda: parse_service_data(EDDYSTONE, b"\x10\xee"), "Eddystone-URL"),
        (lambda: parse_service_data(EDDYSTONE, b"\x10\xee\x04abc"), "scheme"),
        (lambda: parse_service_data(EDDYSTONE, b"\x10\xee\x00a b"), "0x20"),
        (lambda: parse_service_data(EDDYSTONE, b"\x10\xee\x00" + b"a" * 18), "Eddystone-URL"),
        (lambda: parse_service_data(EDDYSTONE, b"\x20"), "version None"),
        (lambda: parse_service_data(EDDYSTONE, b"\x20\x02" + b"\x00" * 12), "version 2"),
        (lambda: parse_service_data(EDDYSTONE, b"\x20\x00" + b"\x00" * 11), "Eddystone-TLM"),
        (lambda: parse_service_data(EDDYSTONE, b"\x30\xe3" + b"\x00" * 7), "Eddystone-EID"),
    ],
)
def test_malformed_frames_of_a_known_format_raise(decode: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode()


def test_frame_from_bleak_style_mappings() -> None:
    frame = frame_from_advertisement(
        {0x004C: bytes.fromhex("10060319247bbc68")},
        {EDDYSTONE: bytes.fromhex("00e3" + "12" * 10 + "34" * 6 + "0000")},
    )

    assert frame is not None
    assert frame.identity() == f"eddystone:{'12' * 10}-{'34' * 6}"


def test_frame_with_identity_wins_over_telemetry() -> None:
    frame = frame_from_advertisement(
        {0x0118: bytes.fromhex(ALTBEACON_ADV)[7:]},
        {EDDYSTONE: tlm(b"\x0b\x18", b"\x13\x00")},
    )

    assert isinstance(frame, AltBeaconFrame)


def test_a_malformed_entry_raises_only_when_nothing_else_decodes() -> None:
    broken = {0x0118: b"\xbe\xac\x00"}
    good_tlm = {EDDYSTONE: tlm(b"\x0b\x18", b"\x13\x00")}

    assert isinstance(frame_from_advertisement(broken, good_tlm), EddystoneTlmFrame)
    with pytest.raises(DecodeError, match="AltBeacon"):
        frame_from_advertisement(broken, {})
    assert frame_from_advertisement({}, {}) is None


def test_advertisement_keeps_its_other_ad_structures() -> None:
    name = b"Lantern"
    adv = (
        bytes([len(name) + 1, 0x09]) + name + bytes.fromhex("020af4") + bytes.fromhex(ALTBEACON_ADV)
    )

    advertisement = parse_advertisement(adv)

    assert advertisement.local_name == "Lantern"
    assert advertisement.tx_power == -12
    assert advertisement.manufacturer_data.keys() == {0x0118}
    assert isinstance(advertisement.frame, AltBeaconFrame)
    assert msgspec.to_builtins(advertisement)["frame"]["format"] == "altbeacon"


def test_structure_overrunning_the_buffer_is_skipped() -> None:
    assert parse_advertisement(bytes.fromhex("0201061aff4c000215")).frame is None


def test_build_frame_reports_bad_values_as_decode_errors() -> None:
    with pytest.raises(DecodeError, match="invalid ibeacon: major"):
        build_frame(IBeaconFrame, uuid="41424344-4546-4748-4940-414243444546", major=70000, minor=1)


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("tile:aabbccddeeff", "aabbccddeeff"),
        ("name:esp-AA:BB:CC:DD:EE:FF", "aabbccddeeff"),
        ("name:esp-aabbccddeeff", "aabbccddeeff"),
        ("sd:0000fe9f-0000-1000-8000-00805f9b34fb", None),
        ("irk:" + "ab" * 16, None),
        ("apple:1005:9-26", None),
    ],
)
def test_find_mac(text: str, mac: str | None) -> None:
    assert find_mac(text) == mac


# --- fuzz -------------------------------------------------------------------------------


def _sized(prefixes: list[bytes], sizes: list[int]) -> st.SearchStrategy[bytes]:
    """A known prefix, then random bytes cut to a size its format expects, or one off."""
    return st.builds(
        lambda prefix, size, body: prefix + body.ljust(size, b"\0")[:size],
        st.sampled_from(prefixes),
        st.sampled_from(sizes),
        st.binary(max_size=24),
    )


# Eddystone frames (after the frame type): UID 19 or 17, URL 2-19, TLM 13, EID 9.
_EDDYSTONE_DATA = _sized(
    [b"\x00", b"\x10", b"\x20\x00", b"\x20", b"\x30", b"\x40"], [1, 9, 12, 13, 17, 19, 21]
)
# After the company id: iBeacon 23 with its 2-byte prefix, AltBeacon 24 with its code.
_MANUFACTURER_DATA = _sized(
    [b"\x4c\x00\x02\x15", b"\x18\x01\xbe\xac", b"\x4c\x00\x10\x06", b"\xff\xff"],
    [3, 20, 21, 22, 23],
)


def _ad_structure(
    ad_types: st.SearchStrategy[int], data: st.SearchStrategy[bytes]
) -> st.SearchStrategy[bytes]:
    """One AD structure whose length byte now and then lies."""
    return st.builds(
        lambda ad_type, body, skew: bytes([max(0, min(255, len(body) + 1 + skew)), ad_type]) + body,
        ad_types,
        data,
        st.sampled_from([0, 0, 0, 0, -1, 1, 5]),
    )


_ADVERTISEMENTS = st.lists(
    st.one_of(
        st.binary(max_size=31),
        _ad_structure(st.just(0x16), _EDDYSTONE_DATA.map(b"\xaa\xfe".__add__)),
        _ad_structure(st.just(0xFF), _MANUFACTURER_DATA),
    ),
    max_size=3,
).map(b"".join)
# Every AD type read_ad_structures reads (names, UUID lists, service data, tx power, and
# manufacturer data), padding, flags and one it does not read, with data of any length.
_AD_TYPES = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x16, 0x20, 0x21]
_ANY_AD_STRUCTURES = st.lists(
    st.one_of(
        _ad_structure(st.sampled_from([*_AD_TYPES, 0x24, 0xFF]), st.binary(max_size=18)),
        st.binary(max_size=3),
    ),
    max_size=5,
).map(b"".join)


def _reference(adv: bytes) -> tuple[Any, ...]:
    """What bluetooth-data-tools (Home Assistant's parser) makes of the bytes."""
    name, uuids, service_data, manufacturer_data, tx_power = parse_advertisement_data_bytes(adv)
    return name, tuple(uuids), dict(service_data), dict(manufacturer_data), tx_power


@pytest.mark.parametrize("entry", ADVERTS, ids=lambda entry: str(entry["name"]))
def test_captured_adverts_read_as_bluetooth_data_tools_reads_them(entry: dict[str, Any]) -> None:
    adv = bytes.fromhex(entry["adv_hex"])
    assert read_ad_structures(adv) == _reference(adv)


@given(adv=_ANY_AD_STRUCTURES)
@example(adv=b"\x05\x09full\x04\x08sho")  # a complete name, then a shortened one
def test_any_bytes_read_as_bluetooth_data_tools_reads_them(adv: bytes) -> None:
    assert read_ad_structures(adv) == _reference(adv)


@given(adv=_ADVERTISEMENTS)
def test_fuzz_only_decode_errors_escape(adv: bytes) -> None:
    # parse_advertisement reaches every decoder: frame_from_advertisement, then
    # parse_manufacturer_data and parse_service_data for each entry.
    try:
        frame = parse_advertisement(adv).frame
    except DecodeError:
        return
    if frame is not None:
        frame.fields()
        frame.identity()
