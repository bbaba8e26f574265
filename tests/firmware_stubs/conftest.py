"""The firmware stubs run here under CPython: the shims (shims/) stand in for MicroPython's
``machine``, ``network`` and ``umqtt.simple``, the MicroPython additions to ``time`` and ``gc``
are added for the test and removed after, and the board's clock is a fake the test advances
(``Board.clock.advance``) while the MQTT traffic goes to the real test Mosquitto."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.localbroker import Mosquitto
from tests.firmware_stubs.board import (
    BOARD_MODULES,
    FIRMWARE,
    FREE_HEAP_BYTES,
    SHIMS,
    Board,
    Clock,
    Listener,
    listen,
)


@pytest.fixture(scope="package")
def broker() -> Iterator[Mosquitto]:
    """A broker of their own: the stubs leave retained status messages behind, which would
    reach every gateway the other tests start on the session's broker."""
    if not Mosquitto.available():
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)")
    mosquitto = Mosquitto()
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def board(broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Board]:
    clock = Clock()
    for name in ("ticks_ms", "ticks_diff", "ticks_add", "sleep_ms"):
        monkeypatch.setattr(time, name, getattr(clock, name), raising=False)
    monkeypatch.setattr(gc, "mem_free", lambda: FREE_HEAP_BYTES, raising=False)
    monkeypatch.syspath_prepend(str(FIRMWARE))
    monkeypatch.syspath_prepend(str(SHIMS))
    monkeypatch.chdir(tmp_path)  # the board's filesystem: config.json, level.json
    for name in BOARD_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield Board(tmp_path, clock, broker)
    for name in BOARD_MODULES:
        sys.modules.pop(name, None)


@pytest.fixture
def listener(broker: Mosquitto, board: Board) -> Iterator[Listener]:
    with listen(broker) as listening:
        yield listening
