"""The pipeline without I/O: redelivery dedup and legitimate repeats."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.config import DEFAULT_SOURCES
from gateway.events import IdGenerator
from gateway.mqtt import Inbound
from gateway.pipeline import DedupWindow, Pipeline
from gateway.privacy import Pseudonymizer
from gateway.router import Router, default_decoders

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def pipeline(window: int = 1000) -> Pipeline:
    return Pipeline(
        "s1",
        Router(DEFAULT_SOURCES, "s1", default_decoders()),
        Pseudonymizer(b"k" * 32),
        IdGenerator(),
        65536,
        DedupWindow(window),
    )


def scan(mid: int, dup: bool, code: str = "9501101531000") -> Inbound:
    return Inbound("lantern/s1/scanner/till-1", code.encode(), 1, mid, dup, NOW, 1)


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
