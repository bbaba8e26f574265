from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import espresense
from devices.ble import find_mac
from devices.health import Inventory
from devices.jsonfields import json_object
from devices.model import DeviceStatus, Message, Sighting, Telemetry
from lantern.errors import DecodeError
from tests.fixture_files import load_jsonl

RECEIVED_AT = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
FIXTURES = load_jsonl("espresense.jsonl")
IBEACON_ID = "iBeacon:426c7565-4368-6172-6d42-6561636f6e73-3838-4949"


def message(topic: str, payload: bytes | str | dict[str, Any], **fields: str) -> Message:
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return Message(topic=topic, payload=payload, received_at=RECEIVED_AT, fields=fields)


def sighting_of(espresense_id: str, **extra: Any) -> Sighting:
    payload = {"id": espresense_id, "rssi": -70, **extra}
    (observation,) = (
        espresense.parse(message(f"espresense/devices/{espresense_id}/hall", payload)) or []
    )
    assert isinstance(observation, Sighting)
    return observation


@pytest.mark.parametrize("routed", [False, True], ids=["topic", "router-fields"])
def test_fixture_sighting(routed: bool) -> None:
    (entry,) = FIXTURES
    fields = {"id": entry["payload"]["id"], "room": "office"} if routed else {}

    observations = espresense.parse(message(entry["topic"], entry["payload"], **fields))

    assert observations == [
        Sighting(
            device_id="office",
            scanner="office",
            identity="ibeacon:426c7565-4368-6172-6d42-6561636f6e73-3838-4949",
            mac="dd8800003777",
            rssi=-81.10,
            distance_m=6.58,
            tx_power=-59,
            beacon={
                "format": "ibeacon",
                "uuid": "426c7565-4368-6172-6d42-6561636f6e73",
                "major": 3838,
                "minor": 4949,
            },
        )
    ]


def test_ibeacon_identity_matches_the_ble_decoder() -> None:
    # The Theengs fixture carries the same beacon's raw bytes; devices/ble.py names it so.
    upper = IBEACON_ID.replace("426c7565", "426C7565")

    assert sighting_of(upper).identity == "ibeacon:426c7565-4368-6172-6d42-6561636f6e73-3838-4949"


@pytest.mark.parametrize(
    ("espresense_id", "identity", "beacon_format"),
    [
        (
            "altBeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-1-2",
            "altbeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-1-2",
            "altbeacon",
        ),
        # ESPresense prints the namespace's fifth byte twice (0x05 here): 11 bytes, not 10.
        (
            "eddy:0102030405050607080910-aabbccddeeff",
            "eddystone:01020304050607080910-aabbccddeeff",
            "eddystone-uid",
        ),
        (
            "eddy:01020304050607080910-aabbccddeeff",
            "eddystone:01020304050607080910-aabbccddeeff",
            "eddystone-uid",
        ),
        ("irk:" + "AB" * 16, "irk:" + "ab" * 16, None),
        ("name:johns-iphone", "espresense:name:johns-iphone", None),
        ("apple:1005:9-26", "espresense:apple:1005:9-26", None),
        ("known:front-door-tag", "espresense:known:front-door-tag", None),
        ("md:0075:26", "espresense:md:0075:26", None),
        (
            "sd:0000fe9f-0000-1000-8000-00805f9b34fb",
            "espresense:sd:0000fe9f-0000-1000-8000-00805f9b34fb",
            None,
        ),
        ("my-alias", "espresense:my-alias", None),
    ],
)
def test_id_forms(espresense_id: str, identity: str, beacon_format: str | None) -> None:
    sighting = sighting_of(espresense_id)

    assert sighting.identity == identity
    assert (sighting.beacon or {}).get("format") == beacon_format
    assert sighting.mac is None


@pytest.mark.parametrize(
    "espresense_id",
    [
        "c4dee2aa0a11",
        "known:c4dee2aa0a11",
        "known:C4:DE:E2:AA:0A:11",
        "tile:c4dee2aa0a11",
        "flora:c4dee2aa0a11",
        "name:esp32-c4dee2aa0a11",
    ],
)
def test_ids_carrying_an_address_give_only_mac(espresense_id: str) -> None:
    sighting = sighting_of(espresense_id)

    assert sighting.identity is None
    assert sighting.beacon is None
    assert sighting.mac == "c4dee2aa0a11"


def test_payload_mac_wins_and_is_normalised() -> None:
    assert sighting_of("c4dee2aa0a11", mac="C4:DE:E2:AA:0A:12").mac == "c4dee2aa0a12"


def test_id_from_topic_when_payload_has_none() -> None:
    observations = espresense.parse(
        message(f"espresense/devices/{IBEACON_ID}/office", {"rssi": -60})
    )

    assert observations is not None
    assert isinstance(observations[0], Sighting)
    assert observations[0].identity == "ibeacon:426c7565-4368-6172-6d42-6561636f6e73-3838-4949"


@pytest.mark.parametrize(("rssi_at_1m", "tx_power"), [(-59, -59), (26, None), (None, None)])
def test_a_calibrated_power_of_zero_or_above_is_no_measured_power(
    rssi_at_1m: int | None, tx_power: int | None
) -> None:
    extra = {} if rssi_at_1m is None else {"rssi@1m": rssi_at_1m}
    assert sighting_of(IBEACON_ID, **extra).tx_power == tx_power


@pytest.mark.parametrize(
    ("payload", "online"), [("online", True), ("offline", False), (" ONLINE\n", True)]
)
def test_room_status(payload: str, online: bool) -> None:
    observations = espresense.parse(message("espresense/rooms/office/status", payload))

    assert observations == [DeviceStatus(device_id="office", online=online)]


# What ESPresense publishes on its telemetry topic (src/main.cpp sendTelemetry, and mV / batt /
# charging from src/Battery.cpp when a battery is wired), with values of a live scanner.
TELEMETRY = {
    "ip": "192.168.1.40",
    "uptime": 3600,
    "firm": "esp32",
    "rssi": -61,
    "mV": 4012,
    "batt": 87,
    "charging": "OFF",
    "ver": "v4.0.1",
    "adverts": 120,
    "seen": 8,
    "reported": 8,
    "freeHeap": 118432,
    "maxHeap": 65524,
    "fingerprints": 9,
    "scanStack": 1024,
    "loopStack": 2048,
    "bleStack": 900,
}
TELEMETRY_HEALTH = {
    "uptime_s": 3600,
    "firmware": "v4.0.1",
    "wifi_rssi_dbm": -61,
    "free_heap_bytes": 118432,
    "battery_mv": 4012,
    "battery_pct": 87,
}


def test_room_telemetry_gives_health_under_the_inventorys_names() -> None:
    observations = espresense.parse(
        message("espresense/rooms/office/telemetry", TELEMETRY, room="office")
    )

    assert observations is not None
    (telemetry,) = observations
    assert isinstance(telemetry, Telemetry)
    assert telemetry.device_id == "office"
    renamed = {"uptime", "ver", "rssi", "freeHeap", "mV", "batt"}
    assert (
        telemetry.values
        == {key: value for key, value in TELEMETRY.items() if key not in renamed} | TELEMETRY_HEALTH
    )


def test_room_telemetry_reaches_the_scanners_health() -> None:
    inventory = Inventory()
    observations = espresense.parse(message("espresense/rooms/office/telemetry", TELEMETRY))
    inventory.observe(observations or [], RECEIVED_AT)

    (record,) = inventory.devices()
    assert (record.device_id, dict(record.health)) == ("office", TELEMETRY_HEALTH)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"uptime": "1h"}, "uptime must be a number, got a string"),
        ({"ver": 4}, "ver must be a string, got a number"),
        ({"freeHeap": None}, None),
    ],
)
def test_room_telemetry_values_are_checked(change: dict[str, Any], reason: str | None) -> None:
    payload = message("espresense/rooms/office/telemetry", TELEMETRY | change)
    if reason is None:
        assert espresense.parse(payload) is not None
        return
    with pytest.raises(DecodeError) as caught:
        espresense.parse(payload)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "topic",
    [
        "espresense/rooms/office",
        "espresense/rooms/office/max_distance",
        "espresense/settings",
        "other",
    ],
)
def test_other_topics_are_not_mine(topic: str) -> None:
    assert espresense.parse(message(topic, "{}")) is None


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("espresense/devices/x/office", b"{not json", "not valid JSON"),
        ("espresense/devices/x/office", b"[1, 2]", "must be a JSON object, got an array"),
        ("espresense/devices/x/office", b"\xff\xfe", "not UTF-8"),
        ("espresense/devices/x/office", {"id": "x"}, "no rssi"),
        ("espresense/devices/x/office", {"id": "x", "rssi": "-70"}, "rssi must be a number"),
        ("espresense/devices/x/office", {"id": "x", "rssi": True}, "rssi must be a number"),
        ("espresense/devices/x/office", b'{"id": "x", "rssi": NaN}', "NaN"),
        ("espresense/devices/x/office", b'{"id": "x", "rssi": 1e999}', "out of range"),
        ("espresense/devices/x/office", {"id": "x", "rssi": -70, "distance": "far"}, "distance"),
        ("espresense/devices/x/office", {"id": 7, "rssi": -70}, "id must be a string"),
        ("espresense/devices/x/office", {"id": "x", "rssi": -70, "mac": "nope"}, "not a MAC"),
        ("espresense/devices/x/", {"id": "x", "rssi": -70}, "no room"),
        ("espresense/devices//office", {"rssi": -70}, "no id"),
        ("espresense/devices/x/office", {"id": "iBeacon:nope", "rssi": -70}, "iBeacon id"),
        ("espresense/devices/x/office", {"id": f"{IBEACON_ID[:-4]}99999", "rssi": -70}, "minor"),
        ("espresense/devices/x/office", {"id": "eddy:0102-aa", "rssi": -70}, "eddy id"),
        (
            "espresense/devices/x/office",
            {"id": "eddy:0102030405060708091011-aabbccddeeff", "rssi": -70},
            "11 bytes",
        ),
        ("espresense/devices/x/office", {"id": "irk:abc", "rssi": -70}, "irk"),
        ("espresense/devices/x/office", b"[" * 100_000, "JSON"),
        ("espresense/rooms/office/status", "maybe", "online or offline"),
        ("espresense/rooms/office/telemetry", "42", "JSON object"),
    ],
)
def test_broken_messages_raise_with_a_reason(topic: str, payload: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        espresense.parse(message(topic, payload))


# --- fuzz -------------------------------------------------------------------------------

_ID_PREFIXES = ["iBeacon:", "altBeacon:", "eddy:", "irk:", "known:", "apple:", "name:", "tile:", ""]
_IDS = st.builds(
    str.__add__, st.sampled_from(_ID_PREFIXES), st.text("0123456789abcdefABCDEF-:x", max_size=60)
) | st.sampled_from([IBEACON_ID, "eddy:0102030405050607080910-aabbccddeeff", "c4dee2aa0a11"])
# Every JSON type a field should not have, and numbers JSON cannot carry (NaN, 1e999). A
# sighting is rssi plus a few (key, value) pairs from a table: far cheaper to generate than
# optional keys, so 10,000 examples stay within seconds.
_ODD_VALUES = [None, True, "-70", "", [], {}, [-70], 10**400]
_NON_FINITE = [float("nan"), float("inf")]
_FIELD_VALUES: dict[str, list[Any]] = {
    "mac": ["c4:de:e2:aa:0a:11", "C4DEE2AA0A11", "zz", 7],
    "rssi@1m": [-59, -59.4, -(10**30)],
    "distance": [0.0, 6.58, 120.5],
}
_FIELDS = [
    (key, value) for key, values in _FIELD_VALUES.items() for value in [*values, *_ODD_VALUES]
]
_NO_ID = object()


def _sighting(rssi: Any, espresense_id: Any, fields: list[tuple[str, Any]]) -> bytes:
    document = {"rssi": rssi, **dict(fields)}
    if espresense_id is not _NO_ID:
        document["id"] = espresense_id
    return json.dumps(document).encode()


_SIGHTINGS = st.builds(
    _sighting,
    st.sampled_from([*range(-100, 1, 5), -81.1, *_ODD_VALUES, *_NON_FINITE]),
    _IDS | st.sampled_from([_NO_ID, *_ODD_VALUES]),
    st.lists(st.sampled_from(_FIELDS), max_size=4),
)
_PAYLOADS = st.one_of(
    _SIGHTINGS,
    _SIGHTINGS,
    _SIGHTINGS,
    st.sampled_from([b"online", b"offline", b"{}", b"[]", b"\xff"]),
    st.binary(max_size=20),
)
_TOPICS = st.sampled_from(
    [
        *["espresense/devices/{id}/office"] * 6,
        "espresense/devices/{id}/",
        "espresense/rooms/office/status",
        "espresense/rooms/office/telemetry",
        "espresense/rooms//status",
        "espresense",
        "",
    ]
)


@given(
    topic=_TOPICS,
    topic_id=st.sampled_from([IBEACON_ID, "c4dee2aa0a11", "name:x", "iBeacon:x", ""]),
    payload=_PAYLOADS,
    routed=st.booleans(),
)
def test_fuzz_only_decode_errors_escape(
    topic: str, topic_id: str, payload: bytes, routed: bool
) -> None:
    fields = {"id": topic_id, "room": "office"} if routed and "{id}" in topic else {}
    with contextlib.suppress(DecodeError):
        espresense.parse(message(topic.replace("{id}", topic_id), payload, **fields))


def _read(payload: bytes, topic_id: str, one_pass: bool) -> str:
    """What the decoder makes of a sighting, by its one typed pass or field by field: the
    sighting's repr (an integer and a float apart) or the decode error's reason."""
    sighting_message = message(f"espresense/devices/{topic_id}/office", payload)
    try:
        if one_pass:
            return repr(espresense.parse(sighting_message))
        document = json_object(sighting_message, "ESPresense sighting")
        fields = espresense._read_one_by_one(document)
        return repr([espresense._sighting_of(fields, topic_id, "office")])
    except DecodeError as exc:
        return exc.reason


@given(payload=_SIGHTINGS, topic_id=st.sampled_from([IBEACON_ID, "c4dee2aa0a11", "name:x", ""]))
def test_the_one_pass_read_of_a_sighting_is_the_field_by_field_one(
    payload: bytes, topic_id: str
) -> None:
    assert _read(payload, topic_id, one_pass=True) == _read(payload, topic_id, one_pass=False)


def test_no_identity_ever_carries_an_address() -> None:
    ids = [
        "tile:c4dee2aa0a11",
        "name:phone-C4:DE:E2:AA:0A:11",
        "known:c4-de-e2-aa-0a-11",
        "sonos:c4dee2aa0a11",
        "miTherm:c4dee2aa0a11",
        "garmin:c4dee2aa0a11",
    ]
    for espresense_id in ids:
        sighting = sighting_of(espresense_id, mac="c4dee2aa0a11")
        assert sighting.identity is None or find_mac(sighting.identity) is None, espresense_id
        assert sighting.beacon is None
