"""The MQTT bridge sink against a second, central Mosquitto."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr

from gateway.batch import Batch
from gateway.config import MqttBridgeSinkSettings
from gateway.localbroker import Mosquitto, free_port, wait_for_port
from gateway.sinks.mqtt_bridge import MqttBridgeSink
from tests.gateway.sink_parts import (
    commit_scans,
    mosquitto_with_persistence,
    open_outbox,
    running,
    scan_event,
    serials,
    sighting_event,
)
from tests.helpers import wait_until

FAST_RETRY = {"retry_min_s": 0.05, "retry_max_s": 0.2}


@dataclass(frozen=True)
class Received:
    topic: str
    event: dict[str, object]
    user_properties: list[tuple[str, str]]
    correlation_data: bytes | None
    content_type: str | None


class CentralSubscriber:
    """The chain's consumer: an MQTT 5 persistent session on ``topic`` at QoS 1."""

    def __init__(self, port: int, topic: str = "lantern/#") -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="central-consumer", protocol=paho.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600  # keep our queue through the broker's restart
        self.client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        properties = message.properties
        with self._lock:
            self.received.append(
                Received(
                    message.topic,
                    json.loads(message.payload),
                    list(getattr(properties, "UserProperty", [])),
                    getattr(properties, "CorrelationData", None),
                    getattr(properties, "ContentType", None),
                )
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def central() -> Iterator[Mosquitto]:
    with mosquitto_with_persistence() as broker:
        yield broker


def test_events_reach_the_central_broker_with_their_id_and_topic(
    central: Mosquitto, tmp_path: Path
) -> None:
    scans = [scan_event(serial) for serial in serials(3)]
    subscriber = CentralSubscriber(central.port)

    async def scenario() -> None:
        async with open_outbox(tmp_path) as outbox:
            await outbox.commit(Batch(events=[scans[0], sighting_event(), *scans[1:]]))
            settings = MqttBridgeSinkSettings(url=central.url, **FAST_RETRY)
            async with running(MqttBridgeSink(settings, "s1", outbox)) as sink:
                await wait_until(lambda: sink.delivered == 3)
                await wait_until(lambda: len(subscriber.received) == 3)
                status = await sink.status()
                assert (status.cursor_lag, status.last_error) == (0, None)

    try:
        asyncio.run(scenario())
    finally:
        subscriber.close()
    assert [r.topic for r in subscriber.received] == ["lantern/s1/lantern.scan.read"] * 3
    assert [r.event for r in subscriber.received] == [json.loads(e.body) for e in scans]
    assert [r.user_properties for r in subscriber.received] == [[("id", e.id)] for e in scans]
    assert [r.correlation_data for r in subscriber.received] == [e.id.encode() for e in scans]
    assert {r.content_type for r in subscriber.received} == {"application/cloudevents+json"}


def test_a_central_broker_outage_loses_nothing_and_each_event_keeps_one_id(
    central: Mosquitto, tmp_path: Path
) -> None:
    first, second = serials(5_000), serials(5_000)
    subscriber = CentralSubscriber(central.port)

    async def scenario() -> None:
        async with open_outbox(tmp_path) as outbox:
            await commit_scans(outbox, first)
            # Small pages, so that the broker stops mid-drain.
            settings = MqttBridgeSinkSettings(url=central.url, batch_max_events=500, **FAST_RETRY)
            async with running(MqttBridgeSink(settings, "s1", outbox)) as sink:
                await wait_until(lambda: sink.delivered > 0)
                await asyncio.to_thread(central.stop)
                await commit_scans(outbox, second)  # committed while the far side is down
                await wait_until(lambda: sink.retries > 0)
                status = await sink.status()
                assert status.cursor_lag > len(second)
                assert status.last_error is not None
                await asyncio.to_thread(central.start)
                total = len(first) + len(second)
                await wait_until(lambda: sink.delivered == total, timeout_s=60)
                await wait_until(
                    lambda: len({r.event["id"] for r in subscriber.received}) == total,
                    timeout_s=30,
                )

    try:
        asyncio.run(scenario())
    finally:
        subscriber.close()
    ids_by_serial: dict[str, set[object]] = defaultdict(set)
    for received in subscriber.received:
        data = received.event["data"]
        assert isinstance(data, dict)
        ids_by_serial[data["ai"]["21"]].add(received.event["id"])
    assert sorted(ids_by_serial) == sorted(first + second)
    assert all(len(ids) == 1 for ids in ids_by_serial.values())


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def secured_central() -> Iterator[tuple[int, int, Path]]:
    """A central Mosquitto over TLS only: one listener for user name and password, one that
    requires a client certificate. Yields (password port, certificate port, folder)."""
    folder = Path(tempfile.mkdtemp(prefix="lantern-tls-broker-"))
    folder.chmod(0o777)  # mosquitto runs as its own user (see sink_parts)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", folder / "ca.key", "-out", folder / "ca.crt")  # fmt: skip
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("store-1", "")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", folder / f"{name}.key", "-out", folder / f"{name}.csr")  # fmt: skip
        (folder / f"{name}.ext").write_text(extra + "\n")
        _openssl("x509", "-req", "-in", folder / f"{name}.csr", "-CA", folder / "ca.crt",
                 "-CAkey", folder / "ca.key", "-CAcreateserial", "-days", "1",
                 "-extfile", folder / f"{name}.ext", "-out", folder / f"{name}.crt")  # fmt: skip
    for path in folder.iterdir():
        path.chmod(0o644)
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", folder / "passwd", "store-1", "s3cret"], check=True
    )
    (folder / "passwd").chmod(0o644)
    password_port, certificate_port = free_port(), free_port()
    tls = f"cafile {folder}/ca.crt\ncertfile {folder}/server.crt\nkeyfile {folder}/server.key\n"
    (folder / "mosquitto.conf").write_text(
        "per_listener_settings true\n"
        f"listener {password_port} 127.0.0.1\n{tls}allow_anonymous false\n"
        f"password_file {folder}/passwd\n"
        f"listener {certificate_port} 127.0.0.1\n{tls}require_certificate true\n"
        "use_identity_as_username true\n"
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(folder / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(password_port)
        wait_for_port(certificate_port)
        yield password_port, certificate_port, folder
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_tls_with_a_password_or_a_client_certificate_and_a_refusal_in_one_line(
    secured_central: tuple[int, int, Path], tmp_path: Path
) -> None:
    password_port, certificate_port, folder = secured_central
    ca = {"ca_file": folder / "ca.crt"}
    by_password = MqttBridgeSinkSettings(
        url=f"mqtts://127.0.0.1:{password_port}", username="store-1", password="s3cret", tls=ca
    )
    by_certificate = MqttBridgeSinkSettings(
        url=f"mqtts://127.0.0.1:{certificate_port}",
        tls={**ca, "cert_file": folder / "store-1.crt", "key_file": folder / "store-1.key"},
    )
    wrong = by_password.model_copy(update={"password": SecretStr("guess"), **FAST_RETRY})

    async def scenario() -> None:
        async with open_outbox(tmp_path) as outbox:
            await commit_scans(outbox, serials(10))
            async with running(MqttBridgeSink(wrong, "s1", outbox)) as sink:
                await wait_until(lambda: sink.retries >= 2)
                assert sink.last_error == (
                    f"mqtts://127.0.0.1:{password_port}: the broker refused the connection:"
                    " not authorized (mqtt_bridge_sink.username / password, or the broker's ACL)"
                )
                assert sink.delivered == 0
            for settings in (by_password, by_certificate):
                sink = MqttBridgeSink(settings, "s1", outbox)
                sink.name = f"bridge-{settings.url}"  # a cursor of its own: all 10 again
                async with running(sink):
                    await wait_until(lambda sink=sink: sink.delivered == 10)

    asyncio.run(scenario())
