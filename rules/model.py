"""The marketers' rules: one YAML file a rule, validated and compiled whole at load.

```yaml
id: coffee-pods-offer
description: A loyalty member lingering at the coffee aisle sees a pods offer on the aisle screen
enabled: true
when: {event: zone.dwelled, zone: coffee-aisle, dwell_at_least: 45s}
if: 'visitor.segment == "loyalty" && now.hour < 11'
then:
  - publish:
      topic: "store/{{ store.id }}/signage/coffee-aisle"
      payload: {offer: pods-10, visitor: "{{ visitor.id }}"}
  - emit: {type: lantern.offer.triggered, data: {offer: pods-10}}
limits: {per_visitor: 1/day, global: 200/hour, cooldown: 10m}
active: {hours: "07:00-11:00", days: [mon, tue, wed, thu, fri]}
```

- ``when.event`` is a CloudEvent type; ``zone.dwelled`` is short for ``lantern.zone.dwelled``.
  The other ``when`` keys are filters: ``zone``, ``gtin`` (any GTIN length, kept as 14
  digits, its check digit verified), ``device``, ``segment`` (the visitor's), and
  ``dwell_at_least`` for ``zone.dwelled`` (the presence engine emits one dwelled event per
  threshold a visitor crosses, and the thresholds are these).
- ``if`` is a CEL expression (rules/conditions.py) over the context rules/engine.py describes.
- ``then`` is one or more actions, each ``publish`` (an MQTT topic and a JSON payload) or
  ``emit`` (a CloudEvent type and its data); every string in them is a Jinja template
  (rules/templates.py) over the same context.
- ``limits`` are rates ``N/period``, the period ``second``, ``minute``, ``hour``, ``day`` or a
  duration (``15m``); ``cooldown`` is the least time between two firings for one visitor.
  A per-visitor limit or cooldown does not count a trigger without a visitor (a barcode
  read), nor a per-zone limit one without a zone.
- ``active`` hours (``"07:00-11:00"`` or a list; a range may wrap midnight) and ``days``,
  in the store's time zone. The hours after midnight of a wrapping range belong to the day
  it started: ``days: [fri]`` with ``22:00-02:00`` covers Saturday 01:00.

Durations are ``45s``, ``2m``, ``1h30m``, ``1d`` or a number of seconds.

``parse_rules`` takes the files' text (the gateway reads them; rules/ does no I/O) and
either gives a RuleSet or raises RulesInvalid listing every problem of every file as
``file: field: message``: a set is used whole or not at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from devices.barcode import gtin14
from lantern.errors import DecodeError, RuleProblem, RulesInvalid, TemplateError
from rules import conditions
from rules.conditions import Condition
from rules.limits import Rate
from rules.templates import JsonTemplate, TextTemplate, is_template

EVENT_PREFIX = "lantern."  # the gateway's own CloudEvent types; a short name gets it
DWELLED = "lantern.zone.dwelled"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order

_RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
# Reverse-DNS-like and lower case, as the gateway's own types are (lantern.zone.dwelled).
_CLOUD_EVENT_TYPE = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+")
# [0-9], not \d: \d also takes other scripts' digits, which no marketer means.
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+(?:\.[0-9]+)?)s)?")
_DURATION_UNITS_S = (86_400, 3_600, 60, 1)  # the seconds in a d, h, m and s of _DURATION
_PERIODS_S = {"second": 1.0, "minute": 60.0, "hour": 3_600.0, "day": 86_400.0}
_RATE = re.compile(r"([0-9]+)\s*/\s*(\S+)")
_HOUR_RANGE = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})")
_MINUTES_PER_DAY = 24 * 60  # "24:00" may end a range: the end of the day
_GTIN14_DIGITS = 14  # GTINs are right-aligned in 14 digits, so zero-padding keeps them valid
_MQTT_WILDCARDS = ("+", "#")  # allowed in subscriptions only, never in a published topic


# --- values written as text in the YAML ---------------------------------------------------


def parse_duration(value: object) -> float:
    """Seconds from ``45s``, ``2m``, ``1h30m``, ``1d`` or a number of seconds."""
    if isinstance(value, bool):  # YAML's yes/no; a bool is an int to Python
        raise ValueError(f"{value} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _DURATION.fullmatch(text)
        if _SECONDS.fullmatch(text):
            seconds = float(text)
        elif match is None or not any(match.groups()):
            raise ValueError(
                f"{value!r} is not a duration: write 45s, 2m, 1h30m, 1d or a number of seconds"
            )
        else:
            seconds = sum(
                float(part) * unit
                for part, unit in zip(match.groups(), _DURATION_UNITS_S, strict=True)
                if part
            )
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be more than 0 seconds")
    return seconds


def parse_rate(value: object) -> Rate:
    """A Rate from ``N/period``: ``1/day``, ``200/hour``, ``5/15m``."""
    if not isinstance(value, str) or (match := _RATE.fullmatch(value.strip())) is None:
        raise ValueError(f"{value!r} is not a rate: write N/period, e.g. 1/day or 5/15m")
    count, period = int(match[1]), match[2]
    window_s = _PERIODS_S.get(period)
    if window_s is None:
        try:
            window_s = parse_duration(period)
        except ValueError:
            raise ValueError(
                f"{value!r}: the period must be second, minute, hour, day or a duration like 15m"
            ) from None
    if count < 1:
        raise ValueError(f"{value!r}: the count must be at least 1 (use enabled: false)")
    return Rate(count, window_s, value.strip())


def parse_event_type(value: object) -> str:
    """A trigger's CloudEvent type, the ``lantern.`` prefix added to a short name."""
    if not isinstance(value, str) or not _CLOUD_EVENT_TYPE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an event type: dotted lower-case words, e.g. zone.dwelled"
        )
    return value if value.startswith(EVENT_PREFIX) else EVENT_PREFIX + value


def parse_cloud_event_type(value: object) -> str:
    """A CloudEvent type as the gateway writes them: dotted, lower case."""
    if not isinstance(value, str) or not _CLOUD_EVENT_TYPE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a CloudEvent type: dotted lower-case words, "
            "e.g. lantern.offer.triggered"
        )
    return value


def parse_gtin(value: object) -> str:
    """A GTIN-8, -12, -13 or -14 as 14 digits, its check digit verified."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a GTIN")
    # YAML reads an unquoted GTIN as a number, dropping its leading zeros; GTINs are
    # right-aligned in 14 digits, so padding them back gives the same GTIN.
    digits = str(value).zfill(_GTIN14_DIGITS) if isinstance(value, int) else value.strip()
    try:
        return gtin14(digits)
    except DecodeError as exc:
        raise ValueError(exc.reason) from None


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to, or None."""
    if not topic:
        return "the topic is empty"
    if any(wildcard in topic for wildcard in _MQTT_WILDCARDS):
        return f"{topic!r}: + and # are subscription wildcards, not allowed in a published topic"
    if "\x00" in topic:
        return f"{topic!r}: a topic may not hold a NUL character"
    return None


def _slug(value: str) -> str:
    if not _RULE_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a rule id: lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return value


def _condition(value: object) -> Condition | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a CEL expression; quote it: 'now.hour < 11'")
    return conditions.compile(value)


def _topic(value: object) -> TextTemplate:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a topic; quote it")
    template = TextTemplate(value)
    problem = None if is_template(value) else topic_problem(value)  # else checked rendered
    if problem is not None:
        raise ValueError(problem)
    return template


def _json_object_template(value: object) -> JsonTemplate:
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a mapping of fields")
    return JsonTemplate(value)


@dataclass(frozen=True, slots=True)
class HourRange:
    """Minutes of the day, start inclusive, end exclusive; wraps midnight if end < start."""

    start_min: int
    end_min: int
    text: str

    @property
    def wraps(self) -> bool:
        return self.end_min < self.start_min


def _hour_ranges(value: object) -> tuple[HourRange, ...]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise ValueError(f'{value!r}: write a range like "07:00-11:00" or a list of them')
    return tuple(_hour_range(text) for text in texts)


def _hour_range(value: object) -> HourRange:
    match = _HOUR_RANGE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'{value!r} is not an hour range like "07:00-11:00"')
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start_h > 23 or start_m > 59 or end_m > 59 or end > _MINUTES_PER_DAY:
        raise ValueError(f"{value!r}: hours run 00:00 to 24:00")
    if start == end % _MINUTES_PER_DAY:
        raise ValueError(f"{value!r} is no time or all of it; leave hours out for the whole day")
    return HourRange(start, end, f"{start_h:02}:{start_m:02}-{end_h:02}:{end_m:02}")


def _weekdays(value: object) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{value!r}: write a list of days, e.g. [mon, tue]")
    unknown = [day for day in value if day not in WEEKDAYS]
    if unknown:
        raise ValueError(f"unknown days {unknown}: write {', '.join(WEEKDAYS)}")
    return frozenset(WEEKDAYS.index(day) for day in value)


def _cooldown(value: object) -> Rate:
    return Rate(1, parse_duration(value), value.strip() if isinstance(value, str) else f"{value}s")


Duration = Annotated[float, PlainValidator(parse_duration)]
RateText = Annotated[Rate, PlainValidator(parse_rate)]
CooldownText = Annotated[Rate, PlainValidator(_cooldown)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


# --- the rule -----------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class When(_Frozen):
    """What triggers the rule: an event type, and filters on it."""

    event: Annotated[str, PlainValidator(parse_event_type)]
    zone: Name | None = None
    gtin: Annotated[str, PlainValidator(parse_gtin)] | None = None
    device: Name | None = None
    segment: Name | None = None
    dwell_at_least: Duration | None = None

    @field_validator("dwell_at_least")
    @classmethod
    def _only_on_dwelled(cls, value: float | None, info: ValidationInfo) -> float | None:
        event = info.data.get("event")
        if value is not None and event is not None and event != DWELLED:
            raise ValueError(f"applies only to event zone.dwelled, not {event}")
        return value


class Publish(_Frozen):
    """An MQTT message to the store's broker (signage, staff devices)."""

    topic: Annotated[TextTemplate, PlainValidator(_topic)]
    payload: Annotated[JsonTemplate, PlainValidator(JsonTemplate)]
    qos: Literal[0, 1] = 1  # QoS 2 costs two more round trips for nothing a screen needs
    retain: bool = False
    # Unpublished this long after its trigger (the broker down), the action is dropped: an
    # offer for a shopper who has left is worthless. 5 minutes covers a broker restart.
    ttl: Duration = 300.0


class Emit(_Frozen):
    """A CloudEvent for the central record."""

    type: Annotated[str, PlainValidator(parse_cloud_event_type)]
    data: Annotated[JsonTemplate, PlainValidator(_json_object_template)] = Field(
        default_factory=lambda: JsonTemplate({})
    )


class ActionSpec(_Frozen):
    """One action of ``then``: exactly one of ``publish`` or ``emit``."""

    publish: Publish | None = None
    emit: Emit | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ActionSpec:
        if (self.publish is None) == (self.emit is None):
            raise ValueError("an action is exactly one of publish or emit")
        return self


class Limits(_Frozen):
    """How often the rule may fire; the engine's RuleLimiter counts."""

    per_visitor: RateText | None = None
    per_zone: RateText | None = None
    global_: RateText | None = Field(None, alias="global")
    # The least time between two firings for one visitor: a rate of 1 per that duration.
    cooldown: CooldownText | None = None

    def rates(self) -> dict[str, Rate]:
        """The rates by limits.SCOPES name."""
        rates = {
            "per_visitor": self.per_visitor,
            "per_zone": self.per_zone,
            "global": self.global_,
            "cooldown": self.cooldown,
        }
        return {scope: rate for scope, rate in rates.items() if rate is not None}


class Active(_Frozen):
    """When the rule may fire, in the store's time zone; absent parts do not restrict."""

    hours: Annotated[tuple[HourRange, ...], PlainValidator(_hour_ranges)] = ()
    days: Annotated[frozenset[int], PlainValidator(_weekdays)] | None = None

    def inactive_reason(self, local: datetime) -> str | None:
        """Why the rule is not active at ``local`` (store time), or None if it is."""
        weekday = local.weekday()
        minute = local.hour * 60 + local.minute
        if not self.hours:
            if self._day(weekday):
                return None
            return f"{WEEKDAYS[weekday]} is not one of the days {self._days_text()}"
        for hours in self.hours:
            if hours.wraps:
                if (minute >= hours.start_min and self._day(weekday)) or (
                    # the small hours belong to the range begun the day before
                    minute < hours.end_min and self._day((weekday - 1) % 7)
                ):
                    return None
            elif hours.start_min <= minute < hours.end_min and self._day(weekday):
                return None
        ranges = ", ".join(hours.text for hours in self.hours)
        days = f" on {self._days_text()}" if self.days is not None else ""
        return f"{local:%H:%M} {WEEKDAYS[weekday]} is outside {ranges}{days}"

    def _day(self, weekday: int) -> bool:
        return self.days is None or weekday in self.days

    def _days_text(self) -> str:
        return ", ".join(WEEKDAYS[day] for day in sorted(self.days or ()))


class Rule(_Frozen):
    """One marketer's rule, its condition and templates compiled."""

    id: Annotated[str, AfterValidator(_slug)]
    description: str = ""
    enabled: bool = True
    when: When
    condition: Annotated[Condition | None, PlainValidator(_condition)] = Field(None, alias="if")
    then: tuple[ActionSpec, ...]
    limits: Limits = Field(default_factory=Limits)
    active: Active | None = None

    @field_validator("then")
    @classmethod
    def _some_action(cls, value: tuple[ActionSpec, ...]) -> tuple[ActionSpec, ...]:
        # A validator, not min_length: pydantic would also call the list empty whenever
        # every action in it is invalid, as it counts only the valid ones.
        if not value:
            raise ValueError("a rule needs at least one action")
        return value


# --- the set ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bucket:
    """The rules of one event type, by the filter that selects them most narrowly.

    A rule filtering on a zone (else a GTIN, else a device) is filed under that value only,
    so a trigger never looks at the rules of other zones, products or devices."""

    anywhere: tuple[Rule, ...]
    by_zone: Mapping[str, tuple[Rule, ...]]
    by_gtin: Mapping[str, tuple[Rule, ...]]
    by_device: Mapping[str, tuple[Rule, ...]]


class RuleSet:
    """An immutable set of rules, by id, indexed by the event type that triggers them."""

    __slots__ = ("_by_id", "_event_types", "_index")

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        by_id: dict[str, Rule] = {}
        for rule in sorted(rules, key=lambda rule: rule.id):
            if rule.id in by_id:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            by_id[rule.id] = rule
        self._by_id: Mapping[str, Rule] = by_id
        self._index = _index(by_id.values())
        self._event_types = frozenset(self._index)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._by_id.values())

    def __getitem__(self, rule_id: str) -> Rule:
        return self._by_id[rule_id]

    def __repr__(self) -> str:
        return f"RuleSet({list(self._by_id)})"

    def ids(self) -> tuple[str, ...]:
        """The rule ids, sorted."""
        return tuple(self._by_id)

    def event_types(self) -> frozenset[str]:
        """The event types some rule triggers on; others need not be evaluated at all."""
        return self._event_types

    def candidates(
        self, event_type: str, zone: str | None, gtin: str | None, device: str | None
    ) -> Sequence[Rule]:
        """The rules that could match a trigger, by id: its type's, less those filed under
        another zone, GTIN or device. The cost does not grow with the rules left out."""
        bucket = self._index.get(event_type)
        if bucket is None:
            return ()
        parts = [
            part
            for part in (
                bucket.anywhere,
                bucket.by_zone.get(zone, ()) if zone is not None else (),
                bucket.by_gtin.get(gtin, ()) if gtin is not None else (),
                bucket.by_device.get(device, ()) if device is not None else (),
            )
            if part
        ]
        if len(parts) <= 1:
            return parts[0] if parts else ()
        return sorted((rule for part in parts for rule in part), key=lambda rule: rule.id)

    def dwell_thresholds_s(self) -> frozenset[float]:
        """The ``dwell_at_least`` of the zone.dwelled rules (enabled or not, so the events the
        gateway derives do not change with a toggle): the presence engine emits a dwelled
        event when a visitor crosses each."""
        return frozenset(
            rule.when.dwell_at_least
            for rule in self._by_id.values()
            if rule.when.event == DWELLED and rule.when.dwell_at_least is not None
        )


def _index(rules: Iterable[Rule]) -> dict[str, _Bucket]:
    grouped: dict[str, dict[str, dict[str, list[Rule]]]] = {}
    for rule in rules:
        kinds = grouped.setdefault(
            rule.when.event, {"anywhere": {}, "zone": {}, "gtin": {}, "device": {}}
        )
        kind, key = _filed_under(rule.when)
        kinds[kind].setdefault(key, []).append(rule)
    return {
        event: _Bucket(
            anywhere=tuple(kinds["anywhere"].get("", ())),
            by_zone={key: tuple(rules) for key, rules in kinds["zone"].items()},
            by_gtin={key: tuple(rules) for key, rules in kinds["gtin"].items()},
            by_device={key: tuple(rules) for key, rules in kinds["device"].items()},
        )
        for event, kinds in grouped.items()
    }


def _filed_under(when: When) -> tuple[str, str]:
    for kind, key in (("zone", when.zone), ("gtin", when.gtin), ("device", when.device)):
        if key is not None:
            return kind, key
    return "anywhere", ""


# --- parsing ------------------------------------------------------------------------------


# libyaml's parser when PyYAML has it (its wheels do): five times the pure-Python one, which
# took two thirds of the time to load 1,000 rules.
if TYPE_CHECKING:  # both have the same interface; the stubs know the Python one
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _RuleLoader(_SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (it would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_rules(
    files: Mapping[str, str],
    check: Callable[[Rule], Iterable[tuple[str, str]]] | None = None,
) -> RuleSet:
    """One rule per file (name → YAML text); RulesInvalid lists every problem of every file.
    ``check`` finds what is wrong with a rule that parsed, as (field, message) pairs: against
    the store it is for (rules/check.py)."""
    problems: list[RuleProblem] = []
    rules: list[Rule] = []
    files_by_id: dict[str, str] = {}
    for name in sorted(files):
        try:
            rule = _parse_rule(name, files[name])
        except RulesInvalid as exc:
            problems.extend(exc.problems)
            continue
        other = files_by_id.setdefault(rule.id, name)
        if other != name:
            problems.append(RuleProblem(name, "id", f"{rule.id!r} is also the id in {other}"))
            continue
        found = list(check(rule)) if check is not None else []
        problems.extend(RuleProblem(name, field, message) for field, message in found)
        rules.append(rule)
    if problems:
        raise RulesInvalid(problems)
    return RuleSet(rules)


def _parse_rule(name: str, text: str) -> Rule:
    try:
        document = yaml.load(text, Loader=_RuleLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise RulesInvalid([RuleProblem(name, "(yaml)", _yaml_message(exc))]) from None
    if not isinstance(document, dict):
        found = "an empty file" if document is None else f"a {type(document).__name__}"
        raise RulesInvalid(
            [RuleProblem(name, "(yaml)", f"a rule is a mapping (id, when, then...), not {found}")]
        )
    try:
        return Rule.model_validate(document)
    except ValidationError as exc:
        raise RulesInvalid([_problem(name, error) for error in exc.errors()]) from None


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return str(exc)


def _problem(file: str, error: Any) -> RuleProblem:
    field = _dotted(error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, TemplateError):
        return RuleProblem(file, field + cause.path, cause.message)
    if isinstance(cause, ValueError):
        return RuleProblem(file, field, str(cause))
    messages = {"extra_forbidden": "unknown key", "missing": "is required"}
    return RuleProblem(file, field, messages.get(error["type"], error["msg"]))


def _dotted(loc: Sequence[int | str]) -> str:
    """("then", 0, "publish", "topic") as "then[0].publish.topic"."""
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else part
    return field or "(rule)"
