"""The command line's own surface: the version, help when nothing is asked, and one line per
failure that says what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.localbroker import free_port

ADVERT = "0201061aff4c0002154142434445464748494041424344454600010002f8"  # an iBeacon

runner = CliRunner()


def test_version_names_the_installed_distribution() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"lantern {version('lantern-gateway')}\n"


def test_no_command_lists_the_commands() -> None:
    result = runner.invoke(app, [])
    for command in ("run", "demo", "decode", "record", "rules"):
        assert command in result.output


def lantern(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own, as a technician types it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**environment, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "stdin", "line"),
    [
        (
            ["decode", "--topic", "lantern/store-1/scanner/till-1"],
            "9501101531001",
            "error: check digit: expected 0, got 1",
        ),
        (
            ["decode", "--topic", "lantern/store-1/scanner/till-1", "-f", "missing.txt"],
            "",
            "error: missing.txt: No such file or directory",
        ),
        (["decode", "--adv", "nothex"], "", "error: the advertisement is not hex"),
    ],
)
def test_every_failure_is_one_line_and_nothing_is_left_behind(
    tmp_path: Path, args: list[str], stdin: str, line: str
) -> None:
    result = lantern(*args, cwd=tmp_path, stdin=stdin)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")
    assert list(tmp_path.iterdir()) == []  # no key, no data folder, nothing


def test_decode_writes_no_key_where_it_runs(tmp_path: Path) -> None:
    result = lantern("decode", "--adv", ADVERT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []  # no lantern-data/privacy.key in the current folder


def test_a_bad_environment_variable_is_named(tmp_path: Path) -> None:
    result = lantern("run", cwd=tmp_path, env={"LANTERN_MQTT__KEEPALIVE_S": "1"})
    assert result.returncode == 2
    assert result.stderr == (
        "config error: LANTERN_MQTT__KEEPALIVE_S: mqtt.keepalive_s:"
        " Input should be greater than or equal to 5\n"
    )
    result = lantern("run", cwd=tmp_path, env={"LANTERN_MQTT_URL": "http://x"})
    assert result.stderr.startswith("config error: LANTERN_MQTT_URL: mqtt.url: must look like")


def test_record_against_an_unreachable_broker_fails_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = lantern(
        "record",
        "--out",
        "today.jsonl",
        cwd=tmp_path,
        env={"LANTERN_MQTT_URL": f"mqtt://127.0.0.1:{port}", "LANTERN_DATA_DIR": "data"},
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " WARNING " not in line]
    assert errors == [
        f"error: mqtt.url: cannot reach the broker at 127.0.0.1:{port} (cannot connect:"
        " Connection refused)"
    ]
