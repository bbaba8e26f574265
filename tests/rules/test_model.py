"""Rule files: what a good set gives, and each kind of problem named by file and field."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from lantern.errors import TemplateError
from rules.limits import Rate
from rules.model import (
    RuleProblem,
    RuleSet,
    RulesInvalid,
    parse_duration,
    parse_rate,
    parse_rules,
)

COFFEE = """\
id: coffee-pods-offer
description: A loyalty member lingering at the coffee aisle sees a pods offer on the aisle screen
enabled: true
when: {event: zone.dwelled, zone: coffee-aisle, dwell_at_least: 45s}
if: 'visitor.segment == "loyalty" && now.hour < 11'
then:
  - publish: {topic: "store/{{ store.id }}/signage/coffee-aisle", payload: {offer: pods-10, visitor: "{{ visitor.id }}"}}
  - emit: {type: lantern.offer.triggered, data: {offer: pods-10}}
limits: {per_visitor: 1/day, global: 200/hour}
"""  # noqa: E501 - the marketer's file as written
SCAN = """\
id: pods-scan
when: {event: lantern.scan.read, gtin: "4006381333931", device: till-1}
then:
  - publish: {topic: store/s1/till-1/coupon, payload: "10% off pods", qos: 0, retain: true}
limits: {per_zone: 5/15m, cooldown: 1h30m}
active: {hours: ["07:00-11:00", "22:00-02:00"], days: [mon, fri]}
"""
MINIMAL: dict[str, Any] = {
    "id": "minimal",
    "when": {"event": "zone.entered"},
    "then": [{"emit": {"type": "lantern.x.y", "data": {}}}],
}


def problems(files: dict[str, str]) -> list[str]:
    with pytest.raises(RulesInvalid) as caught:
        parse_rules(files)
    return [str(problem) for problem in caught.value.problems]


def minimal(**changes: Any) -> str:
    """MINIMAL with top-level keys replaced (None removes one), as YAML."""
    rule = {**MINIMAL, **changes}
    return yaml.safe_dump({key: value for key, value in rule.items() if value is not None})


def test_a_good_set_parses_with_every_value_normalised() -> None:
    rules = parse_rules({"coffee.yaml": COFFEE, "scan.yml": SCAN})
    assert rules.ids() == ("coffee-pods-offer", "pods-scan")
    assert len(rules) == 2
    coffee = rules["coffee-pods-offer"]
    assert coffee.enabled is True
    assert coffee.when.event == "lantern.zone.dwelled"
    assert coffee.when.zone == "coffee-aisle"
    assert coffee.when.dwell_at_least == 45.0
    assert coffee.condition is not None
    assert coffee.condition.source == 'visitor.segment == "loyalty" && now.hour < 11'
    publish, emit = coffee.then
    assert publish.publish is not None and publish.emit is None
    assert publish.publish.topic.source == "store/{{ store.id }}/signage/coffee-aisle"
    assert (publish.publish.qos, publish.publish.retain) == (1, False)
    assert emit.emit is not None and emit.emit.type == "lantern.offer.triggered"
    assert coffee.limits.rates() == {
        "per_visitor": Rate(1, 86_400.0, "1/day"),
        "global": Rate(200, 3_600.0, "200/hour"),
    }
    scan = rules["pods-scan"]
    assert scan.when.event == "lantern.scan.read"
    assert scan.when.gtin == "04006381333931"
    assert scan.when.device == "till-1"
    assert scan.condition is None
    (coupon,) = scan.then
    assert coupon.publish is not None
    assert (coupon.publish.qos, coupon.publish.retain) == (0, True)
    assert coupon.publish.payload.render({}) == "10% off pods"
    assert scan.limits.rates() == {
        "per_zone": Rate(5, 900.0, "5/15m"),
        "cooldown": Rate(1, 5_400.0, "1h30m"),
    }
    assert scan.active is not None
    assert [hours.text for hours in scan.active.hours] == ["07:00-11:00", "22:00-02:00"]
    assert scan.active.days == frozenset({0, 4})


def test_the_set_indexes_rules_by_event_type_and_gives_the_dwell_thresholds() -> None:
    rules = parse_rules(
        {
            "coffee.yaml": COFFEE,
            "scan.yaml": SCAN,
            "long.yaml": minimal(
                id="long-dwell", when={"event": "zone.dwelled", "dwell_at_least": "2m"}
            ),
            "enter.yaml": minimal(),
        }
    )
    assert rules.event_types() == {
        "lantern.zone.dwelled",
        "lantern.scan.read",
        "lantern.zone.entered",
    }
    assert rules.dwell_thresholds_s() == {45.0, 120.0}
    dwelled = rules.candidates("lantern.zone.dwelled", "coffee-aisle", None, None)
    assert [rule.id for rule in dwelled] == ["coffee-pods-offer", "long-dwell"]
    elsewhere = rules.candidates("lantern.zone.dwelled", "bakery", None, None)
    assert [rule.id for rule in elsewhere] == ["long-dwell"]
    assert rules.candidates("lantern.scan.read", None, "04006381333931", "till-1")[0].id == (
        "pods-scan"
    )
    assert rules.candidates("lantern.scan.read", None, "00000000000000", "till-1") == ()
    assert rules.candidates("lantern.zone.exited", "coffee-aisle", None, None) == ()


def test_an_empty_set_is_valid() -> None:
    rules = parse_rules({})
    assert len(rules) == 0
    assert rules.event_types() == frozenset()
    assert rules.dwell_thresholds_s() == frozenset()


@pytest.mark.parametrize(
    ("event", "full"),
    [
        ("zone.dwelled", "lantern.zone.dwelled"),
        ("lantern.zone.dwelled", "lantern.zone.dwelled"),
        ("scan.read", "lantern.scan.read"),
        ("reorder.requested", "lantern.reorder.requested"),
    ],
)
def test_a_short_event_type_gets_the_lantern_prefix(event: str, full: str) -> None:
    rules = parse_rules({"r.yaml": minimal(when={"event": event})})
    assert rules["minimal"].when.event == full


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("4006381333931", "04006381333931"),  # EAN-13
        ("036000291452", "00036000291452"),  # UPC-A
        ("96385074", "00000096385074"),  # EAN-8
        ("05901234123457", "05901234123457"),  # GTIN-14
        (4006381333931, "04006381333931"),  # unquoted: YAML gives a number
        (36000291452, "00036000291452"),  # a UPC-A whose leading zero YAML dropped
    ],
)
def test_a_gtin_is_kept_as_14_digits(written: object, normalised: str) -> None:
    rules = parse_rules({"r.yaml": minimal(when={"event": "scan.read", "gtin": written})})
    assert rules["minimal"].when.gtin == normalised


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("45s", 45.0),
        ("2m", 120.0),
        ("1h30m", 5_400.0),
        ("1d", 86_400.0),
        ("1h", 3_600.0),
        ("2.5s", 2.5),
        ("90", 90.0),
        (90, 90.0),
        (1.5, 1.5),
    ],
)
def test_durations(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["soon", "", "1x", "m", "٤٥", 0, -5, "0s", True, None, [45]])
def test_bad_durations(written: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(written)


@pytest.mark.parametrize(
    ("written", "rate"),
    [
        ("1/day", Rate(1, 86_400.0, "1/day")),
        ("200/hour", Rate(200, 3_600.0, "200/hour")),
        ("3/minute", Rate(3, 60.0, "3/minute")),
        ("10/second", Rate(10, 1.0, "10/second")),
        ("5/15m", Rate(5, 900.0, "5/15m")),
        (" 2 / 1h30m ", Rate(2, 5_400.0, "2 / 1h30m")),
    ],
)
def test_rates(written: str, rate: Rate) -> None:
    assert parse_rate(written) == rate


@pytest.mark.parametrize("written", ["day", "1/fortnight", "0/day", "1/", "-1/day", 5, None])
def test_bad_rates(written: object) -> None:
    with pytest.raises(ValueError):
        parse_rate(written)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"id": "Coffee Offer"},
            "r.yaml: id: 'Coffee Offer' is not a rule id: lower-case letters, "
            "digits, '.', '_' and '-', starting with a letter or digit",
        ),
        ({"id": None}, "r.yaml: id: is required"),
        ({"bogus": 1}, "r.yaml: bogus: unknown key"),
        (
            {"enabled": "perhaps"},
            "r.yaml: enabled: Input should be a valid boolean, unable to interpret input",
        ),
        (
            {"when": {"event": "Zone Entered"}},
            "r.yaml: when.event: 'Zone Entered' is not an event type: dotted lower-case "
            "words, e.g. zone.dwelled",
        ),
        (
            {"when": {"event": "zone.entered", "dwell_at_least": "45s"}},
            "r.yaml: when.dwell_at_least: applies only to event zone.dwelled, not "
            "lantern.zone.entered",
        ),
        (
            {"when": {"event": "zone.dwelled", "dwell_at_least": "soon"}},
            "r.yaml: when.dwell_at_least: 'soon' is not a duration: write 45s, 2m, 1h30m, 1d or a "
            "number of seconds",
        ),
        (
            {"when": {"event": "scan.read", "gtin": "4006381333932"}},
            "r.yaml: when.gtin: check digit: expected 1, got 2",
        ),
        (
            {"when": {"event": "scan.read", "gtin": "12345"}},
            "r.yaml: when.gtin: not a GTIN (8, 12, 13 or 14 digits): '12345'",
        ),
        (
            {"when": {"event": "zone.entered", "zone": ""}},
            "r.yaml: when.zone: String should have at least 1 character",
        ),
        ({"when": {"event": "zone.entered", "room": "x"}}, "r.yaml: when.room: unknown key"),
        ({"if": 3}, "r.yaml: if: 3 is not a CEL expression; quote it: 'now.hour < 11'"),
        ({"if": "  "}, "r.yaml: if: is empty; leave `if` out for a rule without a condition"),
        ({"then": []}, "r.yaml: then: a rule needs at least one action"),
        ({"then": [{}]}, "r.yaml: then[0]: an action is exactly one of publish or emit"),
        (
            {"then": [{"publish": {"topic": "a", "payload": 1}, "emit": {"type": "a.b"}}]},
            "r.yaml: then[0]: an action is exactly one of publish or emit",
        ),
        (
            {"then": [{"emit": {"type": "a.b"}}, {"publish": {"topic": "a/b"}}]},
            "r.yaml: then[1].publish.payload: is required",
        ),
        (
            {"then": [{"publish": {"topic": "store/+/screen", "payload": 1}}]},
            "r.yaml: then[0].publish.topic: 'store/+/screen': + and # are subscription wildcards, "
            "not allowed in a published topic",
        ),
        (
            {"then": [{"publish": {"topic": "a/{{ store.id", "payload": 1}}]},
            "r.yaml: then[0].publish.topic: line 1: unexpected end of template, expected 'end of "
            "print statement'.",
        ),
        (
            {"then": [{"publish": {"topic": "a", "payload": {"items": [1, "{{ x | nope }}"]}}}]},
            "r.yaml: then[0].publish.payload.items[1]: line 1: No filter named 'nope'.",
        ),
        (
            {"then": [{"publish": {"topic": "a", "payload": 1, "qos": 2}}]},
            "r.yaml: then[0].publish.qos: Input should be 0 or 1",
        ),
        (
            {"then": [{"emit": {"type": "offer", "data": {}}}]},
            "r.yaml: then[0].emit.type: 'offer' is not a CloudEvent type: dotted lower-case words, "
            "e.g. lantern.offer.triggered",
        ),
        (
            {"then": [{"emit": {"type": "a.b", "data": ["x"]}}]},
            "r.yaml: then[0].emit.data: ['x'] is not a mapping of fields",
        ),
        (
            {"limits": {"per_visitor": "once"}},
            "r.yaml: limits.per_visitor: 'once' is not a rate: write N/period, e.g. 1/day or 5/15m",
        ),
        (
            {"limits": {"global": "5/fortnight"}},
            "r.yaml: limits.global: '5/fortnight': the "
            "period must be second, minute, hour, day or a duration like 15m",
        ),
        (
            {"limits": {"cooldown": "-1m"}},
            "r.yaml: limits.cooldown: '-1m' is not a duration: "
            "write 45s, 2m, 1h30m, 1d or a number of seconds",
        ),
        (
            {"active": {"hours": "7-11"}},
            "r.yaml: active.hours: '7-11' is not an hour range like \"07:00-11:00\"",
        ),
        (
            {"active": {"hours": "07:00-25:00"}},
            "r.yaml: active.hours: '07:00-25:00': hours run 00:00 to 24:00",
        ),
        (
            {"active": {"hours": "07:00-07:00"}},
            "r.yaml: active.hours: '07:00-07:00' is no time "
            "or all of it; leave hours out for the whole day",
        ),
        (
            {"active": {"days": ["mon", "funday"]}},
            "r.yaml: active.days: unknown days ['funday']: write mon, tue, wed, thu, fri, sat, sun",
        ),
    ],
)
def test_each_problem_names_the_file_and_the_field(changes: dict[str, Any], expected: str) -> None:
    assert problems({"r.yaml": minimal(**changes)}) == [expected]


def test_a_payload_that_is_not_json_is_named_by_its_path() -> None:
    text = (
        "id: dated\nwhen: {event: zone.entered}\n"
        "then: [{emit: {type: a.b, data: {offer: {until: 2026-12-01}}}}]\n"
    )
    assert problems({"r.yaml": text}) == [
        "r.yaml: then[0].emit.data.offer.until: 2026-12-01 is a date, not JSON; "
        "quote it to keep it as text"
    ]


def test_a_cel_syntax_error_gives_its_line_and_column() -> None:
    assert problems({"r.yaml": minimal(**{"if": 'visitor.segment == "loyalty" &&'})}) == [
        "r.yaml: if: line 1, column 32: Syntax error: mismatched input '<EOF>' expecting "
        "{'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, "
        "STRING, BYTES, IDENTIFIER}"
    ]
    (problem,) = problems({"r.yaml": minimal(**{"if": "now.hour < 11 &&\n  now.minute >> 3"})})
    assert problem.startswith("r.yaml: if: line 2, column 15: Syntax error: ")


def test_a_jinja_syntax_error_gives_its_line() -> None:
    topic = "store/{{ store.id }}/\n{% if %}"
    rule = minimal(then=[{"publish": {"topic": topic, "payload": None}}])
    assert problems({"r.yaml": rule}) == [
        "r.yaml: then[0].publish.topic: line 2: Expected an expression, got 'end of statement "
        "block'"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "id: x\n  when: y\n",
            "r.yaml: (yaml): line 2, column 7: mapping values are not allowed in this context",
        ),
        (
            "id: x\nwhen: {event: zone.entered\n",
            "r.yaml: (yaml): line 3, column 1: did not find expected ',' or '}'",
        ),
        ("id: x\nid: y\n", "r.yaml: (yaml): line 2, column 1: key 'id' is given twice"),
        ("- id: x\n", "r.yaml: (yaml): a rule is a mapping (id, when, then...), not a list"),
        ("", "r.yaml: (yaml): a rule is a mapping (id, when, then...), not an empty file"),
    ],
)
def test_yaml_problems_give_their_line(text: str, expected: str) -> None:
    assert problems({"r.yaml": text}) == [expected]


def test_a_duplicate_id_names_both_files() -> None:
    assert problems({"a.yaml": minimal(), "b.yaml": minimal(), "c.yaml": minimal()}) == [
        "b.yaml: id: 'minimal' is also the id in a.yaml",
        "c.yaml: id: 'minimal' is also the id in a.yaml",
    ]


def test_every_problem_of_every_file_is_reported_and_nothing_is_loaded() -> None:
    with pytest.raises(RulesInvalid) as caught:
        parse_rules(
            {
                "good.yaml": minimal(),
                "two.yaml": minimal(id="two", limits={"per_visitor": "x", "per_zone": "y"}),
                "bad.yaml": "id: [\n",
            }
        )
    assert isinstance(caught.value, ValueError)
    assert caught.value.problems == [
        RuleProblem(
            "bad.yaml",
            "(yaml)",
            "line 2, column 1: did not find expected node content",
        ),
        RuleProblem(
            "two.yaml",
            "limits.per_visitor",
            "'x' is not a rate: write N/period, e.g. 1/day or 5/15m",
        ),
        RuleProblem(
            "two.yaml", "limits.per_zone", "'y' is not a rate: write N/period, e.g. 1/day or 5/15m"
        ),
    ]
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]


def test_active_hours_wrap_midnight_and_belong_to_the_day_they_start() -> None:
    rule = parse_rules({"r.yaml": SCAN})["pods-scan"]
    assert rule.active is not None

    def reason(text: str) -> str | None:
        assert rule.active is not None
        return rule.active.inactive_reason(datetime.fromisoformat(text))

    assert reason("2026-11-23T07:00") is None  # Monday, morning range
    assert reason("2026-11-23T10:59") is None
    assert reason("2026-11-23T11:00") == (
        "11:00 mon is outside 07:00-11:00, 22:00-02:00 on mon, fri"
    )
    assert reason("2026-11-27T23:30") is None  # Friday night
    assert reason("2026-11-28T01:59") is None  # Saturday's small hours: Friday's range
    assert reason("2026-11-28T02:00") == (
        "02:00 sat is outside 07:00-11:00, 22:00-02:00 on mon, fri"
    )
    assert reason("2026-11-28T23:00") == (
        "23:00 sat is outside 07:00-11:00, 22:00-02:00 on mon, fri"
    )
    assert reason("2026-11-24T01:00") is None  # Tuesday's small hours: Monday's range


def test_days_alone_restrict_the_day() -> None:
    rules = parse_rules({"r.yaml": minimal(active={"days": ["sat", "sun"]})})
    active = rules["minimal"].active
    assert active is not None
    assert active.inactive_reason(datetime(2026, 11, 28, 9)) is None
    assert active.inactive_reason(datetime(2026, 11, 27, 9)) == (
        "fri is not one of the days sat, sun"
    )


def test_a_ruleset_refuses_duplicate_ids() -> None:
    rule = parse_rules({"r.yaml": minimal()})["minimal"]
    with pytest.raises(ValueError, match="duplicate rule id 'minimal'"):
        RuleSet([rule, rule])


def test_templates_render_json_with_strings_templated_and_null_as_empty() -> None:
    rule = parse_rules(
        {
            "r.yaml": minimal(
                then=[
                    {
                        "emit": {
                            "type": "a.b",
                            "data": {
                                "who": "{{ visitor.id }}",
                                "list": ["{{ n * 2 }}", 3, True, None, "plain {text}"],
                                "none": "[{{ nothing }}]",
                                "null": "{{ nothing }}",
                                "text": "{{ n }} pods",
                                "when": " {{ at }} ",
                                "round": "{{ dwell_s | round(1) }}",
                                "ratio": "{{ ratio }}",
                            },
                        }
                    }
                ]
            )
        }
    )["minimal"]
    (action,) = rule.then
    assert action.emit is not None
    at = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
    context = {
        "visitor": {"id": "v1"},
        "n": 21,
        "nothing": None,
        "at": at,
        "dwell_s": 45.06,
        "ratio": 0.5,
    }
    # A lone expression keeps its JSON type; a template with text around it is text.
    assert action.emit.data.render(context) == {
        "who": "v1",
        "list": [42, 3, True, None, "plain {text}"],
        "none": "[]",
        "null": None,
        "text": "21 pods",
        "when": "2026-11-24T08:30:00+00:00",
        "round": 45.1,
        "ratio": 0.5,
    }
    with pytest.raises(TemplateError) as caught:
        action.emit.data.render({**context, "ratio": math.nan})
    assert (caught.value.path, caught.value.message) == (
        ".ratio",
        "nan is not a JSON number (in '{{ ratio }}')",
    )
    with pytest.raises(TemplateError) as caught:
        action.emit.data.render({**context, "visitor": {}})
    assert (caught.value.path, caught.value.message) == (
        ".who",
        "'dict object' has no attribute 'id' (in '{{ visitor.id }}')",
    )
