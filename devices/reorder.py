"""Smart devices' consumables on ``lantern/{store}/reorder/{device}``, and when to reorder.

:func:`parse` decodes one report into :class:`ReorderReport` observations (kind ``level``:
how much is left; kind ``usage``: how much was just consumed) from:

- Alexa Dash Replenishment: an ``Alexa.InventoryLevelSensor`` ``level`` property and an
  ``Alexa.InventoryUsageSensor`` ``InventoryConsumed`` event, flat (as the fixtures) or in
  their Alexa event envelope (a ``ChangeReport``'s changed and context properties, or the
  event's header and payload). The sensor ``instance`` is the slot; a Count, Percentage,
  Volume or Weight becomes a level with unit ``count``, ``percent`` or Alexa's unit in lower
  case (``liter``). Other interfaces in an envelope (EndpointHealth...) are skipped.
- Matter Resource Monitoring (HEPA / carbon filter monitoring and the other aliases of
  cluster 0x0071...), as a bridge publishes the attributes: ``{"condition": <percent>,
  "degradationDirection": "Down", "changeIndication": "OK", "replacementProductList": [...]}``;
  the level is the percentage left (``100 - condition`` when the condition degrades upwards),
  ``indication`` the device's own verdict, and the GTIN-like replacement products become
  GTIN-14s. The slot is the payload's ``slot`` or ``cluster``, else ``resource``.
- plain ``{"slot": ..., "level": ..., "unit": ...}`` (or ``"usage"`` in place of ``level``),
  optionally with the slot's ``capacity`` (in the same unit) and the ``gtin`` of the product
  that refills it (verified, as a GTIN-14 in ``replacement_gtins``), as Lantern's consumables
  firmware stub (firmware_stubs/micropython/consumables/) sends them.

:class:`ReorderTracker` is the pure debounce state machine: per configured (device, slot) it
emits ``lantern.reorder.requested`` once the slot has been at or below its threshold for three
consecutive reports (Amazon Dash Replenishment's rule against one noisy reading ordering a
product), and nothing more until the level rises above the re-arm level, which emits
``lantern.reorder.cleared``. A Matter report without a condition counts as low when its
indication is Warning or Critical, and as refilled when it is OK.

Usage reports: with a ``capacity`` in the slot's config, each consumed amount is taken off the
slot's level (its last reported level, else a full ``capacity``) and the result is debounced
like a reported level; without a capacity they are telemetry only (an amount consumed says
nothing about what is left). A device that only reports usage never reports a refill, so
:meth:`ReorderTracker.refill` sets the slot full again (a technician or the order's delivery).

The tracker's state is plain data (:meth:`ReorderTracker.to_dict` / ``from_dict``) so the
gateway persists it and restores it after a restart, mid-streak.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.barcode import gtin14
from devices.jsonfields import (
    json_nested_object,
    json_number,
    json_object,
    json_object_list,
    json_str,
    json_time,
    json_type,
)
from devices.model import Message, Observation
from lantern.errors import DecodeError

__all__ = [
    "AMAZON_DEBOUNCE_REPORTS",
    "Indication",
    "ReorderCleared",
    "ReorderEvent",
    "ReorderReport",
    "ReorderRequested",
    "ReorderTracker",
    "SlotConfig",
    "SlotState",
    "parse",
]

AMAZON_DEBOUNCE_REPORTS = 3  # Dash Replenishment orders after 3 consecutive low reports
_PERCENT_FULL = 100.0  # a Matter condition and an Alexa Percentage are 0..100
_PERCENT_UNITS = frozenset({"percent", "%"})  # a plain report's spellings of a percentage
_DEFAULT_MATTER_SLOT = "resource"  # a Matter bridge that names neither slot nor cluster

_ALEXA_LEVEL = ("Alexa.InventoryLevelSensor", "level")
_ALEXA_USAGE = ("Alexa.InventoryUsageSensor", "InventoryConsumed")
_ALEXA_UNITLESS: Mapping[str, str] = {"Count": "count", "Percentage": "percent"}
_ALEXA_WITH_UNIT = frozenset({"Volume", "Weight"})

Indication = Literal["ok", "warning", "critical"]
_LOW_INDICATIONS = frozenset({"warning", "critical"})
# Matter ChangeIndicationEnum (Matter 1.2 cluster spec 2.8.5.2), by number or by name.
_MATTER_INDICATIONS: Mapping[object, Indication] = {
    0: "ok",
    1: "warning",
    2: "critical",
    "ok": "ok",
    "warning": "warning",
    "critical": "critical",
}
# DegradationDirectionEnum (2.8.5.1): Up means the condition rises as the resource is used.
_MATTER_DEGRADES_UP: Mapping[object, bool] = {0: True, 1: False, "up": True, "down": False}
# ProductIdentifierTypeEnum (2.8.5.3): the GTIN-like ones; OEM part numbers are no GTIN.
_MATTER_GTIN_TYPES = frozenset({0, 1, 2, 3, "upc", "gtin8", "ean", "gtin14"})
_MATTER_OEM_TYPES = frozenset({4, "oem"})

_EnumValue = TypeVar("_EnumValue")


# --- observations and events ---------------------------------------------------------------


class ReorderReport(Observation, frozen=True, kw_only=True):
    """A consumable's level (what is left) or usage (what was just consumed) in one slot.

    ``level`` is the reported quantity in ``unit``: the amount left for kind ``level``, the
    amount consumed for kind ``usage``; None when a Matter device reports only its
    ``indication``. ``replacement_gtins`` are the products the device says refill the slot;
    ``capacity`` is a full slot in ``unit``, when the device says.
    """

    event_type: ClassVar[str] = "lantern.device.telemetry"

    slot: str
    kind: Literal["level", "usage"]
    level: float | None = None
    unit: str | None = None
    indication: Indication | None = None
    replacement_gtins: tuple[str, ...] | None = None
    capacity: float | None = None


class ReorderEvent(Observation, frozen=True, kw_only=True):
    """A slot's reorder state changed; ``level`` is the level that changed it."""

    slot: str
    level: float | None = None
    unit: str | None = None
    gtin: str | None = None


class ReorderRequested(ReorderEvent, frozen=True, kw_only=True):
    event_type: ClassVar[str] = "lantern.reorder.requested"


class ReorderCleared(ReorderEvent, frozen=True, kw_only=True):
    event_type: ClassVar[str] = "lantern.reorder.cleared"


# --- decoding ------------------------------------------------------------------------------


# A Matter controller may report any one resource-monitoring attribute on its own.
_MATTER_ATTRIBUTES = ("condition", "changeIndication", "replacementProductList")


def parse(message: Message) -> list[Observation] | None:
    """The reports in one reorder message, or a decode error saying what is wrong."""
    document = json_object(message, "reorder report")
    device_id = message.fields.get("device") or message.topic.rstrip("/").rsplit("/")[-1]
    if "event" in document:
        return [*_alexa_envelope(document, device_id)]
    if "namespace" in document:
        report = _alexa(document, device_id)
        if report is None:
            raise DecodeError(f"not an inventory report: {_alexa_key(document)}")
        return [report]
    if any(key in document for key in _MATTER_ATTRIBUTES):
        return [_matter(document, device_id)]
    if "level" in document or "usage" in document:
        return [_plain(document, device_id)]
    raise DecodeError(
        "neither an Alexa inventory report, a Matter resource monitoring report,"
        " nor a slot level or usage"
    )


def _plain(document: Mapping[str, Any], device_id: str) -> ReorderReport:
    kind: Literal["level", "usage"] = "level" if "level" in document else "usage"
    slot = json_str(document, "slot")
    if not slot:
        raise DecodeError("report has no slot")
    unit = (json_str(document, "unit") or "").lower() or None
    level = _quantity(document, kind)
    if unit in _PERCENT_UNITS:
        _check_percentage(level)  # as for an Alexa Percentage: no more than all of it
    gtin = json_str(document, "gtin")
    return ReorderReport(
        device_id=device_id,
        observed_at=json_time(document, "time"),
        slot=slot,
        kind=kind,
        level=level,
        unit=unit,
        replacement_gtins=(gtin14(gtin),) if gtin is not None else None,
        capacity=_quantity(document, "capacity"),
    )


# Alexa ---------------------------------------------------------------------------------------


def _alexa_key(document: Mapping[str, Any]) -> str:
    namespace = json_str(document, "namespace") or ""
    return f"{namespace[:60]}.{(json_str(document, 'name') or '')[:40]}"


def _alexa_envelope(document: Mapping[str, Any], device_id: str) -> list[ReorderReport]:
    """The inventory reports of an Alexa event: its header and payload as one flat report
    (InventoryConsumed), or a ChangeReport's changed and context properties."""
    event = json_nested_object(document, "event")
    header = json_nested_object(event, "header")
    payload = json_nested_object(event, "payload")
    properties = [
        *json_object_list(json_nested_object(payload, "change"), "properties"),
        *json_object_list(json_nested_object(document, "context"), "properties"),
        {**header, **payload},
    ]
    reports = [report for item in properties if (report := _alexa(item, device_id)) is not None]
    if not reports:
        raise DecodeError("Alexa event carries no inventory level or usage")
    return reports


def _alexa(document: Mapping[str, Any], device_id: str) -> ReorderReport | None:
    """The report of one flat Alexa property or event; None for other interfaces."""
    key = (json_str(document, "namespace"), json_str(document, "name"))
    if key not in (_ALEXA_LEVEL, _ALEXA_USAGE):
        return None
    kind: Literal["level", "usage"] = "level" if key == _ALEXA_LEVEL else "usage"
    slot = json_str(document, "instance")
    if not slot:
        raise DecodeError(f"{key[0]}.{key[1]} has no instance (the slot)")
    measure = json_nested_object(document, "value" if kind == "level" else "usage")
    level, unit = _alexa_measure(measure)
    return ReorderReport(
        device_id=device_id,
        observed_at=json_time(document, "timeOfSample"),
        slot=slot,
        kind=kind,
        level=level,
        unit=unit,
    )


def _alexa_measure(measure: Mapping[str, Any]) -> tuple[float, str]:
    """(value, unit) of an Alexa Count, Percentage, Volume or Weight."""
    measure_type = json_str(measure, "@type") or ""
    value = _quantity(measure, "value")
    if value is None:
        raise DecodeError(f"Alexa {measure_type or 'measure'} has no value")
    if measure_type in _ALEXA_UNITLESS:
        unit = _ALEXA_UNITLESS[measure_type]
    elif measure_type in _ALEXA_WITH_UNIT:
        given = json_str(measure, "unit")
        if not given:
            raise DecodeError(f"Alexa {measure_type} has no unit")
        unit = given.lower()
    else:
        raise DecodeError(
            f"Alexa measure @type {measure_type[:20]!r} is not Count, Percentage, Volume or Weight"
        )
    if unit == "percent":
        _check_percentage(value)
    return value, unit


# Matter --------------------------------------------------------------------------------------


def _matter(document: Mapping[str, Any], device_id: str) -> ReorderReport:
    condition = _quantity(document, "condition")
    if condition is not None and condition > _PERCENT_FULL:
        raise DecodeError(f"condition {condition} is over 100 percent")
    degrades_up = _enum(document, "degradationDirection", _MATTER_DEGRADES_UP)
    level = _PERCENT_FULL - condition if condition is not None and degrades_up else condition
    return ReorderReport(
        device_id=device_id,
        observed_at=json_time(document, "time"),
        slot=json_str(document, "slot") or json_str(document, "cluster") or _DEFAULT_MATTER_SLOT,
        kind="level",
        level=level,
        unit="percent" if level is not None else None,
        indication=_enum(document, "changeIndication", _MATTER_INDICATIONS),
        replacement_gtins=_replacement_gtins(document),
    )


def _replacement_gtins(document: Mapping[str, Any]) -> tuple[str, ...] | None:
    products = document.get("replacementProductList")
    if products is None:
        return None
    gtins: list[str] = []
    for product in json_object_list(document, "replacementProductList"):
        kind = _enum_key(product.get("productIdentifierType"))
        value = json_str(product, "productIdentifierValue") or ""
        if kind in _MATTER_GTIN_TYPES:
            gtins.append(gtin14(value))
        elif kind not in _MATTER_OEM_TYPES:
            raise DecodeError(
                f"productIdentifierType {str(kind)[:20]!r} is not UPC, GTIN8, EAN, GTIN14 or OEM"
            )
    return tuple(gtins)


def _enum_key(value: object) -> object:
    """A Matter enum value as the tables key it: a number, or its name in lower case without
    separators (``GTIN-14``, ``Gtin14`` and ``gtin14`` alike)."""
    if isinstance(value, str):
        return value.lower().replace("-", "").replace("_", "")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return json_type(value)


def _enum(
    document: Mapping[str, Any], key: str, values: Mapping[object, _EnumValue]
) -> _EnumValue | None:
    raw = document.get(key)
    if raw is None:
        return None
    value = values.get(_enum_key(raw))
    if value is None:
        raise DecodeError(f"{key} {str(raw)[:20]!r} is not one of {sorted(map(str, values))}")
    return value


# JSON ----------------------------------------------------------------------------------------


def _check_percentage(value: float | None) -> None:
    if value is not None and value > _PERCENT_FULL:
        raise DecodeError(f"percentage {value} is over 100")


def _quantity(document: Mapping[str, Any], key: str) -> float | None:
    value = json_number(document, key)
    if value is not None and value < 0:
        raise DecodeError(f"{key} {value} is negative")
    return value


# --- the debounce state machine ------------------------------------------------------------


class SlotConfig(BaseModel):
    """When one device's slot needs a reorder, and of what."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    device_id: str
    slot: str
    threshold: float = Field(ge=0)  # at or below: low, in the unit the device reports
    rearm_level: float  # above: refilled; between the two, a request stays outstanding
    gtin: str | None = None  # the product to reorder; else the device's first replacement
    capacity: float | None = Field(default=None, gt=0)  # a full slot, for usage reports
    debounce_reports: int = Field(default=AMAZON_DEBOUNCE_REPORTS, ge=1)

    @field_validator("gtin")
    @classmethod
    def _gtin14(cls, gtin: str | None) -> str | None:
        return gtin14(gtin) if gtin is not None else None

    @model_validator(mode="after")
    def _rearm_not_below_threshold(self) -> SlotConfig:
        if self.rearm_level < self.threshold:
            raise ValueError("rearm_level must not be below threshold (it would flap)")
        # A usage-only device's level never rises above capacity (refill sets it there), so a
        # rearm level at or above it would leave a reorder request outstanding for ever.
        if self.capacity is not None and self.capacity <= self.rearm_level:
            raise ValueError("capacity must be above rearm_level (a refill could not clear)")
        return self


class SlotState(BaseModel):
    """What the tracker remembers of one slot between reports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    slot: str
    level: float | None = None  # the last known level (reported, or computed from usage)
    low_reports: int = Field(default=0, ge=0)  # consecutive reports at or below threshold
    requested: bool = False  # a reorder request is outstanding
    gtin: str | None = None  # the device's first replacement product, when it named one
    updated_at: datetime | None = None


class ReorderTracker:
    """Debounced reorder requests for the configured slots; pure (time is passed in)."""

    def __init__(self, configs: Iterable[SlotConfig], states: Iterable[SlotState] = ()) -> None:
        self._configs = {(config.device_id, config.slot): config for config in configs}
        self._states = {
            (state.device_id, state.slot): state
            for state in states
            if (state.device_id, state.slot) in self._configs  # a slot no longer configured
        }

    @classmethod
    def from_dict(cls, configs: Iterable[SlotConfig], data: Mapping[str, Any]) -> ReorderTracker:
        """A tracker restored from :meth:`to_dict`; raises ValueError on a corrupt value."""
        slots = data.get("slots", [])
        if not isinstance(slots, list):
            raise ValueError("reorder state: slots must be a list")
        return cls(configs, (SlotState.model_validate(slot) for slot in slots))

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-ready values."""
        return {"slots": [state.model_dump(mode="json") for state in self.states()]}

    def states(self) -> list[SlotState]:
        return sorted(self._states.values(), key=lambda state: (state.device_id, state.slot))

    def update(self, report: ReorderReport, now: datetime) -> list[ReorderEvent]:
        """The reorder events one report causes (none for a slot not configured)."""
        key = (report.device_id, report.slot)
        config = self._configs.get(key)
        if config is None:
            return []
        state = self._states.get(key) or SlotState(device_id=report.device_id, slot=report.slot)
        if report.replacement_gtins:
            state = state.model_copy(update={"gtin": report.replacement_gtins[0]})
        level = self._level(report, config, state)
        if level is None and report.indication is None:
            if report.replacement_gtins:  # telemetry only, but keep the product it names
                self._states[key] = state
            return []
        return self._step(config, state, level, report, now)

    def refill(self, device_id: str, slot: str, now: datetime) -> list[ReorderEvent]:
        """The slot was refilled (a usage-only device cannot say so): full ``capacity``."""
        config = self._configs.get((device_id, slot))
        if config is None or config.capacity is None:
            return []
        report = ReorderReport(device_id=device_id, slot=slot, kind="level", level=config.capacity)
        state = self._states.get((device_id, slot)) or SlotState(device_id=device_id, slot=slot)
        return self._step(config, state, config.capacity, report, now)

    @staticmethod
    def _level(report: ReorderReport, config: SlotConfig, state: SlotState) -> float | None:
        if report.kind == "level":
            return report.level
        if config.capacity is None or report.level is None:
            return None
        start = state.level if state.level is not None else config.capacity
        return max(0.0, start - report.level)

    def _step(
        self,
        config: SlotConfig,
        state: SlotState,
        level: float | None,
        report: ReorderReport,
        now: datetime,
    ) -> list[ReorderEvent]:
        if level is not None:
            low, refilled = level <= config.threshold, level > config.rearm_level
        else:
            low, refilled = report.indication in _LOW_INDICATIONS, report.indication == "ok"
        events: list[ReorderEvent] = []
        low_reports = state.low_reports + 1 if low else 0
        requested = state.requested
        event_type: type[ReorderEvent] | None = None
        if requested and refilled:
            requested, low_reports, event_type = False, 0, ReorderCleared
        elif not requested and low_reports >= config.debounce_reports:
            requested, event_type = True, ReorderRequested
        if event_type is not None:
            events.append(
                event_type(
                    device_id=config.device_id,
                    observed_at=report.observed_at,
                    slot=config.slot,
                    level=level,
                    unit=report.unit if report.kind == "level" else None,
                    gtin=config.gtin or state.gtin,
                )
            )
        self._states[(config.device_id, config.slot)] = state.model_copy(
            update={
                "level": level if level is not None else state.level,
                "low_reports": low_reports,
                "requested": requested,
                "updated_at": now,
            }
        )
        return events
