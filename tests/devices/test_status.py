"""A device's last will and status reports, plain and JSON with health, and a fuzz test."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import status
from devices.model import DeviceStatus, Message, Telemetry
from lantern.errors import DecodeError
from tests.devices.fuzzing import ANY_JSON, near

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
TOPIC = "lantern/s1/device/scanner-bridge-1/status"
REPORT = {
    "status": "online",
    "firmware": "0.3.0",
    "uptime_s": 3600,
    "battery_pct": 87,
    "wifi_rssi_dbm": -58,
    "free_heap_bytes": 91234,
    "queued": 2,
}


def parse(payload: bytes | str | dict[str, Any], topic: str = TOPIC) -> list[Any]:
    raw = json.dumps(payload) if isinstance(payload, dict) else payload
    data = raw.encode() if isinstance(raw, str) else raw
    return status.parse(Message(topic, data, NOW)) or []


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        ("online", True),
        ("offline", False),
        (" Connected\n", True),
        ("disconnected", False),
        ({"status": "offline"}, False),
    ],
)
def test_plain_and_json_states(payload: str | dict[str, Any], online: bool) -> None:
    assert parse(payload) == [DeviceStatus(device_id="scanner-bridge-1", online=online)]


def test_a_json_report_carries_the_devices_health() -> None:
    assert parse(REPORT) == [
        DeviceStatus(device_id="scanner-bridge-1", online=True),
        Telemetry(
            device_id="scanner-bridge-1",
            values={key: value for key, value in REPORT.items() if key != "status"},
        ),
    ]


def test_the_device_comes_from_the_router_when_it_names_it() -> None:
    message = Message("any/topic", b"online", NOW, {"device": "coffee-1"})
    assert status.parse(message) == [DeviceStatus(device_id="coffee-1", online=True)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("away", "status must be online or offline, got 'away'"),
        ({"status": 1}, "status must be a string, got a number"),
        ({"battery": 5}, "status must be online or offline, got ''"),
        (REPORT | {"uptime_s": "1h"}, "uptime_s must be a number, got a string"),
        (REPORT | {"firmware": 3}, "firmware must be a string, got a number"),
        (
            "{online",
            "status JSON is not valid JSON: Expecting property name enclosed in double quotes at 1",
        ),
        (b"\xff", "payload is not UTF-8 (byte 0)"),
    ],
)
def test_broken_reports_say_why(payload: Any, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        parse(payload)
    assert caught.value.reason == reason


_FIELDS = {
    "status": ["online", "offline", "ONLINE", ""],
    "uptime_s": [0, 3600, 2.5],
    "battery_pct": [0, 100],
    "firmware": ["0.3.0"],
    "wifi_rssi_dbm": [-58],
}
_ODD = [None, "x", [], {}, True, 10**400, float("nan")]


@given(
    st.one_of(
        near(REPORT, _FIELDS, _ODD).map(lambda document: json.dumps(document).encode()),
        ANY_JSON.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=40),
        st.sampled_from([b"online", b"offline", b"{", b'{"status": NaN}']),
    )
)
def test_fuzz_only_decode_errors_escape(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse(payload)
