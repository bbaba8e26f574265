"""A rule checked against the store it runs in: what parses can still never fire.

A rule whose ``when`` names a zone, segment or device the store does not have, or an event
type the gateway never makes, is valid YAML and never fires; so is one whose ``if`` reads
``visitor.segmnt``, which fails on every trigger. :func:`store_problems` finds these, each as
(field, what is wrong), for ``parse_rules(files, check=...)`` to report with the file.

The context's shape (:data:`CONTEXT`) is what ``rules/engine.py`` builds for every trigger;
``tests/rules/test_check.py`` holds the two to each other.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from devices.model import DeviceStatus, ScanRead, Sighting, Telemetry
from devices.reorder import ReorderCleared, ReorderRequested
from rules.conditions import selections as condition_selections
from rules.engine import VISITOR_KEYS, ZONE_KEYS
from rules.model import Rule
from rules.presence import ZoneDwelled, ZoneEntered, ZoneExited
from rules.templates import selections as template_selections

__all__ = ["CONTEXT", "TRIGGER_TYPES", "StoreCatalog", "store_check", "store_problems"]

# The types of the events rules see: what the decoders and the gateway's stages make. A rule's
# own `emit` is not among them, since emitted events do not trigger rules.
TRIGGER_TYPES = frozenset(
    {
        kind.event_type
        for kind in (
            Sighting,
            ScanRead,
            Telemetry,
            ReorderRequested,
            ReorderCleared,
            ZoneEntered,
            ZoneExited,
            ZoneDwelled,
        )
    }
    | {DeviceStatus(device_id="-", online=online).cloud_event_type() for online in (True, False)}
)

_Shape = Mapping[str, Any] | None  # a map's fields (each a shape), {} for a value, None: any
_LEAF: Mapping[str, Any] = {}
# The names of a rule's context and their fields; event.data is the event's own data, whose
# fields differ by type, so anything may be selected from it.
CONTEXT: Mapping[str, _Shape] = {
    "event": {key: _LEAF for key in ("id", "type", "time", "subject", "device")} | {"data": None},
    "visitor": dict.fromkeys(VISITOR_KEYS, _LEAF),
    "zone": dict.fromkeys(ZONE_KEYS, _LEAF),
    "device": {"id": _LEAF},
    "store": dict.fromkeys(("id", "name", "timezone"), _LEAF),
    "now": dict.fromkeys(("hour", "minute", "weekday", "date", "iso"), _LEAF),
}


@dataclass(frozen=True, slots=True)
class StoreCatalog:
    """What a store has for rules to name: its zones, audience segments and devices."""

    zones: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    event_types: frozenset[str] = TRIGGER_TYPES


def store_problems(rule: Rule, catalog: StoreCatalog) -> list[tuple[str, str]]:
    """(field, what is wrong) for each thing the rule names that the store does not have."""
    when = rule.when
    problems: list[tuple[str, str]] = []
    if when.event not in catalog.event_types:
        problems.append(
            (
                "when.event",
                f"{when.event!r} is not an event the gateway makes, so the rule would never"
                f" fire; rules trigger on {_listed(_short_types(catalog.event_types))}"
                + _suggestion(
                    when.event.removeprefix("lantern."), _short_types(catalog.event_types)
                ),
            )
        )
    for field, value, known, where in (
        ("when.zone", when.zone, catalog.zones, "a zone in zones: of store.yaml"),
        ("when.segment", when.segment, catalog.segments, "a segment in audiences: of store.yaml"),
        (
            "when.device",
            when.device,
            catalog.devices,
            "a device in devices: of store.yaml, nor a zone's scanner",
        ),
    ):
        if value is not None and value not in known:
            problems.append((field, f"{value!r} is not {where}{_suggestion(value, known)}"))
    if rule.condition is not None:
        for path in sorted(condition_selections(rule.condition.source)):
            problem = _path_problem(path)
            if problem is not None:
                problems.append(("if", problem))
    for field, source in _templates(rule):
        for path in sorted(template_selections(source)):
            problem = _path_problem(path)
            if problem is not None:
                problems.append((field, problem))
    return list(dict.fromkeys(problems))  # a name misspelt twice is one problem


def store_check(catalog: StoreCatalog) -> Callable[[Rule], list[tuple[str, str]]]:
    """The check ``parse_rules`` takes, for one store."""
    return lambda rule: store_problems(rule, catalog)


def _templates(rule: Rule) -> Iterator[tuple[str, str]]:
    """(field, source) of every template of the rule's actions."""
    for index, spec in enumerate(rule.then):
        if spec.publish is not None:
            where = f"then[{index}].publish"
            yield f"{where}.topic", spec.publish.topic.source
            for path, source in spec.publish.payload.sources():
                yield f"{where}.payload{path}", source
        elif spec.emit is not None:
            for path, source in spec.emit.data.sources():
                yield f"then[{index}].emit.data{path}", source


def _path_problem(path: tuple[str, ...]) -> str | None:
    """Why the context has no ``path`` (``visitor.segmnt``), or None if it has."""
    shape: _Shape = CONTEXT
    for depth, name in enumerate(path):
        if shape is None:
            return None  # below event.data: the event's own fields
        selected = ".".join(path[: depth + 1])
        if not shape:
            return f"{'.'.join(path[:depth])} is a value, it has no field {name!r}"
        if name not in shape:
            if depth == 0:
                return (
                    f"{name}: no such name; the context has {_listed(shape)}"
                    f"{_suggestion(name, shape)}"
                )
            return (
                f"{selected}: {'.'.join(path[:depth])} has no field {name!r} (it has"
                f" {_listed(shape)}){_suggestion(name, shape)}"
            )
        shape = shape[name]
    return None


def _suggestion(name: str, known: Iterator[str] | Mapping[str, Any] | frozenset[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listed(names: Iterator[str] | Mapping[str, Any] | frozenset[str]) -> str:
    items = sorted(names) if isinstance(names, frozenset) else list(names)
    return ", ".join(items) if items else "none"


def _short_types(types: frozenset[str]) -> frozenset[str]:
    return frozenset(kind.removeprefix("lantern.") for kind in types)
