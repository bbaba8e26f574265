"""Rules checked against the store: what parses but could never fire is refused, each problem
with its file, field and reason; and the context the check knows is the one rules get."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lantern.errors import RulesInvalid
from rules.check import CONTEXT, TRIGGER_TYPES, StoreCatalog, store_check
from rules.conditions import selections as condition_selections
from rules.engine import RuleEngine, StoreContext, Trigger
from rules.model import parse_rules
from rules.templates import selections as template_selections

STORE = StoreCatalog(
    zones=frozenset({"coffee-aisle", "pickup"}),
    segments=frozenset({"loyalty"}),
    devices=frozenset({"till-1", "coffee-aisle"}),
)
GOOD = """\
id: coffee-pods-offer
when: {event: zone.dwelled, zone: coffee-aisle, segment: loyalty, dwell_at_least: 45s}
if: 'visitor.segment == "loyalty" && now.hour < 11 && event.data.dwell_s > 1.0'
then:
  - publish: {topic: "store/{{ store.id }}/signage", payload: {visitor: "{{ visitor.id }}"}}
  - emit: {type: lantern.offer.triggered, data: {zone: "{{ zone.name }}"}}
"""


def problems(text: str, catalog: StoreCatalog = STORE) -> list[str]:
    with pytest.raises(RulesInvalid) as caught:
        parse_rules({"offer.yaml": text}, store_check(catalog))
    return [str(problem) for problem in caught.value.problems]


def test_a_rule_naming_only_what_the_store_has_passes() -> None:
    assert len(parse_rules({"offer.yaml": GOOD}, store_check(STORE))) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("zone: coffee-aisle", "zone: cofee-aisle"),
            "offer.yaml: when.zone: 'cofee-aisle' is not a zone in zones: of store.yaml;"
            " did you mean 'coffee-aisle'?",
        ),
        (
            ("segment: loyalty", "segment: loyal"),
            "offer.yaml: when.segment: 'loyal' is not a segment in audiences: of store.yaml;"
            " did you mean 'loyalty'?",
        ),
        (
            ("segment: loyalty,", "device: till-9,"),
            "offer.yaml: when.device: 'till-9' is not a device in devices: of store.yaml, nor"
            " a zone's scanner; did you mean 'till-1'?",
        ),
        (
            ("visitor.segment ==", "visitor.segmnt =="),
            "offer.yaml: if: visitor.segmnt: visitor has no field 'segmnt' (it has id,"
            " segment, zone, dwell_s); did you mean 'segment'?",
        ),
        (
            ("now.hour < 11", "hour < 11"),
            "offer.yaml: if: hour: no such name; the context has event, visitor, zone, device,"
            " store, now",
        ),
        (
            ("{{ zone.name }}", "{{ zone.nme }}"),
            "offer.yaml: then[1].emit.data.zone: zone.nme: zone has no field 'nme' (it has id,"
            " name, occupancy); did you mean 'name'?",
        ),
        (
            ("{{ store.id }}", "{{ store.id.x }}"),
            "offer.yaml: then[0].publish.topic: store.id is a value, it has no field 'x'",
        ),
    ],
)
def test_each_unknown_name_is_refused_with_file_field_and_reason(
    change: tuple[str, str], expected: str
) -> None:
    assert change[0] in GOOD
    assert problems(GOOD.replace(*change)) == [expected]


def test_an_event_the_gateway_never_makes_is_refused() -> None:
    (problem,) = problems(
        GOOD.replace("event: zone.dwelled", "event: zone.dweled").replace(
            ", dwell_at_least: 45s", ""
        )
    )
    assert problem.startswith("offer.yaml: when.event: 'lantern.zone.dweled' is not an event")
    assert problem.endswith("did you mean 'zone.dwelled'?")
    # An emitted event does not trigger rules, so a rule on one would never fire either.
    assert "lantern.offer.triggered" not in TRIGGER_TYPES
    assert {"lantern.device.offline", "lantern.scan.read"} <= TRIGGER_TYPES


def test_without_a_store_only_the_syntax_is_checked() -> None:
    assert len(parse_rules({"offer.yaml": GOOD.replace("coffee-aisle", "elsewhere")})) == 1


def test_selections_skip_strings_comments_macro_names_and_method_calls() -> None:
    found = condition_selections(
        'event.data.zone.startsWith("a.b") && [1].exists(x, x > visitor.dwell_s)'
        ' && zone["id"] != r"""c.d""" && has(event.data.gtin) // visitor.nope'
    )
    assert found == {
        ("event", "data", "zone"),
        ("visitor", "dwell_s"),
        ("zone", "id"),
        ("event", "data", "gtin"),
    }
    assert template_selections("{% for x in event.data.items %}{{ x.a }}{% endfor %}") >= {
        ("event", "data", "items")
    }
    assert ("x", "a") not in template_selections("{% for x in y %}{{ x.a }}{% endfor %}")


def test_the_context_the_check_knows_is_the_one_rules_are_given() -> None:
    rule = """\
id: everything
when: {event: scan.read}
then:
  - emit:
      type: lantern.x.y
      data: {event: "{{ event }}", visitor: "{{ visitor }}", zone: "{{ zone }}",
             device: "{{ device }}", store: "{{ store }}", now: "{{ now }}"}
"""
    engine = RuleEngine(parse_rules({"e.yaml": rule}), StoreContext("s1", "S", "UTC"))
    (action,) = engine.evaluate(Trigger(type="lantern.scan.read", time=datetime.now(UTC)))
    assert action.data is not None
    assert {name: set(value) for name, value in action.data.items()} == {
        name: set(fields or ()) for name, fields in CONTEXT.items()
    }
