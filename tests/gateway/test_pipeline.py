"""The pipeline without I/O: one forward pass, redelivery dedup, legitimate repeats, and the
device boundary."""

from __future__ import annotations

import json
import logging
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devices.model import Message, Observation
from gateway.batch import Inbound
from gateway.build import build
from gateway.config import DEFAULT_SOURCES
from gateway.events import ACTION_PUBLISH_TYPE, EventFactory, IdGenerator
from gateway.pipeline import DedupWindow, Pipeline
from gateway.privacy import Pseudonymizer
from gateway.router import Router
from rules.model import parse_rules
from tests.helpers import make_settings

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
MEMBER = "iBeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-100-3"
ENTRY_RULE = """\
id: hello
when: {event: zone.entered, zone: bakery}
then:
  - publish: {topic: "store/s1/signage/bakery", payload: {hello: "{{ visitor.id }}"}}
"""


def pipeline(window: int = 1000) -> Pipeline:
    return build(
        make_settings(Path("unused"), "mqtt://127.0.0.1:1883"),
        parse_rules({"hello.yaml": ENTRY_RULE}),
        Pseudonymizer(b"k" * 32),
        IdGenerator(),
        DedupWindow(window),
    ).pipeline


def scan(mid: int, dup: bool, code: str = "9501101531000") -> Inbound:
    return Inbound.delivered("lantern/s1/scanner/till-1", code.encode(), 1, mid, dup, NOW, 1)


def test_a_redelivered_committed_message_is_acked_without_a_second_event() -> None:
    steps = pipeline()
    first = steps.process([scan(1, dup=False)])
    again = steps.process([scan(1, dup=True)])
    assert len(first.batch.events) == 1
    assert again.batch.events == []
    assert again.duplicates == 1
    assert [inbound.mid for inbound in again.to_ack] == [1]


def test_a_legitimate_repeat_without_dup_is_a_new_event() -> None:
    steps = pipeline()
    steps.process([scan(1, dup=False)])
    repeat = steps.process([scan(2, dup=False)])
    assert len(repeat.batch.events) == 1


def test_a_dup_whose_original_never_committed_is_processed() -> None:
    redelivered = pipeline().process([scan(7, dup=True)])
    assert len(redelivered.batch.events) == 1
    assert len(redelivered.batch.digests) == 1


def test_the_dedup_window_forgets_the_oldest_digests() -> None:
    window = DedupWindow(2)
    for digest in (b"a", b"b", b"c"):
        window.add(digest)
    assert b"a" not in window
    assert b"b" in window and b"c" in window


def test_each_cause_is_followed_by_what_it_caused_and_a_rule_names_the_real_id() -> None:
    """One forward pass: a sighting, the zone entry it causes, the action the entry fires; a
    second sighting after them. The trace of the rule names the zone entry's own id."""
    wiring = build(
        make_settings(
            Path("unused"),
            "mqtt://127.0.0.1:1883",
            zones=[{"id": "bakery", "scanners": ["bakery"]}],
        ),
        parse_rules({"hello.yaml": ENTRY_RULE}),
        Pseudonymizer(b"k" * 32),
        IdGenerator(),
        DedupWindow(10),
    )
    sighting = json.dumps({"id": MEMBER, "rssi": -60.0, "distance": 1.5}).encode()
    messages = [
        Inbound.local(f"espresense/devices/{MEMBER}/bakery", sighting, NOW),
        Inbound.local("lantern/s1/scanner/till-1", b"9501101531000", NOW),
    ]
    rows = wiring.pipeline.process(messages).batch.events
    assert [row.type for row in rows] == [
        "lantern.presence.sighted",
        "lantern.zone.entered",
        ACTION_PUBLISH_TYPE,
        "lantern.scan.read",
    ]
    assert len({row.id for row in rows}) == 4
    (trace,) = wiring.rules.engine.traces()
    assert (trace.outcome, trace.event_id) == ("fired", rows[1].id)
    assert sorted(row.id for row in rows) == [row.id for row in rows]  # time-ordered ids


def _broken_decoder(message: Message) -> list[Observation] | None:
    raise RecursionError("maximum recursion depth exceeded while decoding a JSON object")


def test_a_decoder_bug_is_a_dead_letter_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = Pipeline(
        Router(DEFAULT_SOURCES, "s1", {"barcode": _broken_decoder}),
        Pseudonymizer(b"k" * 32),
        EventFactory("s1", IdGenerator()),
        65536,
        DedupWindow(1000),
    )
    with caplog.at_level(logging.WARNING):
        processed = steps.process([scan(mid, dup=False, code=f"{mid}") for mid in range(107)])
    assert len(processed.batch.dead_letters) == 107
    (record,) = caplog.records  # once, with the traceback for whoever fixes the decoder
    assert record.exc_info is not None
    assert "barcode: decoder failure" in record.getMessage()
    reason = processed.batch.dead_letters[0].reason
    assert reason.startswith("decoder failure: RecursionError: maximum recursion depth")
    assert steps.dead_letters_by_kind == {"barcode: decoder failure": 107}


def test_ids_are_uuidv7_and_strictly_increasing_past_4096_in_a_millisecond() -> None:
    ids = IdGenerator()
    made = [ids.next_id(NOW) for _ in range(10_000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    parsed = [uuid.UUID(text) for text in made]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert parsed[0].int >> 80 == int(NOW.timestamp() * 1000)  # the millisecond comes first
    assert ids.next_id(NOW - timedelta(seconds=5)) > made[-1]  # a clock stepping back


def test_live_generators_draw_apart_and_a_seeded_one_repeats_itself() -> None:
    assert IdGenerator().next_id(NOW) != IdGenerator().next_id(NOW)
    first, again = (IdGenerator(random.Random(7)) for _ in range(2))
    assert [first.next_id(NOW) for _ in range(5)] == [again.next_id(NOW) for _ in range(5)]


def test_a_string_no_event_can_carry_is_a_dead_letter_and_the_batch_goes_on() -> None:
    """JSON lets a device send a lone surrogate ("\\ud800"); it cannot be written as UTF-8,
    so its message is refused at the decoder instead of failing the batch's encoding."""
    telemetry = Inbound.local("espresense/rooms/bakery/telemetry", b'{"note": "\\ud800"}', NOW)
    processed = pipeline().process([telemetry, scan(1, dup=False)])
    (letter,) = processed.batch.dead_letters
    assert letter.reason == "ESPresense telemetry has a lone UTF-16 surrogate (\\ud800-\\udfff)"
    assert [row.type for row in processed.batch.events] == ["lantern.scan.read"]
