"""``lantern rules test`` and ``lantern rules check`` on the shipped examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from firmware_stubs.scenarios import SCENARIOS, recording
from gateway import backtest as backtest_module
from gateway.backtest import backtest
from gateway.cli import app
from gateway.config import Settings
from rules.engine import RuleEngine, Trigger
from rules.model import parse_rules

EXAMPLES = Path(__file__).parents[2] / "gateway" / "examples"
STORE = EXAMPLES / "store.yaml"
RULES = EXAMPLES / "rules"
MEMBER = "ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-100-3"

runner = CliRunner()


def invoke_rules_test(recording_path: Path, *extra: str) -> Result:
    return runner.invoke(
        app,
        [
            "rules",
            "test",
            "--config",
            str(STORE),
            "--rules",
            str(RULES),
            "--recording",
            str(recording_path),
            *extra,
        ],
    )


def rules_test(recording_name: str, *extra: str) -> list[dict[str, Any]]:
    result = invoke_rules_test(EXAMPLES / "recordings" / recording_name, *extra)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def of_kind(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["kind"] == kind]


def summary(lines: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    (line,) = [line for line in of_kind(lines, "summary") if line["rule"] == rule]
    return line


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_committed_recordings_are_what_the_scenarios_make(name: str) -> None:
    committed = (EXAMPLES / "recordings" / name).read_text(encoding="utf-8").splitlines()
    assert committed == recording(name)


def test_the_coffee_offer_fires_once_for_the_member_in_the_morning() -> None:
    lines = rules_test("coffee-pods.jsonl")
    actions = of_kind(lines, "action")
    assert actions == [
        {
            "kind": "action",
            "rule": "coffee-pods-offer",
            "type": "publish",
            "visitor": MEMBER,
            "topic": "store/demo-store/signage/coffee-aisle",
            "payload": {"offer": "pods-10", "visitor": MEMBER},
        },
        {
            "kind": "action",
            "rule": "coffee-pods-offer",
            "type": "emit",
            "visitor": MEMBER,
            "topic": None,
            "payload": {"offer": "pods-10"},
            "event_type": "lantern.offer.triggered",
        },
    ]
    (offer,) = [e for e in of_kind(lines, "event") if e["type"] == "lantern.offer.triggered"]
    assert offer["subject"] == MEMBER
    coffee = summary(lines, "coffee-pods-offer")
    assert coffee["fired"] == 1
    assert coffee["limited"] == 1  # the member's second linger: one offer a day
    assert coffee["condition_false"] == 1  # the passer-by is not a loyalty member
    dwelled = [e for e in of_kind(lines, "event") if e["type"] == "lantern.zone.dwelled"]
    assert {e["data"]["zone"] for e in dwelled} == {"coffee-aisle"}


def test_pickup_arrival_notifies_the_staff_for_the_app_customer_only() -> None:
    lines = rules_test("pickup.jsonl")
    (action,) = of_kind(lines, "action")
    assert action["rule"] == "pickup-arrival"
    assert action["topic"] == "store/demo-store/staff/pickup"
    assert action["payload"]["visitor"] == MEMBER
    assert action["payload"]["message"] == "App customer at the Pick-up desk"
    assert action["payload"]["waiting"] == 1
    pickup = summary(lines, "pickup-arrival")
    assert (pickup["fired"], pickup["condition_false"]) == (1, 1)


def test_a_reorder_request_becomes_a_staff_notice_and_a_central_event() -> None:
    lines = rules_test("reorder.jsonl")
    types = [e["type"] for e in of_kind(lines, "event")]
    assert "lantern.reorder.requested" in types
    assert types.index("lantern.reorder.requested") < types.index("lantern.reorder.cleared")
    notice, emitted = of_kind(lines, "action")
    assert notice["topic"] == "store/demo-store/staff/notices"
    assert notice["payload"] == {
        "device": "coffee-machine-1",
        "slot": "pods",
        "gtin": "07612100055557",
        "message": "Refill pods on coffee-machine-1",
    }
    assert emitted["event_type"] == "lantern.staff.notified"
    (event,) = [e for e in of_kind(lines, "event") if e["type"] == "lantern.staff.notified"]
    assert event["data"]["rule"] == "reorder-notice"


def test_a_wifi_visitors_aisle_path_gives_dwell_reports() -> None:
    lines = rules_test("wifi-path.jsonl")
    reports = [e for e in of_kind(lines, "event") if e["type"] == "lantern.aisle.dwell_reported"]
    assert [report["data"]["zone"] for report in reports] == ["aisle-1", "aisle-2", "aisle-3"]
    assert [report["data"]["dwell_s"] for report in reports] == [30.0, 40.0, 15.0]  # numbers
    assert all(report["subject"].startswith("p-") for report in reports)  # a pseudonym
    assert summary(lines, "aisle-dwell-report")["fired"] == 3


def test_the_same_recording_always_gives_the_same_output() -> None:
    first = rules_test("coffee-pods.jsonl", "--explain", "coffee-pods-offer")
    assert first == rules_test("coffee-pods.jsonl", "--explain", "coffee-pods-offer")
    traces = of_kind(first, "trace")
    assert {trace["outcome"] for trace in traces} >= {"fired", "limited", "condition_false"}
    assert all(trace["rule"] == "coffee-pods-offer" for trace in traces)
    # Each trace names the event it judged, as the central record will know it.
    dwelled = {e["id"] for e in of_kind(first, "event") if e["type"] == "lantern.zone.dwelled"}
    assert {trace["event_id"] for trace in traces} <= dwelled
    # ... and follows it in the output, before the next message's lines.
    position = {line.get("id"): index for index, line in enumerate(first)}
    for index, line in enumerate(first):
        if line["kind"] == "trace":
            assert position[line["event_id"]] < index


def test_rules_check_accepts_the_examples_and_names_each_problem(tmp_path: Path) -> None:
    result = runner.invoke(app, ["rules", "check", str(RULES)])
    assert result.exit_code == 0, result.output
    assert "ok: 4 rules" in result.stdout

    (tmp_path / "bad-cel.yaml").write_text(
        "id: bad-cel\nwhen: {event: zone.entered}\nif: 'visitor.segment == '\n"
        "then: [{emit: {type: lantern.x, data: {}}}]\n"
    )
    (tmp_path / "bad-when.yaml").write_text(
        "id: bad-when\nwhen: {event: zone.dwelled, dwell_at_least: soon}\n"
        "then: [{emit: {type: lantern.x, data: {}}}]\n"
    )
    result = runner.invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("error: bad-cel.yaml: if: ")
    assert errors[0].startswith("error: bad-cel.yaml: if: line 1, column 20: Syntax error")
    assert errors[1].startswith("error: bad-when.yaml: when.dwell_at_least: ")


def test_a_malformed_recording_line_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    good = recording("reorder.jsonl")[0]
    broken.write_text(good + "\n" + '{"topic": "x"}\n')
    result = invoke_rules_test(broken)
    assert result.exit_code == 2
    assert "line 2: no 't'" in result.stderr


def test_a_device_gone_silent_triggers_its_rule() -> None:
    settings = Settings(store_id="s1", devices=[{"id": "printer-1", "expected_interval_s": 60}])
    rules = parse_rules(
        {
            "offline.yaml": "id: offline-notice\nwhen: {event: device.offline}\nthen:\n"
            "  - emit: {type: lantern.staff.notified, data: {device: '{{ event.device }}'}}\n"
        }
    )
    start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    recording = [
        json.dumps(
            {
                "t": start.isoformat(),
                "topic": "lantern/s1/device/printer-1/status",
                "payload": "online",
            }
        ),
        json.dumps(
            {
                "t": (start + timedelta(minutes=5)).isoformat(),
                "topic": "lantern/s1/scanner/till-1",
                "payload": "]E00123601057072",
            }
        ),
    ]
    lines = list(backtest(settings, rules, recording))
    (offline,) = [e for e in of_kind(lines, "event") if e["type"] == "lantern.device.offline"]
    (notice,) = [e for e in of_kind(lines, "event") if e["type"] == "lantern.staff.notified"]
    assert notice["data"] == {"rule": "offline-notice", "device": "printer-1"}
    assert notice["id"] > offline["id"]  # the cause's id first
    assert summary(lines, "offline-notice")["fired"] == 1


def test_a_bug_in_the_rules_is_logged_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: RuleEngine, trigger: Trigger) -> list[object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(RuleEngine, "evaluate", broken)
    lines = rules_test("reorder.jsonl")
    types = [e["type"] for e in of_kind(lines, "event")]
    assert "lantern.reorder.requested" in types  # the events still commit
    assert of_kind(lines, "action") == []
    assert "rules failed on lantern.reorder.requested event" in caplog.text


def test_a_long_backtest_reports_its_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backtest_module, "PROGRESS_EVERY_LINES", 10)
    seen: list[tuple[int, datetime]] = []
    settings = Settings(**yaml.safe_load(STORE.read_text()))
    recorded = recording("coffee-pods.jsonl")
    list(backtest(settings, parse_rules({}), recorded, on_progress=lambda *at: seen.append(at)))
    assert [line for line, _ in seen] == list(range(10, len(recorded) + 1, 10))
    assert [at for _, at in seen] == sorted(at for _, at in seen)  # recording time moves on
