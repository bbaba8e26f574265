"""Consumable reports (the Alexa Dash Replenishment fixtures as they are, Alexa envelopes,
Matter resource monitoring, plain levels), the reorder debounce, and fuzz tests."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devices import reorder
from devices.model import Message
from devices.reorder import (
    ReorderCleared,
    ReorderReport,
    ReorderRequested,
    ReorderTracker,
    SlotConfig,
    SlotState,
)
from lantern.errors import DecodeError
from tests.devices.fuzzing import (
    ANY_JSON,
    key_value_table,
    near,
    with_changes,
)
from tests.fixture_files import load_jsonl

RECEIVED_AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
TOPIC = "lantern/store-1/reorder/coffee-1"
FIXTURES = {entry["payload"]["namespace"]: entry for entry in load_jsonl("reorder.jsonl")}
ALEXA_LEVEL = FIXTURES["Alexa.InventoryLevelSensor"]["payload"]
ALEXA_USAGE = FIXTURES["Alexa.InventoryUsageSensor"]["payload"]
EAN_13 = "4006381333931"  # a valid EAN-13 (check digit 1)
EAN_13_AS_GTIN_14 = "04006381333931"
UPC_A = "036000291452"
UPC_A_AS_GTIN_14 = "00036000291452"
COFFEE_PODS_GTIN = "07612100055557"


def message(payload: bytes | dict[str, Any], topic: str = TOPIC, **fields: str) -> Message:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return Message(topic=topic, payload=raw, received_at=RECEIVED_AT, fields=fields)


def reports(
    payload: bytes | dict[str, Any], topic: str = TOPIC, **fields: str
) -> list[ReorderReport]:
    observations = reorder.parse(message(payload, topic, **fields))
    assert observations is not None
    assert all(isinstance(item, ReorderReport) for item in observations)
    return [item for item in observations if isinstance(item, ReorderReport)]


def report_of(payload: bytes | dict[str, Any], topic: str = TOPIC, **fields: str) -> ReorderReport:
    (only,) = reports(payload, topic, **fields)
    return only


# --- the Alexa Dash Replenishment fixtures -------------------------------------------------------


def test_fixtures_are_the_two_alexa_shapes() -> None:
    assert set(FIXTURES) == {"Alexa.InventoryLevelSensor", "Alexa.InventoryUsageSensor"}


def test_alexa_level_fixture() -> None:
    result = report_of(ALEXA_LEVEL, device="coffee-1")

    assert result.device_id == "coffee-1"
    assert (result.slot, result.kind, result.level, result.unit) == (
        "InventoryLevelSensor-1",
        "level",
        2.5,
        "liter",  # Alexa's Volume unit "LITER", in lower case
    )
    assert result.observed_at == datetime(2018, 2, 3, 16, 20, 50, 520000, tzinfo=UTC)
    assert (result.indication, result.replacement_gtins) == (None, None)


def test_alexa_usage_fixture() -> None:
    result = report_of(ALEXA_USAGE, device="coffee-1")

    assert (result.slot, result.kind, result.level, result.unit) == (
        "InventoryUsageSensor-1",
        "usage",
        1.0,
        "count",
    )
    assert result.observed_at == datetime(2020, 9, 23, 16, 20, 50, tzinfo=UTC)


def test_report_event_type_and_data() -> None:
    result = report_of(ALEXA_LEVEL)

    assert result.cloud_event_type() == "lantern.device.telemetry"
    assert result.subject() == "coffee-1"
    assert result.event_data() == {
        "slot": "InventoryLevelSensor-1",
        "kind": "level",
        "level": 2.5,
        "unit": "liter",
    }


def test_device_falls_back_to_the_last_topic_level() -> None:
    assert report_of(ALEXA_LEVEL, "lantern/store-1/reorder/fridge-2/").device_id == "fridge-2"


@pytest.mark.parametrize(
    ("measure", "level", "unit"),
    [
        ({"@type": "Count", "value": 12}, 12.0, "count"),
        ({"@type": "Percentage", "value": 40}, 40.0, "percent"),
        ({"@type": "Percentage", "value": 100}, 100.0, "percent"),
        ({"@type": "Percentage", "value": 0}, 0.0, "percent"),
        ({"@type": "Volume", "value": 250, "unit": "MILLILITER"}, 250.0, "milliliter"),
        ({"@type": "Weight", "value": 1.25, "unit": "KILOGRAM"}, 1.25, "kilogram"),
    ],
)
def test_alexa_measures(measure: dict[str, Any], level: float, unit: str) -> None:
    result = report_of({**ALEXA_LEVEL, "value": measure})

    assert (result.level, result.unit) == (level, unit)


# --- Alexa event envelopes -----------------------------------------------------------------------

ENDPOINT = {"endpointId": "coffee-machine-01", "scope": {"type": "BearerToken", "token": "t"}}
CHANGE_REPORT: dict[str, Any] = {
    "event": {
        "header": {
            "namespace": "Alexa",
            "name": "ChangeReport",
            "messageId": "abc-123",
            "payloadVersion": "3",
        },
        "endpoint": ENDPOINT,
        "payload": {
            "change": {
                "cause": {"type": "PERIODIC_POLL"},
                "properties": [ALEXA_LEVEL],
            }
        },
    },
    "context": {
        "properties": [
            {
                "namespace": "Alexa.EndpointHealth",
                "name": "connectivity",
                "value": {"value": "OK"},
                "timeOfSample": "2018-02-03T16:20:50.52Z",
                "uncertaintyInMilliseconds": 0,
            },
            {
                "namespace": "Alexa.InventoryLevelSensor",
                "instance": "InventoryLevelSensor-2",
                "name": "level",
                "value": {"@type": "Percentage", "value": 35},
                "timeOfSample": "2018-02-03T16:20:50.52Z",
                "uncertaintyInMilliseconds": 0,
            },
        ]
    },
}
INVENTORY_CONSUMED: dict[str, Any] = {
    "event": {
        "header": {
            "namespace": "Alexa.InventoryUsageSensor",
            "name": "InventoryConsumed",
            "instance": "InventoryUsageSensor-1",
            "messageId": "abc-124",
            "payloadVersion": "3",
        },
        "endpoint": ENDPOINT,
        "payload": {
            "usage": {"@type": "Count", "value": 2},
            "timeOfSample": "2020-09-23T16:20:50Z",
        },
    }
}


def test_alexa_change_report_reads_changed_and_context_properties() -> None:
    result = reports(CHANGE_REPORT)

    assert [(item.slot, item.kind, item.level, item.unit) for item in result] == [
        ("InventoryLevelSensor-1", "level", 2.5, "liter"),
        ("InventoryLevelSensor-2", "level", 35.0, "percent"),
    ]  # the EndpointHealth property and the ChangeReport header are skipped
    assert {item.device_id for item in result} == {"coffee-1"}


def test_alexa_inventory_consumed_event() -> None:
    result = report_of(INVENTORY_CONSUMED)

    assert (result.slot, result.kind, result.level, result.unit) == (
        "InventoryUsageSensor-1",
        "usage",
        2.0,
        "count",
    )
    assert result.observed_at == datetime(2020, 9, 23, 16, 20, 50, tzinfo=UTC)


# --- Matter resource monitoring ------------------------------------------------------------------

MATTER: dict[str, Any] = {
    "condition": 20,
    "degradationDirection": "Down",
    "changeIndication": "Warning",
    "replacementProductList": [
        {"productIdentifierType": "EAN", "productIdentifierValue": EAN_13},
        {"productIdentifierType": "OEM", "productIdentifierValue": "HEPA-FILTER-XL"},
        {"productIdentifierType": "GTIN14", "productIdentifierValue": COFFEE_PODS_GTIN},
    ],
}


def test_matter_report() -> None:
    result = report_of(MATTER, "lantern/store-1/reorder/purifier-1")

    assert result.device_id == "purifier-1"
    assert (result.slot, result.kind, result.level, result.unit) == (
        "resource",
        "level",
        20.0,
        "percent",
    )
    assert result.indication == "warning"
    # GTIN-like products as GTIN-14s, in the device's order; the OEM part number is no GTIN.
    assert result.replacement_gtins == (EAN_13_AS_GTIN_14, COFFEE_PODS_GTIN)


def test_matter_degradation_up_inverts_the_condition() -> None:
    result = report_of({**MATTER, "degradationDirection": "Up"})

    assert (result.level, result.unit) == (80.0, "percent")


@pytest.mark.parametrize(
    ("direction", "level"),
    [
        ("Down", 30.0),
        ("down", 30.0),
        (1, 30.0),
        (None, 30.0),
        ("Up", 70.0),
        ("UP", 70.0),
        (0, 70.0),
    ],
)
def test_matter_degradation_direction_by_name_or_number(direction: Any, level: float) -> None:
    assert report_of({"condition": 30, "degradationDirection": direction}).level == level


@pytest.mark.parametrize(
    ("indication", "expected"),
    [
        ("OK", "ok"),
        ("Warning", "warning"),
        ("Critical", "critical"),
        ("critical", "critical"),
        (0, "ok"),
        (1, "warning"),
        (2, "critical"),
        (None, None),
    ],
)
def test_matter_change_indication(indication: Any, expected: str | None) -> None:
    assert report_of({"condition": 50, "changeIndication": indication}).indication == expected


def test_matter_indication_without_condition() -> None:
    result = report_of({"changeIndication": "Critical"})

    assert (result.level, result.unit, result.indication) == (None, None, "critical")
    assert result.replacement_gtins is None


@pytest.mark.parametrize(
    ("kind", "value", "gtin"),
    [
        ("UPC", UPC_A, UPC_A_AS_GTIN_14),
        (0, UPC_A, UPC_A_AS_GTIN_14),
        ("GTIN8", "96385074", "00000096385074"),
        ("GTIN-8", "96385074", "00000096385074"),
        (1, "96385074", "00000096385074"),
        ("EAN", EAN_13, EAN_13_AS_GTIN_14),
        (2, EAN_13, EAN_13_AS_GTIN_14),
        ("GTIN14", EAN_13_AS_GTIN_14, EAN_13_AS_GTIN_14),
        ("Gtin_14", COFFEE_PODS_GTIN, COFFEE_PODS_GTIN),
        (3, COFFEE_PODS_GTIN, COFFEE_PODS_GTIN),
    ],
)
def test_matter_replacement_product_types(kind: Any, value: str, gtin: str) -> None:
    product = {"productIdentifierType": kind, "productIdentifierValue": value}

    assert report_of({"condition": 5, "replacementProductList": [product]}).replacement_gtins == (
        gtin,
    )


@pytest.mark.parametrize(
    "products", [[], [{"productIdentifierType": 4, "productIdentifierValue": "X-1"}]]
)
def test_matter_without_gtins_names_none(products: list[dict[str, Any]]) -> None:
    assert report_of({**MATTER, "replacementProductList": products}).replacement_gtins == ()


@pytest.mark.parametrize(
    ("document", "slot"),
    [
        ({**MATTER, "slot": "hepa"}, "hepa"),
        ({**MATTER, "cluster": "HepaFilterMonitoring"}, "HepaFilterMonitoring"),
        ({**MATTER, "slot": "hepa", "cluster": "HepaFilterMonitoring"}, "hepa"),
        ({**MATTER, "slot": ""}, "resource"),
    ],
)
def test_matter_slot(document: dict[str, Any], slot: str) -> None:
    assert report_of(document).slot == slot


def test_matter_time() -> None:
    result = report_of({**MATTER, "time": "2026-11-23T07:59:00+01:00"})

    assert result.observed_at == datetime(2026, 11, 23, 6, 59, tzinfo=UTC)


# --- plain reports -------------------------------------------------------------------------------


def test_plain_level() -> None:
    result = report_of(
        {"slot": "pods", "level": 12, "unit": "Count", "time": "2026-11-23T07:00:00Z"}
    )

    assert (result.slot, result.kind, result.level, result.unit) == ("pods", "level", 12.0, "count")
    assert result.observed_at == datetime(2026, 11, 23, 7, tzinfo=UTC)
    assert (result.indication, result.replacement_gtins) == (None, None)


def test_plain_usage() -> None:
    result = report_of({"slot": "milk", "usage": 0.2, "unit": "LITER"})

    assert (result.slot, result.kind, result.level, result.unit) == ("milk", "usage", 0.2, "liter")


def test_plain_level_without_unit() -> None:
    assert report_of({"slot": "pods", "level": 3}).unit is None


def test_plain_level_with_the_slots_capacity_and_product() -> None:
    """What Lantern's consumables firmware stub sends (firmware_stubs/micropython/consumables)."""
    result = report_of(
        {"slot": "pods", "level": 12, "unit": "count", "capacity": 40, "gtin": "7612100055557"}
    )

    assert (result.level, result.capacity) == (12.0, 40.0)
    assert result.replacement_gtins == ("07612100055557",)


@pytest.mark.parametrize("unit", ["percent", "Percent", "%"])
def test_plain_percentage_up_to_100(unit: str) -> None:
    assert report_of({"slot": "toner", "level": 100, "unit": unit}).level == 100.0


# --- broken reports ------------------------------------------------------------------------------


def alexa_level(**changes: Any) -> dict[str, Any]:
    return {**ALEXA_LEVEL, **changes}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc3\x28", "payload is not UTF-8 (byte 0)"),
        (b"level=5", "reorder report is not valid JSON: Expecting value at 0"),
        (
            b'{"slot": "pods", "level": Infinity}',
            "reorder report is not valid JSON: Infinity is not a JSON number",
        ),
        (b'"pods"', "reorder report must be a JSON object, got a string"),
        (
            {"slot": "pods"},
            "neither an Alexa inventory report, a Matter resource monitoring report,"
            " nor a slot level or usage",
        ),
        # negative levels and amounts
        ({"slot": "pods", "level": -1}, "level -1.0 is negative"),
        ({"slot": "pods", "usage": -0.5}, "usage -0.5 is negative"),
        (
            alexa_level(value={"@type": "Volume", "value": -2.5, "unit": "LITER"}),
            "value -2.5 is negative",
        ),
        ({**MATTER, "condition": -1}, "condition -1.0 is negative"),
        # percentages over 100
        (alexa_level(value={"@type": "Percentage", "value": 101}), "percentage 101.0 is over 100"),
        ({"slot": "toner", "level": 150, "unit": "percent"}, "percentage 150.0 is over 100"),
        ({"slot": "toner", "level": 100.5, "unit": "%"}, "percentage 100.5 is over 100"),
        ({**MATTER, "condition": 101}, "condition 101.0 is over 100 percent"),
        # Alexa measures
        (
            alexa_level(value={"@type": "Temperature", "value": 21}),
            "Alexa measure @type 'Temperature' is not Count, Percentage, Volume or Weight",
        ),
        (
            alexa_level(value={"value": 21}),
            "Alexa measure @type '' is not Count, Percentage, Volume or Weight",
        ),
        (alexa_level(value={"@type": "Volume", "value": 2.5}), "Alexa Volume has no unit"),
        (alexa_level(value={"@type": "Volume"}), "Alexa Volume has no value"),
        (alexa_level(value=None), "Alexa measure has no value"),
        (alexa_level(value=2.5), "value must be an object, got a number"),
        (
            alexa_level(value={"@type": "Count", "value": "2"}),
            "value must be a number, got a string",
        ),
        (  # an exponent past float's range: JSON, but infinite
            json.dumps(alexa_level(value={"@type": "Count", "value": 0}))
            .replace('"value": 0}', '"value": 1e999}')
            .encode(),
            "value is out of range",
        ),
        (alexa_level(value={"@type": 5, "value": 2}), "@type must be a string, got a number"),
        # Alexa's slot and interface
        (
            {k: v for k, v in ALEXA_LEVEL.items() if k != "instance"},
            "Alexa.InventoryLevelSensor.level has no instance (the slot)",
        ),
        (alexa_level(instance=""), "Alexa.InventoryLevelSensor.level has no instance (the slot)"),
        (
            {**ALEXA_USAGE, "instance": None},
            "Alexa.InventoryUsageSensor.InventoryConsumed has no instance (the slot)",
        ),
        (alexa_level(instance=1), "instance must be a string, got a number"),
        (
            {"namespace": "Alexa.PowerController", "name": "powerState", "value": "ON"},
            "not an inventory report: Alexa.PowerController.powerState",
        ),
        (alexa_level(name="levels"), "not an inventory report: Alexa.InventoryLevelSensor.levels"),
        (alexa_level(timeOfSample="2018-02-03"), "timeOfSample has no time zone: '2018-02-03'"),
        # Alexa envelopes
        (
            {**CHANGE_REPORT, "context": None, "event": {"header": {"name": "ChangeReport"}}},
            "Alexa event carries no inventory level or usage",
        ),
        ({"event": None}, "Alexa event carries no inventory level or usage"),
        ({"event": []}, "event must be an object, got an array"),
        (
            {"event": {"payload": {"change": {"properties": {}}}}},
            "properties must be a list of objects",
        ),
        ({"event": {}, "context": {"properties": [1]}}, "properties must be a list of objects"),
        # Matter enums and products
        (
            {**MATTER, "changeIndication": "Bogus"},
            "changeIndication 'Bogus' is not one of ['0', '1', '2', 'critical', 'ok', 'warning']",
        ),
        (
            {**MATTER, "changeIndication": 3},
            "changeIndication '3' is not one of ['0', '1', '2', 'critical', 'ok', 'warning']",
        ),
        (
            {**MATTER, "changeIndication": True},
            "changeIndication 'True' is not one of ['0', '1', '2', 'critical', 'ok', 'warning']",
        ),
        (
            {**MATTER, "degradationDirection": "Sideways"},
            "degradationDirection 'Sideways' is not one of ['0', '1', 'down', 'up']",
        ),
        (
            {**MATTER, "degradationDirection": 1.0},
            "degradationDirection '1.0' is not one of ['0', '1', 'down', 'up']",
        ),
        (
            {
                **MATTER,
                "replacementProductList": [
                    {"productIdentifierType": "ISBN", "productIdentifierValue": "x"}
                ],
            },
            "productIdentifierType 'isbn' is not UPC, GTIN8, EAN, GTIN14 or OEM",
        ),
        (
            {**MATTER, "replacementProductList": [{"productIdentifierValue": EAN_13}]},
            "productIdentifierType 'null' is not UPC, GTIN8, EAN, GTIN14 or OEM",
        ),
        (
            {
                **MATTER,
                "replacementProductList": [
                    {"productIdentifierType": "EAN", "productIdentifierValue": "4006381333932"}
                ],
            },
            "check digit: expected 1, got 2",
        ),
        (
            {
                **MATTER,
                "replacementProductList": [
                    {"productIdentifierType": "EAN", "productIdentifierValue": "ABC"}
                ],
            },
            "not a GTIN (8, 12, 13 or 14 digits): 'ABC'",
        ),
        (
            {**MATTER, "replacementProductList": [{"productIdentifierType": "EAN"}]},
            "not a GTIN (8, 12, 13 or 14 digits): ''",
        ),
        (
            {**MATTER, "replacementProductList": {"EAN": EAN_13}},
            "replacementProductList must be a list of objects",
        ),
        ({**MATTER, "condition": "20"}, "condition must be a number, got a string"),
        ({**MATTER, "slot": 7}, "slot must be a string, got a number"),
        # plain
        ({"level": 5}, "report has no slot"),
        ({"slot": "", "level": 5}, "report has no slot"),
        ({"slot": "pods", "level": "5"}, "level must be a number, got a string"),
        ({"slot": "pods", "level": True}, "level must be a number, got a boolean"),
        ({"slot": "pods", "level": 5, "unit": 1}, "unit must be a string, got a number"),
        ({"slot": "pods", "level": 5, "time": "now"}, "time is not an RFC 3339 time: 'now'"),
        ({"slot": "pods", "level": 5, "capacity": -1}, "capacity -1.0 is negative"),
        ({"slot": "pods", "level": 5, "gtin": "7612100055558"}, "check digit: expected 7, got 8"),
        (
            {"slot": "pods", "level": 5, "gtin": 7612100055557},
            "gtin must be a string, got a number",
        ),
    ],
)
def test_broken_reports_say_why(payload: bytes | dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        reorder.parse(message(payload))
    assert caught.value.reason == reason


# --- the reorder debounce ------------------------------------------------------------------------

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PODS = SlotConfig(
    device_id="coffee-1", slot="pods", threshold=10, rearm_level=40, gtin=COFFEE_PODS_GTIN
)


def level(
    value: float | None, slot: str = "pods", device: str = "coffee-1", **extra: Any
) -> ReorderReport:
    return ReorderReport(
        device_id=device, slot=slot, kind="level", level=value, unit="count", **extra
    )


def usage(value: float, slot: str = "pods") -> ReorderReport:
    return ReorderReport(device_id="coffee-1", slot=slot, kind="usage", level=value, unit="count")


def feed(tracker: ReorderTracker, *levels: float | None) -> list[list[Any]]:
    """The events of each level report in turn, a minute apart."""
    return [
        tracker.update(level(value), T0 + timedelta(minutes=index))
        for index, value in enumerate(levels)
    ]


def state(tracker: ReorderTracker, slot: str = "pods") -> SlotState:
    (only,) = [item for item in tracker.states() if item.slot == slot]
    return only


def test_requested_after_exactly_three_consecutive_low_reports() -> None:
    tracker = ReorderTracker([PODS])

    first, second, third = feed(tracker, 8, 9, 10)  # 10: at the threshold counts as low

    assert first == second == []
    (event,) = third
    assert isinstance(event, ReorderRequested)
    assert event.cloud_event_type() == "lantern.reorder.requested"
    assert (event.device_id, event.slot, event.level, event.unit, event.gtin) == (
        "coffee-1",
        "pods",
        10.0,
        "count",
        COFFEE_PODS_GTIN,
    )
    assert event.event_data() == {
        "slot": "pods",
        "level": 10.0,
        "unit": "count",
        "gtin": COFFEE_PODS_GTIN,
    }
    assert (state(tracker).low_reports, state(tracker).requested) == (3, True)


def test_requested_event_carries_the_reports_time() -> None:
    tracker = ReorderTracker([PODS])
    stamp = datetime(2026, 11, 23, 7, 59, tzinfo=UTC)

    for _ in range(2):
        tracker.update(level(1), T0)
    (event,) = tracker.update(level(1, observed_at=stamp), T0)

    assert event.observed_at == stamp
    assert state(tracker).updated_at == T0


@pytest.mark.parametrize("high", [10.5, 25, 40, 41, 100])
def test_a_report_above_the_threshold_breaks_the_streak(high: float) -> None:
    tracker = ReorderTracker([PODS])

    assert feed(tracker, 5, 5, high, 5, 5) == [[], [], [], [], []]
    assert (state(tracker).low_reports, state(tracker).requested) == (2, False)


def test_requested_once_however_long_it_stays_low() -> None:
    tracker = ReorderTracker([PODS])

    events = feed(tracker, 5, 4, 3, 2, 1, 0)

    assert [len(item) for item in events] == [0, 0, 1, 0, 0, 0]
    assert state(tracker).requested is True


def test_between_threshold_and_rearm_keeps_the_request() -> None:
    tracker = ReorderTracker([PODS])
    feed(tracker, 5, 5, 5)

    # Above the threshold but not above the re-arm level: no event, still requested, and a
    # new low streak orders nothing more.
    assert feed(tracker, 11, 30, 40, 5, 5, 5, 5) == [[]] * 7
    assert state(tracker).requested is True


def test_cleared_only_above_the_rearm_level_then_requested_again() -> None:
    tracker = ReorderTracker([PODS])
    feed(tracker, 5, 5, 5)

    assert feed(tracker, 40) == [[]]  # at the re-arm level: not refilled
    (cleared,) = tracker.update(level(41), T0)
    assert isinstance(cleared, ReorderCleared)
    assert cleared.cloud_event_type() == "lantern.reorder.cleared"
    assert (cleared.level, cleared.unit, cleared.gtin) == (41.0, "count", COFFEE_PODS_GTIN)
    assert (state(tracker).requested, state(tracker).low_reports) == (False, 0)

    assert feed(tracker, 90) == [[]]  # cleared once
    events = feed(tracker, 9, 9, 9)
    assert [len(item) for item in events] == [0, 0, 1]
    assert isinstance(events[2][0], ReorderRequested)


def test_a_high_level_without_a_request_clears_nothing() -> None:
    tracker = ReorderTracker([PODS])

    assert feed(tracker, 100, 5, 100) == [[], [], []]


def test_a_level_report_without_a_level_changes_nothing() -> None:
    tracker = ReorderTracker([PODS])
    feed(tracker, 5, 5)

    assert feed(tracker, None) == [[]]
    assert state(tracker).low_reports == 2
    assert len(feed(tracker, 5)[0]) == 1


def test_debounce_reports_is_configurable() -> None:
    config = PODS.model_copy(update={"debounce_reports": 1})
    tracker = ReorderTracker([config])

    (event,) = tracker.update(level(3), T0)
    assert isinstance(event, ReorderRequested)


def test_rearm_level_equal_to_threshold() -> None:
    config = SlotConfig(device_id="coffee-1", slot="pods", threshold=10, rearm_level=10)
    tracker = ReorderTracker([config])

    assert [len(item) for item in feed(tracker, 10, 10, 10, 10.5)] == [0, 0, 1, 1]


# usage reports --------------------------------------------------------------------------------

MILK = SlotConfig(device_id="coffee-1", slot="milk", threshold=1, rearm_level=2, capacity=5)


def test_usage_with_a_capacity_is_taken_off_the_level() -> None:
    tracker = ReorderTracker([MILK])

    assert tracker.update(usage(1.5, "milk"), T0) == []  # 5 - 1.5 = 3.5
    assert state(tracker, "milk").level == 3.5
    assert tracker.update(usage(2.5, "milk"), T0) == []  # 1.0: low, 1
    assert tracker.update(usage(0.25, "milk"), T0) == []  # 0.75: low, 2
    (event,) = tracker.update(usage(3, "milk"), T0)  # never below empty: 0.0, low, 3

    assert isinstance(event, ReorderRequested)
    assert (event.slot, event.level, event.unit, event.gtin) == ("milk", 0.0, None, None)
    assert state(tracker, "milk").level == 0.0


def test_usage_continues_from_the_last_reported_level() -> None:
    tracker = ReorderTracker([MILK])
    tracker.update(level(2, "milk"), T0)

    tracker.update(usage(0.5, "milk"), T0)

    assert state(tracker, "milk").level == 1.5


def test_refill_sets_the_slot_full_and_clears_the_request() -> None:
    tracker = ReorderTracker([MILK])
    for _ in range(3):
        tracker.update(usage(5, "milk"), T0)
    assert state(tracker, "milk").requested is True

    (event,) = tracker.refill("coffee-1", "milk", T0 + timedelta(hours=1))

    assert isinstance(event, ReorderCleared)
    assert (event.slot, event.level) == ("milk", 5.0)
    after = state(tracker, "milk")
    assert (after.level, after.requested, after.low_reports) == (5.0, False, 0)
    assert after.updated_at == T0 + timedelta(hours=1)
    assert tracker.update(usage(1, "milk"), T0) == []
    assert state(tracker, "milk").level == 4.0


def test_refill_without_a_request_emits_nothing() -> None:
    tracker = ReorderTracker([MILK])

    assert tracker.refill("coffee-1", "milk", T0) == []
    assert state(tracker, "milk").level == 5.0


def test_refill_of_a_slot_without_capacity_or_config_is_nothing() -> None:
    tracker = ReorderTracker([PODS])

    assert tracker.refill("coffee-1", "pods", T0) == []
    assert tracker.refill("coffee-1", "beans", T0) == []
    assert tracker.states() == []


def test_usage_without_a_capacity_is_telemetry_only() -> None:
    tracker = ReorderTracker([PODS])

    for _ in range(5):
        assert tracker.update(usage(100), T0) == []
    assert tracker.states() == []  # nothing counted, nothing remembered


def test_usage_fixture_without_a_capacity_is_telemetry_only() -> None:
    config = SlotConfig(
        device_id="coffee-1", slot="InventoryUsageSensor-1", threshold=5, rearm_level=10
    )
    tracker = ReorderTracker([config])
    result = report_of(ALEXA_USAGE)

    assert [tracker.update(result, T0) for _ in range(4)] == [[]] * 4


def test_a_slot_not_configured_has_no_events_and_no_state() -> None:
    tracker = ReorderTracker([PODS])

    for report in (level(0, slot="beans"), level(0, device="coffee-2"), usage(9, "beans")):
        for _ in range(4):
            assert tracker.update(report, T0) == []
    assert tracker.states() == []


# Matter indications and replacement products ---------------------------------------------------

FILTER = SlotConfig(device_id="purifier-1", slot="resource", threshold=10, rearm_level=50)


def matter(document: dict[str, Any]) -> ReorderReport:
    return report_of(document, "lantern/store-1/reorder/purifier-1")


def test_matter_indication_without_condition_is_debounced_like_a_level() -> None:
    tracker = ReorderTracker([FILTER])
    warning, critical, ok = (
        matter({"changeIndication": name}) for name in ("Warning", "Critical", "OK")
    )

    assert [tracker.update(item, T0) for item in (warning, ok, warning, critical)] == [[]] * 4
    (requested,) = tracker.update(warning, T0)
    assert isinstance(requested, ReorderRequested)
    assert (requested.level, requested.unit) == (None, None)
    assert state(tracker, "resource").level is None
    (cleared,) = tracker.update(ok, T0)
    assert isinstance(cleared, ReorderCleared)


def test_matter_product_list_alone_names_the_product_of_a_later_request() -> None:
    tracker = ReorderTracker([FILTER])
    products = [{"productIdentifierType": "GTIN14", "productIdentifierValue": COFFEE_PODS_GTIN}]
    assert tracker.update(matter({"replacementProductList": products}), T0) == []

    (requested,) = [
        event for _ in range(3) for event in tracker.update(matter({"condition": 5}), T0)
    ]
    assert isinstance(requested, ReorderRequested)
    assert requested.gtin == COFFEE_PODS_GTIN


def test_matter_indication_keeps_the_last_known_level() -> None:
    tracker = ReorderTracker([FILTER])
    tracker.update(matter({"condition": 30}), T0)

    tracker.update(matter({"changeIndication": "Warning"}), T0)

    assert (state(tracker, "resource").level, state(tracker, "resource").low_reports) == (30.0, 1)


def test_matter_condition_wins_over_its_indication() -> None:
    tracker = ReorderTracker([FILTER])
    report = matter({"condition": 90, "changeIndication": "Critical"})

    assert [tracker.update(report, T0) for _ in range(4)] == [[]] * 4


def test_matter_degrading_up_is_low_when_its_condition_is_high() -> None:
    tracker = ReorderTracker([FILTER])
    report = matter({"condition": 95, "degradationDirection": "Up"})  # 5 percent left

    (event,) = [event for _ in range(3) for event in tracker.update(report, T0)]
    assert (event.level, event.unit) == (5.0, "percent")


def test_event_gtin_is_the_devices_replacement_product_when_not_configured() -> None:
    tracker = ReorderTracker([FILTER])
    with_products = matter({**MATTER, "condition": 5})
    without = matter({"condition": 5})

    tracker.update(with_products, T0)
    assert state(tracker, "resource").gtin == EAN_13_AS_GTIN_14  # the first GTIN named
    tracker.update(without, T0)
    (event,) = tracker.update(without, T0)  # remembered from the first report

    assert event.gtin == EAN_13_AS_GTIN_14


def test_event_gtin_from_config_wins_over_the_devices() -> None:
    config = FILTER.model_copy(update={"gtin": UPC_A_AS_GTIN_14})
    tracker = ReorderTracker([config])
    report = matter({**MATTER, "condition": 5})

    (event,) = [event for _ in range(3) for event in tracker.update(report, T0)]

    assert event.gtin == UPC_A_AS_GTIN_14
    assert state(tracker, "resource").gtin == EAN_13_AS_GTIN_14


def test_event_without_any_gtin() -> None:
    tracker = ReorderTracker([FILTER])

    (event,) = [event for _ in range(3) for event in tracker.update(matter({"condition": 1}), T0)]

    assert event.gtin is None
    assert "gtin" not in event.event_data()


def test_alexa_fixture_through_the_tracker() -> None:
    config = SlotConfig(
        device_id="coffee-1", slot="InventoryLevelSensor-1", threshold=3, rearm_level=8
    )
    tracker = ReorderTracker([config])
    result = report_of(ALEXA_LEVEL)

    events = [tracker.update(result, T0) for _ in range(3)]

    assert [len(item) for item in events] == [0, 0, 1]
    assert (events[2][0].level, events[2][0].unit) == (2.5, "liter")


# persistence -----------------------------------------------------------------------------------


def test_round_trip_mid_streak() -> None:
    tracker = ReorderTracker([PODS])
    feed(tracker, 5, 5)

    restored = ReorderTracker.from_dict([PODS], tracker.to_dict())

    assert restored.states() == tracker.states()
    (event,) = restored.update(level(5), T0)
    assert isinstance(event, ReorderRequested)


def test_json_round_trip_mid_streak() -> None:
    tracker = ReorderTracker([PODS, MILK])
    feed(tracker, 5, 5)
    tracker.update(usage(1, "milk"), T0)

    data = json.loads(json.dumps(tracker.to_dict()))
    restored = ReorderTracker.from_dict([PODS, MILK], data)

    assert restored.states() == tracker.states()
    assert state(restored).updated_at == T0 + timedelta(minutes=1)
    assert restored.to_dict() == data
    (event,) = restored.update(level(5), T0)
    assert isinstance(event, ReorderRequested)


def test_round_trip_keeps_an_outstanding_request() -> None:
    tracker = ReorderTracker([PODS])
    feed(tracker, 5, 5, 5)

    restored = ReorderTracker.from_dict([PODS], json.loads(json.dumps(tracker.to_dict())))

    assert feed(restored, 5) == [[]]  # not requested a second time after a restart
    (event,) = restored.update(level(50), T0)
    assert isinstance(event, ReorderCleared)


def test_to_dict_shape() -> None:
    tracker = ReorderTracker([PODS])
    feed(tracker, 5)

    assert tracker.to_dict() == {
        "slots": [
            {
                "device_id": "coffee-1",
                "slot": "pods",
                "level": 5.0,
                "low_reports": 1,
                "requested": False,
                "gtin": None,
                "updated_at": "2026-11-23T08:00:00Z",
            }
        ]
    }


def test_from_dict_drops_slots_no_longer_configured() -> None:
    tracker = ReorderTracker([PODS, MILK])
    feed(tracker, 5)
    tracker.update(usage(1, "milk"), T0)

    restored = ReorderTracker.from_dict([MILK], tracker.to_dict())

    assert [item.slot for item in restored.states()] == ["milk"]


def test_from_empty_dict() -> None:
    assert ReorderTracker.from_dict([PODS], {}).states() == []


@pytest.mark.parametrize(
    "data",
    [
        {"slots": {}},
        {"slots": [1]},
        {"slots": [{"device_id": "coffee-1"}]},
        {"slots": [{"device_id": "coffee-1", "slot": "pods", "low_reports": -1}]},
        {"slots": [{"device_id": "coffee-1", "slot": "pods", "unknown": 1}]},
        {"slots": [{"device_id": "coffee-1", "slot": "pods", "updated_at": "yesterday"}]},
    ],
)
def test_from_dict_refuses_a_corrupt_state(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ReorderTracker.from_dict([PODS], data)


# configuration -----------------------------------------------------------------------------------


def test_slot_config_refuses_a_rearm_level_below_the_threshold() -> None:
    with pytest.raises(ValidationError, match="rearm_level must not be below threshold"):
        SlotConfig(device_id="coffee-1", slot="pods", threshold=10, rearm_level=5)


def test_slot_config_refuses_a_capacity_a_refill_would_not_clear() -> None:
    with pytest.raises(ValidationError, match="capacity must be above rearm_level"):
        SlotConfig(device_id="coffee-1", slot="milk", threshold=1, rearm_level=5, capacity=5)


@pytest.mark.parametrize(
    "changes",
    [
        {"threshold": -1, "rearm_level": 0},
        {"capacity": 0},
        {"rearm_level": float("nan")},  # every comparison with NaN is false: it never clears
        {"threshold": float("inf")},
        {"debounce_reports": 0},
        {"gtin": "4006381333932"},  # wrong check digit
        {"gtin": "pods"},
        {"colour": "red"},
    ],
)
def test_slot_config_refuses_bad_values(changes: dict[str, Any]) -> None:
    values = {"device_id": "coffee-1", "slot": "pods", "threshold": 10, "rearm_level": 40}
    with pytest.raises(ValidationError):
        SlotConfig(**(values | changes))


def test_slot_config_gtin_as_gtin_14() -> None:
    config = SlotConfig(device_id="coffee-1", slot="pods", threshold=1, rearm_level=2, gtin=EAN_13)

    assert config.gtin == EAN_13_AS_GTIN_14


# --- fuzz ----------------------------------------------------------------------------------------


# Near-valid reports (tests/devices/fuzzing.py), arbitrary JSON and arbitrary bytes.
_ODD_VALUES: list[Any] = [
    None, True, 0, -1, 2.5, 101, 10**400, "", "x", "NaN", [], {}, [{}], ["a"]
]  # fmt: skip


_table = partial(key_value_table, odd_values=_ODD_VALUES)
_object = partial(near, odd_values=_ODD_VALUES)

_TIMES = ["2018-02-03T16:20:50.52Z", "2020-09-23T18:20:50+02:00", "2020-09-23T16:20:50"]
_MEASURES = _object(
    {"@type": "Volume", "value": 2.5, "unit": "LITER"},
    {
        "@type": ["Count", "Percentage", "Volume", "Weight", "Temperature"],
        "value": [0, 1, 2.5, 100, 1e308, -2.5],
        "unit": ["LITER", "GRAM", ""],
    },
)
_ALEXA_FIELDS = {
    "namespace": [*FIXTURES, "Alexa.EndpointHealth"],
    "name": ["level", "InventoryConsumed", "connectivity"],
    "instance": ["InventoryLevelSensor-1", "pods", ""],
    "timeOfSample": _TIMES,
}
_ALEXA = st.builds(
    lambda base, measure, pairs: with_changes({**base, "value": measure, "usage": measure}, pairs),
    st.sampled_from([ALEXA_LEVEL, ALEXA_USAGE]),
    _MEASURES,
    st.lists(st.sampled_from(_table(_ALEXA_FIELDS)), max_size=2),
)


def _envelope(
    changed: list[dict[str, Any]],
    context: list[dict[str, Any]],
    header: dict[str, Any],
    payload: dict[str, Any],
) -> dict[str, Any]:
    return {
        "event": {
            "header": header,
            "endpoint": ENDPOINT,
            "payload": {"change": {"properties": changed}, **payload},
        },
        "context": {"properties": context},
    }


_ENVELOPES = st.builds(
    _envelope,
    st.lists(_ALEXA, max_size=2),
    st.lists(_ALEXA, max_size=2),
    _object(INVENTORY_CONSUMED["event"]["header"], _ALEXA_FIELDS),
    _object(
        INVENTORY_CONSUMED["event"]["payload"],
        {"usage": [{"@type": "Count", "value": 3}], "timeOfSample": _TIMES, "change": [{}]},
    ),
)
_PRODUCTS = st.lists(
    _object(
        {"productIdentifierType": "EAN", "productIdentifierValue": EAN_13},
        {
            "productIdentifierType": ["UPC", "GTIN8", "GTIN-14", 2, 4, "OEM", "ISBN", 5],
            "productIdentifierValue": [UPC_A, "96385074", COFFEE_PODS_GTIN, "X-1", "4006381333932"],
        },
    ),
    max_size=3,
)
_MATTER = st.builds(
    lambda products, pairs: with_changes({**MATTER, "replacementProductList": products}, pairs),
    _PRODUCTS,
    st.lists(
        st.sampled_from(
            _table(
                {
                    "condition": [0, 20, 99.5, 100, 100.5],
                    "degradationDirection": ["Up", "down", 0, 1, 2],
                    "changeIndication": ["OK", "critical", 0, 2, 3],
                    "slot": ["hepa", ""],
                    "cluster": ["ActivatedCarbonFilterMonitoring", 113],
                    "time": _TIMES,
                }
            )
        ),
        max_size=3,
    ),
)
_PLAIN_FIELDS: dict[str, list[Any]] = {
    "slot": ["pods", "milk", ""],
    "level": [0, 5, 100, 150, -1],
    "usage": [0.5, 3, -1],
    "unit": ["count", "Percent", "%", "LITER"],
    "time": _TIMES,
    "capacity": [40, 0.5, -1],
    "gtin": ["07612100055557", "7612100055557", "123", "x"],
}
_PLAIN = st.one_of(
    _object({"slot": "pods", "level": 5, "unit": "count"}, _PLAIN_FIELDS, changes=3),
    _object({"slot": "milk", "usage": 0.5, "unit": "LITER"}, _PLAIN_FIELDS, changes=3),
)
_PAYLOADS = st.one_of(
    *(
        shape.map(lambda document: json.dumps(document).encode())
        for shape in (_ALEXA, _ENVELOPES, _MATTER, _PLAIN)
    ),
    ANY_JSON.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(
        st.sampled_from(
            ["event", "namespace", "condition", "changeIndication", "level", "usage", "slot"]
        ),
        ANY_JSON,
        max_size=3,
    ).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=40),
)
_FUZZ_CONFIGS = [
    SlotConfig(device_id="coffee-1", slot=slot, threshold=10, rearm_level=40, capacity=100)
    for slot in (
        "pods",
        "milk",
        "hepa",
        "resource",
        "InventoryLevelSensor-1",
        "InventoryUsageSensor-1",
    )
]


@given(payload=_PAYLOADS)
def test_fuzz_only_decode_errors_escape(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        result = reports(payload)
        # What decodes is within range, and the debounce takes it (three times: a request).
        tracker = ReorderTracker(_FUZZ_CONFIGS)
        for report in result:
            assert report.level is None or report.level >= 0
            assert report.unit != "percent" or report.level is None or report.level <= 100
            json.dumps(report.event_data())
            for _ in range(3):
                tracker.update(report, RECEIVED_AT)
        ReorderTracker.from_dict(_FUZZ_CONFIGS, json.loads(json.dumps(tracker.to_dict())))


# The debounce against its rule, for any sequence of levels, refills and restarts: requested on
# the third consecutive report at or below the threshold while none is outstanding, cleared on
# the first above the re-arm level while one is, nothing else.
_LEVELS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0]  # MILK: threshold 1, re-arm 2, capacity 5
_STEPS = st.lists(st.sampled_from([*_LEVELS * 3, "refill", "restart"]), max_size=30)


@settings(max_examples=max(100, settings.default.max_examples // 10))
@given(steps=_STEPS)
def test_fuzz_the_debounce_follows_its_rule(steps: list[float | str]) -> None:
    tracker = ReorderTracker([MILK])
    low_streak, outstanding = 0, False
    for step in steps:
        if step == "restart":
            tracker = ReorderTracker.from_dict([MILK], json.loads(json.dumps(tracker.to_dict())))
            continue
        if step == "refill":
            value = MILK.capacity or 0.0
            events = tracker.refill("coffee-1", "milk", T0)
        else:
            assert isinstance(step, float)
            value = step
            events = tracker.update(level(value, "milk"), T0)
        low_streak = low_streak + 1 if value <= MILK.threshold else 0
        expected: list[type] = []
        if outstanding and value > MILK.rearm_level:
            expected, outstanding, low_streak = [ReorderCleared], False, 0
        elif not outstanding and low_streak == MILK.debounce_reports:
            expected, outstanding = [ReorderRequested], True
        assert [type(event) for event in events] == expected
        assert state(tracker, "milk").requested is outstanding
