"""The console API's response and request models, as /openapi.json publishes them.

Models of what StatusView returns allow extra fields: a part that grows a field (a sink's
state, a new section of the status) shows it in the API without a change here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rules.engine import Trace

__all__ = [
    "BacktestRequest",
    "BacktestResult",
    "DeadLetter",
    "Device",
    "Draft",
    "Problem",
    "Problems",
    "Ready",
    "RuleInfo",
    "StatusDocument",
    "Trace",
    "Woken",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Ready(BaseModel):
    ready: bool
    reasons: list[str] = Field(description="why not, one reason a line; empty when ready")


class Device(_Open):
    device_id: str
    online: bool
    offline_reason: str | None = Field(description="'last will' or 'silent', while offline")
    last_seen: str = Field(description="ISO 8601, UTC")
    silent_since: str | None
    silent_for_s: float
    expected_interval_s: float | None
    battery_pct: float | None
    battery_mv: float | None
    low_battery: bool
    health: dict[str, Any]


class DeadLetter(_Open):
    received_at: str
    topic: str
    kind: str
    reason: str
    payload_preview: str = Field(description="the start of the payload, identities masked")
    payload_bytes: int


class Mqtt(_Open):
    broker: str
    connected: bool
    last_error: str | None


class Outbox(_Open):
    depth: int
    oldest_pending_age_s: float | None


class Zone(_Open):
    id: str
    name: str
    scanners: list[str]
    polygon: list[list[float]] | None
    occupancy: int


class RulesStatus(_Open):
    dir: str | None
    count: int
    reloads: int
    reload_error: list[str]
    summary: list[dict[str, Any]]
    occupancy: dict[str, int]


class StatusDocument(_Open):
    store_id: str
    time: str
    timezone: str
    ready: bool
    not_ready: list[str]
    counters: dict[str, Any]
    mqtt: Mqtt
    outbox: Outbox
    sinks: list[dict[str, Any]]
    messages_by_family: dict[str, int]
    dead_letters_by_kind: dict[str, int]
    recent_dead_letters: list[DeadLetter]
    devices: list[Device]
    zones: list[Zone]
    presence_visitors: int
    rules: RulesStatus
    recent_rule_outcomes: list[dict[str, Any]]


class Woken(BaseModel):
    sink: str
    woken: bool


class RuleInfo(BaseModel):
    id: str
    file: str | None = Field(description="the rule's file in the rules folder")
    description: str
    enabled: bool
    event: str
    outcomes: dict[str, int] = Field(description="outcome -> count since the rule was loaded")
    source: str | None = Field(description="the file's YAML, as the editor shows it")


class Problem(BaseModel):
    file: str
    field: str
    message: str


class Problems(BaseModel):
    ok: bool
    problems: list[Problem]
    rules: int | None = Field(None, description="rules in the set, when it is valid")


class Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(max_length=200)
    text: str = Field(max_length=100_000, description="the rule's YAML")


class BacktestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recording: str = Field(max_length=255, description="a name from GET /api/recordings")
    draft: Draft | None = Field(None, description="a rule to try; else the running set")
    explain: str | None = Field(
        None, max_length=200, description="trace this rule (default: the draft's)"
    )


class BacktestResult(BaseModel):
    lines: list[dict[str, Any]] = Field(description="what lantern rules test prints, in order")
    truncated: bool = Field(description="lines were left out (the summaries never are)")
