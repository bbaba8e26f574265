from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.localbroker import BROKER_TUNING
from lantern.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_with_no_file_and_the_short_variables() -> None:
    settings = load_settings(
        None,
        environ={},
    )
    assert settings.store_id == "store-1"
    assert settings.http_sink.url is None


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "store.yaml"
    config.write_text(
        "store_id: from-file\nmqtt: {url: 'mqtt://file:1883'}\noutbox: {batch_max_ms: 80}\n"
    )
    monkeypatch.setenv("LANTERN_MQTT_URL", "mqtt://user:p%40ss@broker.local:1884")
    monkeypatch.setenv("LANTERN_FORWARD_URL", "https://record.example/events")
    monkeypatch.setenv("LANTERN_OUTBOX__BATCH_MAX_MS", "7")
    settings = load_settings(config)
    assert settings.store_id == "from-file"
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.local", 1884)
    assert (settings.mqtt.username, settings.mqtt.password) == ("user", "p@ss")
    assert settings.http_sink.url == "https://record.example/events"
    assert settings.outbox.batch_max_ms == 7


def test_every_problem_is_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "store.yaml"
    config.write_text(
        "store_id: 'bad id'\nmqtt: {url: 'http://x', keepalive_s: 1}\noutbox: {bogus: 1}\n"
        "timezone: Mars/Base\nhttp_sink: {url: 'ftp://x'}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    problems = caught.value.problems
    assert len(problems) == 6
    assert all(line.startswith(f"{config}: ") for line in problems)
    keys = {line.split(": ")[1] for line in problems}
    assert keys == {
        "store_id",
        "mqtt.url",
        "mqtt.keepalive_s",
        "outbox.bogus",
        "timezone",
        "http_sink.url",
    }


@pytest.mark.parametrize("section", ["http_sink", "nats_sink", "mqtt_bridge_sink"])
def test_a_sinks_url_with_a_bad_port_is_refused_at_start(tmp_path: Path, section: str) -> None:
    scheme = {"http_sink": "https", "nats_sink": "nats", "mqtt_bridge_sink": "mqtts"}[section]
    config = tmp_path / "store.yaml"
    config.write_text(f"{section}: {{url: '{scheme}://central:abc'}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{config}: {section}.url: ") and "bad port" in problem


def test_an_invalid_config_stops_lantern_run_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "store.yaml"
    config.write_text("mqtt: {url: 'nonsense'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"config error: {config}: mqtt.url: must look like mqtt://[user:pass@]host:port"
        " (mqtts:// for TLS)"
    )


def test_the_store_box_broker_config_carries_the_tested_tuning() -> None:
    shipped = (REPO / "systemd" / "mosquitto-lantern.conf").read_text()
    assert BROKER_TUNING in shipped


def test_the_device_registry_gives_slots_their_device_and_names_bad_keys(tmp_path: Path) -> None:
    config = tmp_path / "store.yaml"
    config.write_text(
        "devices:\n"
        "  - {id: coffee-1, slots: [{slot: pods, threshold: 10, rearm_level: 40}]}\n"
        "  - {id: printer-1, expected_interval_s: null}\n"
    )
    settings = load_settings(config, environ={})
    assert settings.devices[0].slots[0].device_id == "coffee-1"
    assert settings.devices[1].expected_interval_s is None

    config.write_text(
        "devices:\n"
        "  - {id: coffee-1, slots: [{slot: pods, threshold: 10, rearm_level: 5}]}\n"
        "  - {id: fridge-1, slots: [{slot: milk, threshold: 1, rearm_level: 2, gtin: '123'}]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [
        f"{config}: devices.0.slots.0: rearm_level must not be below threshold (it would flap)",
        f"{config}: devices.1.slots.0.gtin: not a GTIN (8, 12, 13 or 14 digits): '123'",
    ]


def test_zones_presence_and_rules_are_validated_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "store.yaml"
    config.write_text(
        "zones:\n"
        "  - {id: bakery, scanners: [bakery]}\n"
        "  - {id: aisle-1, polygon: [[0, 0], [20, .nan], [20, 4]]}\n"
        "presence: {away_timeout_s: .inf, switch_margin_m: -1}\n"
        "rules: {trace_capacity: 10}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    keys = sorted(line.split(": ")[1] for line in caught.value.problems)
    assert keys == [
        "presence.away_timeout_s",
        "presence.switch_margin_m",
        "rules.trace_capacity",
        "zones.1.polygon.1.1",
    ]

    config.write_text(
        "zones:\n  - {id: bakery, scanners: [bakery]}\n  - {id: bakery, scanners: [oven]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [f"{config}: zones: id listed twice: bakery"]
