"""The rules engine: which rules a trigger fires, what they do, and why the others did not.

A trigger is a CloudEvent the gateway derived or decoded (a zone entered, a barcode read...)
with the visitor and zone it concerns. Only the rules indexed under its type are looked at,
less those whose ``when`` names another zone, GTIN or device (RuleSet.candidates), so the
cost of a trigger does not grow with the rules that cannot match it. Each rule looked at is
checked in this order, and the first check that stops it is its outcome:

1. ``disabled``: ``enabled: false``;
2. ``inactive_hours``: outside its ``active`` hours or days, in the store's time zone;
3. ``not_matched``: a ``when`` filter differs (segment, dwell threshold, or a second filter
   besides the one the rule is indexed by);
4. ``condition_false``: its ``if`` is false;
5. ``limited``: a limit would be exceeded (checked, not consumed);
6. ``fired``: its actions are rendered, and only now are its limits consumed.

``error``: the condition (4) or a template (6) failed at run time (a missing key, a type
mismatch, a rendered topic with a wildcard); the detail names the field and the error, the
rule does not fire, and the other rules still run.

Every outcome is a Trace (newest kept, up to a capacity) and a count in the summary.

The context: conditions (CEL) and templates (Jinja) see the same names.

=========  ==================================================================================
name       fields
=========  ==================================================================================
event      ``id``, ``type``, ``time`` (a timestamp), ``subject``, ``device``, ``data`` (the
           CloudEvent's data, e.g. ``event.data.zone``, ``event.data.gtin``)
visitor    ``id``, ``segment``, ``zone``, ``dwell_s``; every field null when the trigger has
           no visitor (a barcode read), so ``visitor.segment == "loyalty"`` is simply false
zone       ``id``, ``name``, ``occupancy`` (visitors in it now); the id from the event's
           ``data.zone`` and the other fields null when the gateway gave no zone
device     ``id``: the device the event came from, or null
store      ``id``, ``name``, ``timezone`` (IANA name)
now        ``hour`` (0-23), ``minute``, ``weekday`` (``"mon"`` .. ``"sun"``), ``date``
           (``"2026-11-24"``), ``iso`` (ISO 8601 with the offset): the trigger's time in the
           store's time zone
=========  ==================================================================================

A missing key is an error (``event.data.nope`` in CEL, ``{{ visitor.nope }}`` in Jinja);
test for it with ``has(event.data.nope)`` in CEL. In a template a null renders as the empty
string.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, TypeAdapter

from lantern.errors import ConditionError, TemplateError
from rules.conditions import Variables
from rules.limits import RuleLimiter
from rules.model import DWELLED, WEEKDAYS, Rule, RuleSet, topic_problem

Outcome = Literal[
    "fired",
    "condition_false",
    "limited",
    "inactive_hours",
    "disabled",
    "not_matched",
    "error",
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
VISITOR_KEYS = ("id", "segment", "zone", "dwell_s")
ZONE_KEYS = ("id", "name", "occupancy")
DEFAULT_TRACE_CAPACITY = 10_000  # a busy store's hour or so of "why did it (not) fire"


@dataclass(frozen=True, slots=True)
class Trigger:
    """A CloudEvent as the rules see it; ``time`` (aware) is the clock for limits and hours."""

    type: str
    time: datetime
    id: str | None = None
    subject: str | None = None
    device: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    visitor: Mapping[str, Any] | None = None  # {"id", "segment", "zone", "dwell_s"}
    zone: Mapping[str, Any] | None = None  # {"id", "name", "occupancy"}

    def __post_init__(self) -> None:
        if self.time.utcoffset() is None:
            raise ValueError(f"a trigger's time must be timezone-aware, got {self.time}")

    def zone_id(self) -> str | None:
        """The zone the event is about: its data's, else the gateway's zone view's."""
        zone = self.data.get("zone")
        if isinstance(zone, str):
            return zone
        return _str_or_none(self.zone.get("id")) if self.zone is not None else None

    def visitor_id(self) -> str | None:
        """The visitor's pseudonym, or None for a trigger without one (a barcode read)."""
        return _str_or_none(self.visitor.get("id")) if self.visitor is not None else None


@dataclass(frozen=True, slots=True)
class StoreContext:
    """The store the rules run in; ``timezone`` is an IANA name (Europe/Amsterdam)."""

    id: str
    name: str
    timezone: str

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None


class Action(BaseModel):
    """What a fired rule asks for: ``publish`` (topic, payload, qos, retain) to the store's
    broker, or ``emit`` (event_type, data) a CloudEvent to the central record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str
    type: Literal["publish", "emit"]
    visitor: str | None
    time: datetime
    topic: str | None = None
    payload: Any = None
    qos: int = 1
    retain: bool = False
    ttl_s: float | None = None  # a publish's: how long after ``time`` it may still go out
    event_type: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Trace:
    """One rule's outcome for one trigger; ``detail`` says which limit, filter or error.

    A slotted dataclass, not a pydantic model: one is made per rule a trigger reaches and
    ``trace_capacity`` of them are kept (10,000 pydantic models held 9.5 MiB, these 0.9)."""

    time: datetime
    rule: str
    event_id: str | None
    event_type: str
    visitor: str | None
    outcome: Outcome
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The trace as JSON values, as the console and the backtest show it."""
        return _TRACE_JSON.dump_python(self, mode="json")  # type: ignore[no-any-return]


_TRACE_JSON = TypeAdapter(Trace)


class _Stop(Exception):
    """A rule stopped before firing: its outcome and why."""

    def __init__(self, outcome: Outcome, detail: str | None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


class _Scope:
    """One trigger's derived values, each computed on first use and shared by its rules:
    most triggers stop at a filter and never need the context."""

    __slots__ = ("_context", "_local", "_tz", "_variables", "store", "trigger")

    def __init__(self, trigger: Trigger, store: StoreContext, tz: ZoneInfo) -> None:
        self.trigger = trigger
        self.store = store
        self._tz = tz
        self._local: datetime | None = None
        self._context: dict[str, Any] | None = None
        self._variables: Variables | None = None

    @property
    def local(self) -> datetime:
        if self._local is None:
            self._local = self.trigger.time.astimezone(self._tz)
        return self._local

    @property
    def context(self) -> dict[str, Any]:
        if self._context is None:
            self._context = self._build_context()
        return self._context

    @property
    def variables(self) -> Variables:
        if self._variables is None:
            self._variables = Variables(self.context)
        return self._variables

    def _build_context(self) -> dict[str, Any]:
        trigger, local = self.trigger, self.local
        visitor = trigger.visitor or {}
        zone = trigger.zone or {"id": trigger.zone_id()}
        return {
            "event": {
                "id": trigger.id,
                "type": trigger.type,
                "time": trigger.time,
                "subject": trigger.subject,
                "device": trigger.device,
                "data": dict(trigger.data),
            },
            "visitor": {key: visitor.get(key) for key in VISITOR_KEYS},
            "zone": {key: zone.get(key) for key in ZONE_KEYS},
            "device": {"id": trigger.device},
            "store": {
                "id": self.store.id,
                "name": self.store.name,
                "timezone": self.store.timezone,
            },
            "now": {
                "hour": local.hour,
                "minute": local.minute,
                "weekday": WEEKDAYS[local.weekday()],
                "date": local.date().isoformat(),
                "iso": local.isoformat(),
            },
        }


class RuleEngine:
    """Evaluates triggers against a RuleSet, keeping limit counters, traces and a summary."""

    def __init__(
        self,
        rules: RuleSet,
        store: StoreContext,
        trace_capacity: int = DEFAULT_TRACE_CAPACITY,
    ) -> None:
        if trace_capacity < 1:
            raise ValueError(f"trace_capacity must be >= 1, got {trace_capacity}")
        self._store = store
        self._tz = ZoneInfo(store.timezone)
        self._traces: deque[Trace] = deque(maxlen=trace_capacity)
        self._rules = RuleSet()
        self._limiters: dict[str, RuleLimiter] = {}
        self._counts: dict[str, dict[Outcome, int]] = {}
        self.replace(rules)

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def replace(self, rules: RuleSet) -> None:
        """Run ``rules`` from now on (a hot reload). A rule whose id is still present keeps
        its limit counters, under its new limits, and its summary counts."""
        self._limiters = {
            rule.id: RuleLimiter(rule.limits.rates(), self._limiters.get(rule.id)) for rule in rules
        }
        self._counts = {
            rule.id: self._counts.get(rule.id) or dict.fromkeys(OUTCOMES, 0) for rule in rules
        }
        self._rules = rules

    def limits_state(self) -> dict[str, Any]:
        """What the rules' limits have counted, as JSON: committed with the firings, so a
        restart does not hand a visitor a second once-a-day offer."""
        return {rule: limiter.state() for rule, limiter in self._limiters.items()}

    def restore_limits(self, state: Mapping[str, Any]) -> None:
        """Take back a ``limits_state()`` for the rules still loaded; ValueError if it is
        not one."""
        if not isinstance(state, Mapping):
            raise ValueError("not the rules' limits")
        for rule, scopes in state.items():
            limiter = self._limiters.get(rule)
            if limiter is not None:
                if not isinstance(scopes, Mapping):
                    raise ValueError(f"not a rule's limits: {rule!r}")
                limiter.restore(scopes)

    def evaluate(self, trigger: Trigger) -> list[Action]:
        """The actions of the rules ``trigger`` fires, rule by rule in id order."""
        zone = trigger.zone_id()
        gtin = _str_or_none(trigger.data.get("gtin"))
        candidates = self._rules.candidates(trigger.type, zone, gtin, trigger.device)
        if not candidates:
            return []
        scope = _Scope(trigger, self._store, self._tz)
        visitor = trigger.visitor_id()
        at_s = trigger.time.timestamp()
        actions: list[Action] = []
        for rule in candidates:
            limiter = self._limiters[rule.id]
            try:
                _check(rule, scope, zone, gtin)
                limit = limiter.check(visitor, zone, at_s)
                if limit is not None:
                    raise _Stop("limited", limit)
                rendered = _render(rule, scope, visitor)
            except _Stop as stop:
                self._record(rule.id, trigger, visitor, stop.outcome, stop.detail)
                continue
            limiter.consume(visitor, zone, at_s)
            actions.extend(rendered)
            self._record(rule.id, trigger, visitor, "fired", None)
        return actions

    def traces(
        self, rule: str | None = None, visitor: str | None = None, limit: int = 100
    ) -> list[Trace]:
        """The latest traces, newest first, of one rule and/or one visitor if given."""
        found: list[Trace] = []
        if limit < 1:
            return found
        for trace in reversed(self._traces):
            if (rule is None or trace.rule == rule) and (
                visitor is None or trace.visitor == visitor
            ):
                found.append(trace)
                if len(found) == limit:
                    break
        return found

    def take_traces(self) -> list[Trace]:
        """The traces kept so far, oldest first, forgetting them: for a replay that prints
        them as it goes rather than keeping a whole recording's worth."""
        taken = list(self._traces)
        self._traces.clear()
        return taken

    def summary(self) -> dict[str, dict[str, int]]:
        """Rule id → outcome → count, every outcome listed, for the rules now loaded; counts
        run from when the id was first loaded, through reloads that keep it."""
        return {
            rule: {outcome: count for outcome, count in counts.items()}
            for rule, counts in self._counts.items()
        }

    def _record(
        self,
        rule: str,
        trigger: Trigger,
        visitor: str | None,
        outcome: Outcome,
        detail: str | None,
    ) -> None:
        self._counts[rule][outcome] += 1
        self._traces.append(
            Trace(
                time=trigger.time,
                rule=rule,
                event_id=trigger.id,
                event_type=trigger.type,
                visitor=visitor,
                outcome=outcome,
                detail=detail,
            )
        )


def _check(rule: Rule, scope: _Scope, zone: str | None, gtin: str | None) -> None:
    """Whether the rule's state, hours, filters and condition let it go on; _Stop if not."""
    if not rule.enabled:
        raise _Stop("disabled", "enabled: false")
    if rule.active is not None:
        reason = rule.active.inactive_reason(scope.local)
        if reason is not None:
            raise _Stop("inactive_hours", reason)
    mismatch = _mismatch(rule, scope.trigger, zone, gtin)
    if mismatch is not None:
        raise _Stop("not_matched", mismatch)
    if rule.condition is not None:
        try:
            holds = rule.condition.evaluate(scope.variables)
        except ConditionError as exc:
            raise _Stop("error", f"if: {exc}") from None
        if not holds:
            raise _Stop("condition_false", None)


def _mismatch(rule: Rule, trigger: Trigger, zone: str | None, gtin: str | None) -> str | None:
    """The first ``when`` filter the trigger fails, as "when.filter: got, wants", or None."""
    when = rule.when
    visitor = trigger.visitor or {}
    threshold = trigger.data.get("threshold_s") if when.event == DWELLED else None
    checks: tuple[tuple[str, object, object], ...] = (
        ("zone", when.zone, zone),
        ("gtin", when.gtin, gtin),
        ("device", when.device, trigger.device),
        ("segment", when.segment, visitor.get("segment")),
        ("dwell_at_least", when.dwell_at_least, threshold),
    )
    for name, wanted, got in checks:
        if wanted is not None and got != wanted:
            return f"when.{name}: {got!r}, the rule wants {wanted!r}"
    return None


def _render(rule: Rule, scope: _Scope, visitor: str | None) -> list[Action]:
    """The rule's actions rendered; _Stop("error") naming the field of a failing template."""
    time = scope.trigger.time
    actions: list[Action] = []
    for index, spec in enumerate(rule.then):
        where = f"then[{index}]"
        try:
            if spec.publish is not None:
                where += ".publish.topic"
                topic = spec.publish.topic.render(scope.context)
                problem = topic_problem(topic)
                if problem is not None:
                    raise _Stop("error", f"{where}: {problem}")
                where = f"then[{index}].publish.payload"
                actions.append(
                    Action(
                        rule=rule.id,
                        type="publish",
                        visitor=visitor,
                        time=time,
                        topic=topic,
                        payload=spec.publish.payload.render(scope.context),
                        qos=spec.publish.qos,
                        retain=spec.publish.retain,
                        ttl_s=spec.publish.ttl,
                    )
                )
            elif spec.emit is not None:
                where += ".emit.data"
                actions.append(
                    Action(
                        rule=rule.id,
                        type="emit",
                        visitor=visitor,
                        time=time,
                        event_type=spec.emit.type,
                        data=spec.emit.data.render(scope.context),
                    )
                )
        except TemplateError as exc:
            raise _Stop("error", f"{where}{exc.path}: {exc.message}") from None
    return actions


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
