"""The rules engine on plain values and a fake clock: what fires, and why the rest did not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from rules.engine import OUTCOMES, Action, RuleEngine, StoreContext, Trace, Trigger
from rules.model import RuleSet, parse_rules

STORE = StoreContext(id="s1", name="Store One", timezone="Europe/Amsterdam")
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)  # Tuesday 09:00 in Amsterdam (UTC+1)
DWELLED = "lantern.zone.dwelled"
OFFER: dict[str, Any] = {
    "id": "offer",
    "when": {"event": "zone.dwelled", "zone": "coffee-aisle", "dwell_at_least": "45s"},
    "if": 'visitor.segment == "loyalty"',
    "then": [
        {
            "publish": {
                "topic": "store/{{ store.id }}/signage/{{ zone.id }}",
                "payload": {"offer": "pods-10", "visitor": "{{ visitor.id }}"},
            }
        },
        {"emit": {"type": "lantern.offer.triggered", "data": {"offer": "pods-10"}}},
    ],
}


def rule(**changes: Any) -> dict[str, Any]:
    """OFFER with top-level keys replaced (None removes one)."""
    merged = {**OFFER, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def rules(*specs: dict[str, Any]) -> RuleSet:
    return parse_rules({f"{spec['id']}.yaml": yaml.safe_dump(spec) for spec in specs})


def engine(*specs: dict[str, Any], trace_capacity: int = 10_000) -> RuleEngine:
    return RuleEngine(rules(*specs), STORE, trace_capacity)


def dwelled(
    visitor: str = "v1",
    segment: str | None = "loyalty",
    at: datetime = T0,
    threshold_s: float = 45.0,
    zone: str = "coffee-aisle",
    event_id: str = "e1",
) -> Trigger:
    return Trigger(
        type=DWELLED,
        time=at,
        id=event_id,
        subject=visitor,
        device="scanner-7",
        data={
            "visitor": visitor,
            "zone": zone,
            "segment": segment,
            "dwell_s": threshold_s + 0.5,
            "threshold_s": threshold_s,
        },
        visitor={"id": visitor, "segment": segment, "zone": zone, "dwell_s": threshold_s + 0.5},
        zone={"id": zone, "name": "Coffee aisle", "occupancy": 3},
    )


def scan(gtin: str = "04006381333931", device: str = "till-1", at: datetime = T0) -> Trigger:
    return Trigger(
        type="lantern.scan.read",
        time=at,
        id="s-1",
        subject=device,
        device=device,
        data={"code": gtin, "gtin": gtin, "symbology": "EAN-13"},
    )


def outcomes(engine: RuleEngine) -> list[tuple[str, str, str | None]]:
    """(rule, outcome, detail) of every trace, oldest first."""
    return [(t.rule, t.outcome, t.detail) for t in reversed(engine.traces(limit=10_000))]


def fired(actions: list[Action]) -> list[tuple[str, str | None]]:
    return [(action.rule, action.visitor) for action in actions]


def test_a_matching_rule_fires_with_its_topic_and_payload_rendered() -> None:
    lantern = engine(OFFER)
    assert lantern.evaluate(dwelled()) == [
        Action(
            rule="offer",
            type="publish",
            visitor="v1",
            time=T0,
            topic="store/s1/signage/coffee-aisle",
            payload={"offer": "pods-10", "visitor": "v1"},
            qos=1,
            retain=False,
            ttl_s=300.0,  # the default: 5 minutes
        ),
        Action(
            rule="offer",
            type="emit",
            visitor="v1",
            time=T0,
            event_type="lantern.offer.triggered",
            data={"offer": "pods-10"},
        ),
    ]
    assert lantern.traces() == [
        Trace(
            time=T0,
            rule="offer",
            event_id="e1",
            event_type=DWELLED,
            visitor="v1",
            outcome="fired",
            detail=None,
        )
    ]


def test_a_false_condition_does_not_fire() -> None:
    lantern = engine(OFFER)
    assert lantern.evaluate(dwelled(segment="walk-in")) == []
    assert outcomes(lantern) == [("offer", "condition_false", None)]


def test_a_null_segment_is_simply_not_loyalty() -> None:
    lantern = engine(OFFER)
    assert lantern.evaluate(dwelled(segment=None)) == []
    assert outcomes(lantern) == [("offer", "condition_false", None)]


def test_a_visitorless_trigger_sees_null_visitor_fields() -> None:
    spec = {
        "id": "scan-offer",
        "when": {"event": "scan.read"},
        "if": 'visitor.segment == "loyalty" || visitor.id == null',
        "then": [{"publish": {"topic": "t/{{ device.id }}", "payload": "[{{ visitor.id }}]"}}],
    }
    (action,) = engine(spec).evaluate(scan())
    assert (action.topic, action.payload, action.visitor) == ("t/till-1", "[]", None)


def test_per_visitor_one_a_day_slides_with_time() -> None:
    lantern = engine(rule(limits={"per_visitor": "1/day"}))
    assert fired(lantern.evaluate(dwelled())) == [("offer", "v1"), ("offer", "v1")]
    assert lantern.evaluate(dwelled(at=T0 + timedelta(hours=23, minutes=59))) == []
    assert fired(lantern.evaluate(dwelled(visitor="v2", at=T0 + timedelta(hours=1)))) == [
        ("offer", "v2"),
        ("offer", "v2"),
    ]
    assert len(lantern.evaluate(dwelled(at=T0 + timedelta(days=1)))) == 2
    assert outcomes(lantern) == [
        ("offer", "fired", None),
        ("offer", "limited", "per_visitor 1/day"),
        ("offer", "fired", None),
        ("offer", "fired", None),
    ]


def test_a_global_limit_counts_every_visitor() -> None:
    lantern = engine(rule(limits={"global": "2/hour"}))
    results = [
        lantern.evaluate(dwelled(visitor=f"v{index}", at=T0 + timedelta(minutes=index)))
        for index in range(4)
    ]
    assert [len(actions) for actions in results] == [2, 2, 0, 0]
    assert len(lantern.evaluate(dwelled(visitor="v9", at=T0 + timedelta(minutes=60)))) == 2
    assert lantern.summary()["offer"]["limited"] == 2
    assert lantern.traces(limit=1)[0].outcome == "fired"
    assert lantern.traces(limit=2)[1].detail == "global 2/hour"


def test_a_per_zone_limit_counts_each_zone_apart() -> None:
    spec = rule(
        when={"event": "zone.entered"},
        limits={"per_zone": "1/hour"},
        **{"if": None},
    )
    lantern = engine(spec)

    def entered(visitor: str, zone: str) -> int:
        trigger = Trigger(
            type="lantern.zone.entered",
            time=T0,
            data={"visitor": visitor, "zone": zone},
            visitor={"id": visitor, "segment": None, "zone": zone, "dwell_s": 0.0},
        )
        return len(lantern.evaluate(trigger))

    assert [entered("v1", "bakery"), entered("v2", "bakery"), entered("v3", "dairy")] == [2, 0, 2]
    assert outcomes(lantern)[1] == ("offer", "limited", "per_zone 1/hour")


def test_a_cooldown_spaces_one_visitors_firings() -> None:
    lantern = engine(rule(limits={"cooldown": "10m", "per_visitor": "5/day"}))
    minutes = [0, 5, 9, 10, 15, 20]
    counts = [len(lantern.evaluate(dwelled(at=T0 + timedelta(minutes=m)))) for m in minutes]
    assert counts == [2, 0, 0, 2, 0, 2]
    assert outcomes(lantern)[1] == ("offer", "limited", "cooldown 10m")


def test_active_hours_are_the_stores_hours() -> None:
    lantern = engine(rule(active={"hours": "07:00-09:00"}))
    # 06:30 UTC is 07:30 in Amsterdam: active there, though not in UTC.
    assert len(lantern.evaluate(dwelled(at=datetime(2026, 11, 24, 6, 30, tzinfo=UTC)))) == 2
    assert lantern.evaluate(dwelled(at=T0)) == []  # 09:00 in Amsterdam: the range has ended
    assert outcomes(lantern)[1] == (
        "offer",
        "inactive_hours",
        "09:00 tue is outside 07:00-09:00",
    )


def test_active_hours_may_wrap_midnight_and_days_are_the_stores_days() -> None:
    lantern = engine(rule(active={"hours": "22:00-02:00", "days": ["fri"]}))

    def at(iso: str) -> int:
        return len(lantern.evaluate(dwelled(at=datetime.fromisoformat(iso))))

    assert at("2026-11-27T21:00:00+00:00") == 2  # Friday 22:00 in Amsterdam
    assert at("2026-11-27T21:30:00+00:00") == 2
    assert at("2026-11-28T00:30:00+00:00") == 2  # Saturday 01:30: Friday night's range
    assert at("2026-11-28T01:00:00+00:00") == 0  # Saturday 02:00
    assert at("2026-11-27T20:59:00+00:00") == 0  # Friday 21:59
    assert at("2026-11-26T23:30:00+00:00") == 0  # Friday 00:30: Thursday's night is not on
    assert at("2026-11-28T22:30:00+00:00") == 0  # Saturday 23:30 (UTC Saturday too)
    assert [detail for _, outcome, detail in outcomes(lantern) if outcome != "fired"] == [
        "02:00 sat is outside 22:00-02:00 on fri",
        "21:59 fri is outside 22:00-02:00 on fri",
        "00:30 fri is outside 22:00-02:00 on fri",
        "23:30 sat is outside 22:00-02:00 on fri",
    ]


def test_a_disabled_rule_is_traced_first() -> None:
    lantern = engine(rule(enabled=False, active={"days": ["sun"]}))
    assert lantern.evaluate(dwelled()) == []
    assert outcomes(lantern) == [("offer", "disabled", "enabled: false")]


def test_filters_that_differ_are_not_matched() -> None:
    lantern = engine(
        rule(id="dwell-2m", when={"event": "zone.dwelled", "dwell_at_least": "2m"}),
        rule(id="members", when={"event": "zone.dwelled", "segment": "loyalty"}),
        rule(
            id="by-scanner",
            when={"event": "zone.dwelled", "zone": "coffee-aisle", "device": "scanner-1"},
        ),
    )
    assert lantern.evaluate(dwelled(segment="staff")) == []
    assert outcomes(lantern) == [
        ("by-scanner", "not_matched", "when.device: 'scanner-7', the rule wants 'scanner-1'"),
        ("dwell-2m", "not_matched", "when.dwell_at_least: 45.0, the rule wants 120.0"),
        ("members", "not_matched", "when.segment: 'staff', the rule wants 'loyalty'"),
    ]
    assert fired(lantern.evaluate(dwelled(threshold_s=120.0))) == [
        ("dwell-2m", "v1"),
        ("dwell-2m", "v1"),
        ("members", "v1"),
        ("members", "v1"),
    ]


def test_a_gtin_rule_fires_on_its_product_only() -> None:
    spec = {
        "id": "pods-scan",
        "when": {"event": "scan.read", "gtin": "4006381333931", "device": "till-1"},
        "then": [
            {"emit": {"type": "lantern.coupon.printed", "data": {"gtin": "{{ event.data.gtin }}"}}}
        ],
    }
    lantern = engine(spec)
    (action,) = lantern.evaluate(scan())
    assert action.data == {"gtin": "04006381333931"}
    assert lantern.evaluate(scan(device="till-2")) == []
    assert lantern.evaluate(scan(gtin="05901234123457")) == []  # filed under another GTIN
    assert outcomes(lantern) == [
        ("pods-scan", "fired", None),
        ("pods-scan", "not_matched", "when.device: 'till-2', the rule wants 'till-1'"),
    ]


def test_rules_that_cannot_match_are_not_looked_at() -> None:
    lantern = engine(
        OFFER,
        rule(id="bakery", when={"event": "zone.dwelled", "zone": "bakery"}),
        rule(id="exits", when={"event": "zone.exited"}),
    )
    assert len(lantern.evaluate(dwelled())) == 2
    assert lantern.evaluate(Trigger(type="lantern.device.online", time=T0)) == []
    assert outcomes(lantern) == [("offer", "fired", None)]
    assert lantern.summary()["bakery"] == dict.fromkeys(OUTCOMES, 0)


def test_a_missing_template_variable_is_an_error_and_the_other_rules_still_fire() -> None:
    broken = rule(
        id="broken",
        then=[{"publish": {"topic": "t", "payload": {"who": "{{ visitor.name }}"}}}],
        limits={"per_visitor": "1/day"},
    )
    lantern = engine(broken, OFFER)
    assert fired(lantern.evaluate(dwelled())) == [("offer", "v1"), ("offer", "v1")]
    assert outcomes(lantern) == [
        (
            "broken",
            "error",
            "then[0].publish.payload.who: 'dict object' has no attribute 'name' "
            "(in '{{ visitor.name }}')",
        ),
        ("offer", "fired", None),
    ]
    lantern.evaluate(dwelled())
    lantern.evaluate(dwelled())
    assert lantern.summary()["broken"]["error"] == 3  # never "limited": errors consume nothing
    assert lantern.summary()["broken"]["limited"] == 0


@pytest.mark.parametrize(
    ("condition", "detail"),
    [
        ("event.data.basket > 3", "if: no such key: 'basket'"),
        ("visitor.dwell_s", "if: must give true or false, gave float 45.5"),
        (
            "nobody.segment == 'x'",
            "if: Undefined variable or function: 'nobody'. Check that the "
            "variable is defined in the context or that the function name is spelled correctly.",
        ),
    ],
)
def test_a_failing_condition_is_an_error(condition: str, detail: str) -> None:
    lantern = engine(rule(**{"if": condition}))
    assert lantern.evaluate(dwelled()) == []
    assert outcomes(lantern) == [("offer", "error", detail)]


def test_a_rendered_topic_with_a_wildcard_is_an_error() -> None:
    lantern = engine(rule(then=[{"publish": {"topic": "s/{{ visitor.id }}", "payload": 1}}]))
    assert lantern.evaluate(dwelled(visitor="v/#")) == []
    assert outcomes(lantern) == [
        (
            "offer",
            "error",
            "then[0].publish.topic: 's/v/#': + and # are subscription wildcards, not allowed in "
            "a published topic",
        )
    ]


def test_checks_run_in_order_and_limits_are_consumed_only_on_firing() -> None:
    lantern = engine(
        rule(limits={"per_visitor": "1/day"}, active={"hours": "07:00-12:00"}),
    )
    lantern.evaluate(dwelled(segment="walk-in"))  # condition false: nothing consumed
    assert len(lantern.evaluate(dwelled())) == 2
    lantern.evaluate(dwelled(segment="walk-in"))  # the condition before the limit
    lantern.evaluate(dwelled(threshold_s=120.0))  # a filter before the condition
    lantern.evaluate(dwelled(at=T0 + timedelta(hours=6)))  # hours before the filters
    lantern.evaluate(dwelled())
    assert [outcome for _, outcome, _ in outcomes(lantern)] == [
        "condition_false",
        "fired",
        "condition_false",
        "not_matched",
        "inactive_hours",
        "limited",
    ]


def test_the_context_has_every_documented_field() -> None:
    fields = {
        "event": "{{ event.id }}|{{ event.type }}|{{ event.time }}|{{ event.subject }}|"
        "{{ event.device }}|{{ event.data.threshold_s }}",
        "visitor": "{{ visitor.id }}|{{ visitor.segment }}|{{ visitor.zone }}|"
        "{{ visitor.dwell_s }}",
        "zone": "{{ zone.id }}|{{ zone.name }}|{{ zone.occupancy }}",
        "device": "{{ device.id }}",
        "store": "{{ store.id }}|{{ store.name }}|{{ store.timezone }}",
        "now": "{{ now.hour }}|{{ now.minute }}|{{ now.weekday }}|{{ now.date }}|{{ now.iso }}",
    }
    condition = (
        'event.time == timestamp("2026-11-24T08:00:00Z") && now.weekday == "tue" && '
        'now.hour == 9 && now.date == "2026-11-24" && zone.occupancy == 3 && '
        'store.timezone == "Europe/Amsterdam" && event.data.dwell_s > 45 && '
        'device.id == "scanner-7" && visitor.zone == "coffee-aisle"'
    )
    lantern = engine(
        rule(**{"if": condition}, then=[{"emit": {"type": "a.context", "data": fields}}])
    )
    (action,) = lantern.evaluate(dwelled())
    assert action.data == {
        "event": "e1|lantern.zone.dwelled|2026-11-24 08:00:00+00:00|v1|scanner-7|45.0",
        "visitor": "v1|loyalty|coffee-aisle|45.5",
        "zone": "coffee-aisle|Coffee aisle|3",
        "device": "scanner-7",
        "store": "s1|Store One|Europe/Amsterdam",
        "now": "9|0|tue|2026-11-24|2026-11-24T09:00:00+01:00",
    }


def test_a_zone_without_the_gateways_view_has_its_id_from_the_data() -> None:
    spec = rule(
        when={"event": "zone.exited"},
        then=[{"emit": {"type": "a.b", "data": {"zone": "{{ zone.id }}/{{ zone.name }}"}}}],
        **{"if": "zone.occupancy == null"},
    )
    trigger = Trigger(type="lantern.zone.exited", time=T0, data={"zone": "aisle-1"})
    (action,) = engine(spec).evaluate(trigger)
    assert action.data == {"zone": "aisle-1/"}


def test_replace_keeps_the_counters_of_rules_still_present() -> None:
    lantern = engine(
        rule(limits={"per_visitor": "1/day"}), rule(id="other", limits={"global": "1/day"})
    )
    assert len(lantern.evaluate(dwelled())) == 4
    lantern.replace(
        rules(
            rule(limits={"per_visitor": "1/day"}, description="reworded"),
            rule(id="third"),
        )
    )
    assert lantern.rules.ids() == ("offer", "third")
    assert fired(lantern.evaluate(dwelled(at=T0 + timedelta(hours=1)))) == [
        ("third", "v1"),
        ("third", "v1"),
    ]
    assert lantern.summary() == {
        "offer": {
            "fired": 1,
            "condition_false": 0,
            "limited": 1,
            "inactive_hours": 0,
            "disabled": 0,
            "not_matched": 0,
            "error": 0,
        },
        "third": {
            "fired": 1,
            "condition_false": 0,
            "limited": 0,
            "inactive_hours": 0,
            "disabled": 0,
            "not_matched": 0,
            "error": 0,
        },
    }
    lantern.replace(rules(rule(limits={"per_visitor": "2/day"})))  # a looser limit
    assert len(lantern.evaluate(dwelled(at=T0 + timedelta(hours=2)))) == 2
    assert lantern.evaluate(dwelled(at=T0 + timedelta(hours=3))) == []
    lantern.replace(rules(rule(id="third"), rule(id="other", limits={"global": "1/day"})))
    assert len(lantern.evaluate(dwelled(at=T0 + timedelta(hours=4)))) == 4  # "other" restarted


def test_traces_are_bounded_newest_first_and_filterable() -> None:
    lantern = engine(OFFER, trace_capacity=5)
    for index in range(8):
        segment = "loyalty" if index % 2 else "walk-in"
        lantern.evaluate(dwelled(visitor=f"v{index}", segment=segment, event_id=f"e{index}"))
    assert [trace.event_id for trace in lantern.traces()] == ["e7", "e6", "e5", "e4", "e3"]
    assert [trace.visitor for trace in lantern.traces(visitor="v6")] == ["v6"]
    assert lantern.traces(visitor="v1") == []  # evicted
    assert [trace.event_id for trace in lantern.traces(limit=2)] == ["e7", "e6"]
    assert lantern.traces(rule="other") == []
    assert lantern.traces(limit=0) == []
    assert lantern.summary() == {
        "offer": {
            "fired": 4,
            "condition_false": 4,
            "limited": 0,
            "inactive_hours": 0,
            "disabled": 0,
            "not_matched": 0,
            "error": 0,
        },
    }


def test_a_trigger_needs_an_aware_time_and_a_store_a_real_time_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Trigger(type=DWELLED, time=datetime(2026, 11, 24, 9))
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        StoreContext(id="s1", name="s1", timezone="Mars/Olympus")


def test_limits_carry_over_to_a_new_engine_through_their_state() -> None:
    limited = rule(limits={"per_visitor": "1/day"})
    first = engine(limited)
    assert len(first.evaluate(dwelled())) == 2

    second = engine(limited, rule(id="other"))
    second.restore_limits(json.loads(json.dumps(first.limits_state())))
    fired = second.evaluate(dwelled(at=T0 + timedelta(hours=1)))
    assert {action.rule for action in fired} == {"other"}  # a rule new to the state
    assert second.traces(rule="offer")[0].detail == "per_visitor 1/day"
    assert {action.rule for action in second.evaluate(dwelled(visitor="v2"))} == {"offer", "other"}


@pytest.mark.parametrize("state", [[], {"offer": []}, {"offer": {"per_visitor": {"v1": "x"}}}])
def test_malformed_limits_state_is_a_value_error(state: Any) -> None:
    with pytest.raises(ValueError):
        engine(rule(limits={"per_visitor": "1/day"})).restore_limits(state)


def test_taken_traces_are_forgotten() -> None:
    lantern = engine(OFFER)
    lantern.evaluate(dwelled())
    (taken,) = lantern.take_traces()
    assert (taken.rule, taken.outcome) == ("offer", "fired")
    assert lantern.take_traces() == []
    assert lantern.traces() == []
    assert lantern.summary()["offer"]["fired"] == 1  # the counts are not traces
