"""``lantern rules test``: replay a recording through the decoders, presence and rules.

The same pipeline as live (decode, pseudonymise, device health, reorder debounce, presence,
rules), with the clock driven by each line's ``t``: the time-driven steps (presence exits and
dwell, silent devices) tick once a second of recording time, as live. Pseudonyms use a fixed
key and event ids a seeded generator, so the same recording always gives the same output.

Output, one JSON object a line: ``{"kind": "event", ...CloudEvent}`` for each derived event,
``{"kind": "action", "rule", "type", "visitor", "topic", "payload"}`` for each action (an
``emit`` has no topic: its payload is the event's data, and it carries its ``event_type``),
``{"kind": "trace", ...}`` for each evaluation of the rule given to ``--explain``, right
after the lines of the message or tick that caused it, then ``{"kind": "summary", "rule",
...}`` per rule with its count of each outcome.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.batch import Inbound
from gateway.build import build
from gateway.config import Settings
from gateway.events import ACTION_PUBLISH_TYPE, IdGenerator
from gateway.pipeline import DedupWindow, Processed
from gateway.privacy import Pseudonymizer
from lantern.errors import RecordingError
from rules.engine import Action, RuleEngine
from rules.model import RuleSet

__all__ = [
    "BACKTEST_ID_SEED",
    "BACKTEST_PSEUDONYM_KEY",
    "RecordedMessage",
    "backtest",
    "read_recording",
]

# Fixed, not secret: a recording's addresses are already stand-ins (gateway/record.py), and a
# fixed key is what makes two runs over one recording give the same pseudonyms.
BACKTEST_PSEUDONYM_KEY = b"lantern-backtest"
BACKTEST_ID_SEED = 0
_TICK = timedelta(seconds=1)  # as the live ingest loop ticks
# A tick can end many visits at once (each exit evaluated by every rule on exits), so the
# bound is generous; traces are taken after every step and never accumulate.
_TRACES_PER_STEP = 1_000_000
PROGRESS_EVERY_LINES = 10_000  # a few hundred milliseconds of replay
# What a decoder makes of a message itself; every other event is derived by a stage.
_OBSERVED_TYPES = frozenset(
    {"lantern.presence.sighted", "lantern.scan.read", "lantern.device.telemetry"}
)


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    line: int
    inbound: Inbound


def read_recording(lines: Iterable[str]) -> Iterator[RecordedMessage]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            at = datetime.fromisoformat(line["t"].replace("Z", "+00:00"))
            if at.tzinfo is None:
                raise ValueError("t has no time zone")
            if "payload_b64" in line:
                payload = base64.b64decode(line["payload_b64"], validate=True)
            else:
                payload = str(line["payload"]).encode("utf-8")
            inbound = Inbound.recorded(str(line["topic"]), payload, int(line.get("qos", 1)), at)
        except KeyError as exc:
            raise RecordingError(f"line {number}: no {exc.args[0]!r}") from None
        except json.JSONDecodeError as exc:
            raise RecordingError(f"line {number}: not JSON ({exc})") from None
        except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
            raise RecordingError(f"line {number}: {exc}") from None
        yield RecordedMessage(number, inbound)


def backtest(
    settings: Settings,
    rules: RuleSet,
    lines: Iterable[str],
    explain: str | None = None,
    on_progress: Callable[[int, datetime], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """The output objects, in order; RecordingError on a malformed line. ``on_progress`` is
    told the line number and recording time every ``PROGRESS_EVERY_LINES`` lines."""
    actions: list[Action] = []
    wiring = build(
        settings,
        rules,
        Pseudonymizer(BACKTEST_PSEUDONYM_KEY),
        IdGenerator(random.Random(BACKTEST_ID_SEED)),
        DedupWindow(settings.outbox.dedup_window_messages),
        on_action=actions.append,
        trace_capacity=_TRACES_PER_STEP,
    )
    pipeline, engine = wiring.pipeline, wiring.rules.engine
    next_tick: datetime | None = None
    for message in read_recording(lines):
        at = message.inbound.received_at
        next_tick = next_tick or at + _TICK
        while next_tick <= at:
            yield from _output(pipeline.tick(next_tick), actions)
            yield from _explained(engine, explain)
            next_tick += _TICK
        yield from _output(pipeline.process([message.inbound]), actions)
        yield from _explained(engine, explain)
        if on_progress is not None and message.line % PROGRESS_EVERY_LINES == 0:
            on_progress(message.line, at)
    summary = engine.summary()
    for rule in sorted(rules.ids()):
        yield {"kind": "summary", "rule": rule, **summary.get(rule, {})}


def _explained(engine: RuleEngine, explain: str | None) -> Iterator[dict[str, Any]]:
    """The explained rule's traces since the last step, after the output they explain."""
    for trace in engine.take_traces():
        if trace.rule == explain:
            yield {"kind": "trace", **trace.as_json()}


def _output(processed: Processed, actions: list[Action]) -> Iterator[dict[str, Any]]:
    for row in processed.batch.events:
        if row.type not in _OBSERVED_TYPES and row.type != ACTION_PUBLISH_TYPE:
            yield {"kind": "event", **json.loads(row.body)}
    for action in actions:
        line: dict[str, Any] = {
            "kind": "action",
            "rule": action.rule,
            "type": action.type,
            "visitor": action.visitor,
        }
        if action.type == "publish":
            line |= {"topic": action.topic, "payload": action.payload}
        else:  # an emit goes to the central record, not to a topic
            line |= {"topic": None, "payload": action.data, "event_type": action.event_type}
        yield line
    actions.clear()
