"""lantern check: one line per check against real brokers and real folders, exit 0 or 1."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway.check import check_broker
from gateway.cli import app
from gateway.config import MqttSettings
from gateway.localbroker import Mosquitto, free_port
from tests.boxbroker import BoxBroker

EXAMPLES = Path(__file__).resolve().parents[2] / "gateway" / "examples"
EXAMPLE_RULES = EXAMPLES / "rules"
# What the example rules name: the example store's zones, audiences and devices.
EXAMPLE_STORE = {
    key: yaml.safe_dump(value, default_flow_style=True).strip()
    for key, value in yaml.safe_load((EXAMPLES / "store.yaml").read_text()).items()
    if key in ("zones", "audiences", "devices")
}
runner = CliRunner()


@pytest.fixture(scope="module")
def box_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoxBroker]:
    broker = BoxBroker({"lantern": "gateway-secret"}, directory=tmp_path_factory.mktemp("broker"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("LANTERN_CONFIG", "LANTERN_MQTT_URL", "LANTERN_DATA_DIR"):
        monkeypatch.delenv(variable, raising=False)


def check(
    tmp_path: Path, url: str, rules: Path | None = None, **extra: str
) -> tuple[int, list[str]]:
    config = tmp_path / "store.yaml"
    lines = [
        "store_id: store-0042",
        f"data_dir: {tmp_path / 'data'}",
        f"mqtt: {{url: '{url}'}}",
        *(f"{key}: {value}" for key, value in extra.items()),
    ]
    if rules is not None:
        lines.append(f"rules: {{dir: {rules}}}")
    config.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["check", "--config", str(config)])
    return result.exit_code, result.stdout.splitlines()


def test_a_ready_box_passes_every_check(tmp_path: Path, broker: Mosquitto) -> None:
    code, lines = check(tmp_path, broker.url, rules=EXAMPLE_RULES, **EXAMPLE_STORE)
    assert code == 0, lines
    assert lines == [
        f"ok: config {tmp_path / 'store.yaml'}: store store-0042",
        f"ok: data_dir {tmp_path / 'data'}: does not exist yet, lantern run creates it",
        f"ok: rules {EXAMPLE_RULES}: 4 rules",
        f"ok: broker {broker.url}: accepted no user name (MQTT 5)",
    ]


def test_rules_naming_what_the_store_lacks_fail_as_lantern_run_would(
    tmp_path: Path, broker: Mosquitto
) -> None:
    code, lines = check(tmp_path, broker.url, rules=EXAMPLE_RULES)  # a store with no zones
    assert code == 1
    assert any(line.startswith("error: rules: ") and "coffee-aisle" in line for line in lines)


def test_the_configured_password_is_checked(tmp_path: Path, box_broker: BoxBroker) -> None:
    where = f"mqtt://127.0.0.1:{box_broker.port}"
    code, lines = check(tmp_path, f"mqtt://lantern:gateway-secret@127.0.0.1:{box_broker.port}")
    assert code == 0, lines
    assert lines[-1] == f"ok: broker {where}: accepted user lantern (MQTT 5)"

    code, lines = check(tmp_path, f"mqtt://lantern:wrong@127.0.0.1:{box_broker.port}")
    assert code == 1
    assert lines[-1].startswith(f"error: mqtt.url: the broker at {where} refused user lantern: ")
    assert lines[-1].endswith("(check the user name and password)")


def test_mqtt_3_1_1_is_checked_as_the_gateway_would_speak_it(
    tmp_path: Path, box_broker: BoxBroker
) -> None:
    url = f"mqtt://lantern:wrong@127.0.0.1:{box_broker.port}"
    code, lines = check(tmp_path, url, mqtt=f"{{url: '{url}', protocol: '3.1.1'}}")
    assert code == 1
    assert "refused user lantern" in lines[-1] and "user name and password" in lines[-1]


def test_an_unreachable_broker_names_mqtt_url(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    code, lines = check(tmp_path, f"mqtt://127.0.0.1:{port}")
    assert code == 1
    assert lines[-1] == (
        f"error: mqtt.url: cannot reach the broker at mqtt://127.0.0.1:{port}: Connection refused"
    )


def test_tls_to_a_plain_listener_says_so(tmp_path: Path, broker: Mosquitto) -> None:
    code, lines = check(tmp_path, f"mqtts://127.0.0.1:{broker.port}")
    assert code == 1
    assert lines[-1] == (
        f"error: mqtt.url: mqtts://127.0.0.1:{broker.port} closed the connection during the TLS"
        " handshake: is it a plain listener (mqtt://)?"
    )


def test_tls_is_verified_as_the_gateway_verifies_it(tmp_path: Path) -> None:
    """A broker whose certificate no system CA signed is refused, naming the certificate."""
    cert, key = tmp_path / "broker.crt", tmp_path / "broker.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = {"certfile": str(cert), "keyfile": str(key)}
    (tmp_path / "broker").mkdir()
    broker = BoxBroker({"lantern": "gateway-secret"}, tls, directory=tmp_path / "broker")
    broker.start()
    try:
        code, lines = check(tmp_path, f"mqtts://lantern:gateway-secret@127.0.0.1:{broker.port}")
    finally:
        broker.stop()
    assert code == 1
    assert lines[-1] == (
        f"error: mqtt.url: TLS with mqtts://127.0.0.1:{broker.port} failed: self-signed certificate"
    )


def test_a_bad_rules_folder_names_the_file_and_field(tmp_path: Path, broker: Mosquitto) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "offer.yaml").write_text(
        "id: offer\nwhen: {event: zone.entered}\nif: 'visitor.segment =='\n"
        "then: [{emit: {type: lantern.offer.triggered}}]\n"
    )
    code, lines = check(tmp_path, broker.url, rules=rules)
    assert code == 1
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: rules: {rules / 'offer.yaml'}: if: ")
    assert lines[-1].startswith("ok: broker ")  # the other checks still ran

    code, lines = check(tmp_path, broker.url, rules=tmp_path / "no-such-folder")
    assert code == 1
    assert f"error: rules: {tmp_path / 'no-such-folder'}: (folder): is not a folder" in lines


def test_an_invalid_config_is_one_line_per_problem(tmp_path: Path) -> None:
    code, lines = check(tmp_path, "nonsense", bogus="1")
    assert code == 1
    config = tmp_path / "store.yaml"
    assert lines == [
        f"error: config: {config}: mqtt.url: must look like mqtt://[user:pass@]host:port"
        " (mqtts:// for TLS)",
        f"error: config: {config}: bogus: unknown key",
    ]


def test_a_data_dir_it_cannot_write_is_named(tmp_path: Path, broker: Mosquitto) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, lines = check(tmp_path, broker.url, data_dir=str(blocker / "data"))
    assert code == 1
    assert f"error: data_dir: {blocker} is not a folder" in lines


def test_a_listener_that_never_answers_connect_times_out() -> None:
    with socket.socket() as silent:  # accepts TCP, never speaks MQTT
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        finding = check_broker(MqttSettings(url=f"mqtt://127.0.0.1:{port}"), timeout_s=0.5)
    assert finding.line() == (
        f"error: mqtt.url: the broker at mqtt://127.0.0.1:{port} did not answer within 0.5 s"
    )
