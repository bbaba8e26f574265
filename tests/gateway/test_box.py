"""The store box's broker as shipped: it starts, it authenticates, it keeps what it queued."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.check import check_broker
from gateway.config import MqttSettings
from gateway.localbroker import BROKER_TUNING, Mosquitto
from tests.boxbroker import SHIPPED_BROKER_CONFIG, BoxBroker, drain, subscribe_and_leave

GATEWAY = ("lantern", "gateway-secret")
SCANNER = ("scanners", "scanner-secret")
TOPIC = "lantern/s1/scanner/till-1"


@pytest.fixture
def box_broker(tmp_path: Path) -> Iterator[BoxBroker]:
    broker = BoxBroker(dict([GATEWAY, SCANNER]), directory=tmp_path)
    broker.start()
    yield broker
    broker.stop()


def _mqtt(broker: BoxBroker, user: str | None = None, password: str | None = None) -> MqttSettings:
    credentials = f"{user}:{password}@" if user else ""
    return MqttSettings(url=f"mqtt://{credentials}127.0.0.1:{broker.port}")


def _publish(port: int, credentials: tuple[str, str], payloads: list[str]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.username_pw_set(*credentials)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for payload in payloads:
        client.publish(TOPIC, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_the_shipped_config_starts_and_listens_once(box_broker: BoxBroker) -> None:
    log = box_broker.log_text()
    assert "mosquitto version" in log and "running" in log
    assert "Error" not in log
    shipped = SHIPPED_BROKER_CONFIG.read_text()
    assert [line for line in shipped.splitlines() if line.startswith("listener ")] == [
        "listener 1883"
    ]
    assert BROKER_TUNING in shipped


def test_the_shipped_config_accepts_the_password_and_refuses_a_wrong_one(
    box_broker: BoxBroker,
) -> None:
    accepted = check_broker(_mqtt(box_broker, *GATEWAY))
    assert accepted.ok, accepted.line()
    wrong = check_broker(_mqtt(box_broker, GATEWAY[0], "not-the-secret"))
    assert not wrong.ok
    assert "refused user lantern" in wrong.text and "user name and password" in wrong.text
    anonymous = check_broker(_mqtt(box_broker))
    assert not anonymous.ok
    assert "refused no user name" in anonymous.text


@pytest.mark.slow
def test_the_shipped_config_keeps_queued_messages_through_a_restart_and_a_late_kill(
    box_broker: BoxBroker,
) -> None:
    """A graceful restart keeps everything; a kill -9 keeps whatever was acknowledged more
    than the stated window (docs/install.md) before it."""
    subscribe_and_leave(box_broker.port, "lantern-s1", TOPIC, GATEWAY)
    _publish(box_broker.port, SCANNER, ["before-restart"])
    box_broker.stop()
    box_broker.start()
    _publish(box_broker.port, SCANNER, ["before-kill"])
    time.sleep(_loss_window_s() + 0.5)
    box_broker.kill()
    box_broker.start()
    assert drain(box_broker.port, "lantern-s1", GATEWAY, idle_s=1.0) == [
        b"before-restart",
        b"before-kill",
    ]


def test_the_test_broker_persists_too(tmp_path: Path) -> None:
    """Run as root, Mosquitto drops to the mosquitto user, who cannot write a root-owned
    temporary folder: the test broker would have no persistence, and a broker restart in a
    test would lose what a store's broker keeps."""
    broker = Mosquitto(directory=tmp_path)
    broker.start()
    try:
        subscribe_and_leave(broker.port, "lantern-test-persist", TOPIC)
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        client.publish(TOPIC, "kept", qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        broker.stop()
        broker.start()
        assert drain(broker.port, "lantern-test-persist", idle_s=1.0) == [b"kept"]
    finally:
        broker.stop()


def _loss_window_s() -> float:
    """The loss window the shipped autosave gives: Mosquitto saves once more than
    ``autosave_interval`` whole seconds have passed, so every interval + 1 s."""
    for line in SHIPPED_BROKER_CONFIG.read_text().splitlines():
        if line.startswith("autosave_interval "):
            return int(line.split()[1]) + 1.0
    raise AssertionError("the shipped broker config sets no autosave_interval")
