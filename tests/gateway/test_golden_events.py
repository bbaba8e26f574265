"""The pipeline makes exactly the events it made when the golden file was written: every body
byte for byte, every dead letter's reason (tests/golden.py says what goes in)."""

from __future__ import annotations

from tests.golden import GOLDEN_FILE, golden_lines


def test_the_pipeline_makes_the_golden_events_byte_for_byte() -> None:
    # Split on newlines only: an event may carry U+2028, which splitlines() also splits on.
    expected = GOLDEN_FILE.read_text(encoding="utf-8").split("\n")[:-1]
    made = list(golden_lines())
    for number, (want, got) in enumerate(zip(expected, made, strict=False), start=1):
        assert got == want, f"{GOLDEN_FILE.name} line {number} differs"
    assert len(made) == len(expected), f"{len(made)} lines made, {len(expected)} in the file"
