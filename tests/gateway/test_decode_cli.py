"""``lantern decode``: a technician decodes one payload or advertisement as the gateway would."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gateway.cli import app
from tests.fixture_files import load_json, load_jsonl

runner = CliRunner()


def decode(tmp_path: Path, *args: str, stdin: str | bytes | None = None) -> Result:
    return runner.invoke(
        app,
        ["decode", *args],
        input=stdin,
        env={"LANTERN_DATA_DIR": str(tmp_path), "LANTERN_STORE_ID": "s1"},
    )


def events(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_an_espresense_sighting_from_stdin_is_pseudonymised(tmp_path: Path) -> None:
    (sighting,) = [
        line for line in load_jsonl("espresense.jsonl") if '"mac"' in json.dumps(line["payload"])
    ][:1]
    mac = sighting["payload"]["mac"]
    result = decode(tmp_path, "--topic", sighting["topic"], stdin=json.dumps(sighting["payload"]))
    (event,) = events(result)
    assert event["type"] == "lantern.presence.sighted"
    assert event["source"] == "/stores/s1/devices/office"
    spellings = {mac.lower(), ":".join(re.findall("..", mac.lower()))}
    assert not any(spelling in result.stdout.lower() for spelling in spellings)


def test_a_scan_from_a_file_and_a_wrong_check_digit(tmp_path: Path) -> None:
    scans = load_json("gs1_scans.json")
    good, wrong = scans[0], scans[-1]
    scan_file = tmp_path / "scan.txt"
    scan_file.write_text(good["scan"])
    (event,) = events(
        decode(tmp_path, "--topic", "lantern/s1/scanner/till-1", "--file", str(scan_file))
    )
    assert event["data"]["gtin"] == good["expect"]["gtin"]
    assert event["data"]["ai"] == good["expect"]["ai"]

    result = decode(tmp_path, "--topic", "lantern/s1/scanner/till-1", stdin=wrong["scan"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: {wrong['expect']['error']}"


@pytest.mark.parametrize("advert", load_json("ble_adverts.json"), ids=lambda a: a["name"])
def test_every_fixture_advertisement_decodes_to_its_fields(
    tmp_path: Path, advert: dict[str, Any]
) -> None:
    (event,) = events(decode(tmp_path, "--adv", advert["adv_hex"]))
    beacon = event["data"]["beacon"]
    assert {key: beacon.get(key) for key in advert["expect"]} == advert["expect"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--adv", "not hex"], "error: the advertisement is not hex"),
        (["--adv", "020106"], "error: no beacon frame"),
        ([], "error: give exactly one of --topic or --adv"),
        (["--adv", "00", "--topic", "x"], "error: give exactly one of --topic or --adv"),
        (["--topic", "nobody/listens/here"], "error: no configured source matches"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    tmp_path: Path, args: list[str], error: str
) -> None:
    result = decode(tmp_path, *args, stdin="{}")
    assert result.exit_code == 2
    assert result.stderr.startswith(error), result.stderr
