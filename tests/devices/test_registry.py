"""The device registry: a beacon named by its identity, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from devices.registry import DeviceSpec, beacon_names, expected_intervals
from gateway.config import load_settings
from lantern.errors import ConfigError

IBEACON = "ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-100-3"


@pytest.mark.parametrize(
    "identity",
    [
        IBEACON,
        IBEACON.upper().replace("IBEACON", "iBeacon"),  # ESPresense's spelling of the kind
        "altbeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-1-2",
        "eddystone:12345678901234678901-000000000001",
    ],
)
def test_a_device_may_name_a_beacon_by_its_identity(identity: str) -> None:
    spec = DeviceSpec.model_validate({"id": "shelf-tag-12", "beacon": identity})
    assert spec.beacon == identity.lower()


@pytest.mark.parametrize(
    "identity",
    [
        "aa:bb:cc:dd:ee:ff",  # an address is no identity: it becomes a daily pseudonym
        "eddystone-eid:4549445f74657374",  # rotates
        "ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6",
        "",
    ],
)
def test_anything_else_is_refused_saying_what_a_beacon_identity_is(identity: str) -> None:
    with pytest.raises(ValidationError, match="must be a beacon identity"):
        DeviceSpec.model_validate({"id": "shelf-tag-12", "beacon": identity})


def test_beacon_names_and_intervals() -> None:
    devices = [
        DeviceSpec(id="shelf-tag-12", beacon=IBEACON, expected_interval_s=600),
        DeviceSpec(id="till-1", expected_interval_s=None),
    ]

    assert beacon_names(devices) == {IBEACON: "shelf-tag-12"}
    assert expected_intervals(devices) == {"shelf-tag-12": 600, "till-1": None}


def test_a_beacon_named_twice_is_refused() -> None:
    devices = [DeviceSpec(id="tag-a", beacon=IBEACON), DeviceSpec(id="tag-b", beacon=IBEACON)]

    with pytest.raises(
        ValueError, match=f"beacon {IBEACON} is named by two devices: tag-a and tag-b"
    ):
        beacon_names(devices)


def test_store_yaml_refuses_a_beacon_named_twice(tmp_path: Path) -> None:
    config = tmp_path / "store.yaml"
    config.write_text(
        "devices:\n"
        f"  - {{id: tag-a, beacon: '{IBEACON}'}}\n"
        f"  - {{id: tag-b, beacon: '{IBEACON}'}}\n"
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [
        f"{config}: devices: beacon {IBEACON} is named by two devices: tag-a and tag-b"
    ]


@pytest.mark.parametrize(
    "device_id", ["AA:BB:CC:DD:EE:FF", "aabbccddeeff", "till-AA-BB-CC-DD-EE-FF"]
)
def test_a_device_is_not_named_by_its_address(device_id: str) -> None:
    """gateway/privacy.py pseudonymises an address in a topic level: no entry could match it."""
    with pytest.raises(ValidationError, match="is a MAC address"):
        DeviceSpec(id=device_id)


@pytest.mark.parametrize("device_id", ["till-3", "coffee-2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"])
def test_names_and_uuids_are_not_addresses(device_id: str) -> None:
    assert DeviceSpec(id=device_id).id == device_id
