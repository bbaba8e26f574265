"""The MQTT bridge sink against a second, central Mosquitto."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.app import OUTBOX_FILE_NAME
from gateway.batch import Batch
from gateway.config import MqttBridgeSinkSettings
from gateway.localbroker import Mosquitto, free_port, run_as_this_user, wait_for_port
from gateway.outbox import Outbox
from gateway.sinks.mqtt_bridge import MqttBridgeSink
from tests.gateway.sink_parts import (
    caught_up,
    commit_scans,
    running,
    scan_event,
    serials,
    sighting_event,
)
from tests.helpers import Subscriber, outbox_rows, wait_until

FAST_RETRY = {"retry_min_s": 0.05, "retry_max_s": 0.2}


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """The chain's central broker: a second Mosquitto, which the tests stop and start."""
    (tmp_path / "central").mkdir()
    broker = Mosquitto(directory=tmp_path / "central")
    await asyncio.to_thread(broker.start)
    yield broker
    await asyncio.to_thread(broker.stop)


@pytest.fixture
def consumer(central: Mosquitto) -> Iterator[Subscriber]:
    """The chain's consumer of what the stores forward, in a session that outlives a restart."""
    with Subscriber(central.port) as subscriber:
        yield subscriber


async def test_events_reach_the_central_broker_with_their_id_and_topic(
    central: Mosquitto, consumer: Subscriber, outbox: Outbox
) -> None:
    scans = [scan_event(serial) for serial in serials(3)]
    await outbox.commit(Batch(events=[scans[0], sighting_event(), *scans[1:]]))
    settings = MqttBridgeSinkSettings(url=central.url, **FAST_RETRY)
    async with running(MqttBridgeSink(settings, "s1", outbox)) as sink:
        await wait_until(lambda: sink.delivered == 3)
        await wait_until(lambda: len(consumer.received) == 3)
        await wait_until(lambda: caught_up(sink))
        assert sink.last_error is None
    received = consumer.received
    assert [r.topic for r in received] == ["lantern/s1/lantern.scan.read"] * 3
    assert [r.event for r in received] == [json.loads(e.body) for e in scans]
    assert [r.user_properties for r in received] == [[("id", e.id)] for e in scans]
    assert [r.correlation_data for r in received] == [e.id.encode() for e in scans]
    assert {r.content_type for r in received} == {"application/cloudevents+json"}


async def test_a_central_broker_outage_loses_nothing_and_each_event_keeps_one_id(
    central: Mosquitto, consumer: Subscriber, outbox: Outbox
) -> None:
    first, second = serials(5_000), serials(5_000)
    total = len(first) + len(second)
    await commit_scans(outbox, first)
    # Small pages, so that the broker stops mid-drain.
    settings = MqttBridgeSinkSettings(url=central.url, batch_max_events=500, **FAST_RETRY)
    async with running(MqttBridgeSink(settings, "s1", outbox)) as sink:
        await wait_until(lambda: sink.delivered > 0)
        await asyncio.to_thread(central.stop)
        await commit_scans(outbox, second)  # committed while the far side is down
        await wait_until(lambda: sink.retries > 0)
        status = await sink.status()
        assert status.cursor_lag > len(second), "the broker must stop mid-drain"
        assert status.last_error is not None
        await asyncio.to_thread(central.start)
        await wait_until(lambda: sink.delivered == total, timeout_s=60)
        await wait_until(
            lambda: len({r.event["id"] for r in consumer.received}) == total, timeout_s=30
        )
    ids_by_serial: dict[str, set[object]] = defaultdict(set)
    for received in consumer.received:
        ids_by_serial[received.event["data"]["ai"]["21"]].add(received.event["id"])
    assert sorted(ids_by_serial) == sorted(first + second)
    assert all(len(ids) == 1 for ids in ids_by_serial.values())


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def secured_central() -> Iterator[tuple[int, int, Path]]:
    """A central Mosquitto over TLS only: one listener for user name and password, one that
    requires a client certificate. Yields (password port, certificate port, folder)."""
    folder = Path(tempfile.mkdtemp(prefix="lantern-tls-broker-"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", folder / "ca.key", "-out", folder / "ca.crt")  # fmt: skip
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("store-1", "")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", folder / f"{name}.key", "-out", folder / f"{name}.csr")  # fmt: skip
        (folder / f"{name}.ext").write_text(extra + "\n")
        _openssl("x509", "-req", "-in", folder / f"{name}.csr", "-CA", folder / "ca.crt",
                 "-CAkey", folder / "ca.key", "-CAcreateserial", "-days", "1",
                 "-extfile", folder / f"{name}.ext", "-out", folder / f"{name}.crt")  # fmt: skip
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", folder / "passwd", "store-1", "s3cret"], check=True
    )
    password_port, certificate_port = free_port(), free_port()
    tls = f"cafile {folder}/ca.crt\ncertfile {folder}/server.crt\nkeyfile {folder}/server.key\n"
    (folder / "mosquitto.conf").write_text(
        run_as_this_user() + "per_listener_settings true\n"
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


async def test_tls_with_a_password_or_a_client_certificate_and_a_refusal_in_one_line(
    secured_central: tuple[int, int, Path], outbox: Outbox
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


class SmallPackets(Mosquitto):
    """A central broker that takes packets of 2,000 bytes at most (and says so in CONNACK)."""

    def config_text(self) -> str:
        return super().config_text() + "max_packet_size 2000\n"


async def test_an_event_larger_than_the_brokers_packet_limit_is_parked_alone(
    tmp_path: Path, outbox: Outbox
) -> None:
    """The broker's maximum packet size, from its CONNACK, refuses that event for good."""
    (tmp_path / "central").mkdir()
    small_packets = SmallPackets(directory=tmp_path / "central")
    await asyncio.to_thread(small_packets.start)
    try:
        big = scan_event("SN-big", device="x" * 3_000)
        await outbox.commit(Batch(events=[scan_event("SN-a"), big, scan_event("SN-b")]))
        with Subscriber(small_packets.port) as consumer:
            settings = MqttBridgeSinkSettings(url=small_packets.url, **FAST_RETRY)
            async with running(MqttBridgeSink(settings, "s1", outbox)) as sink:
                await wait_until(lambda: sink.delivered == 2)
                assert sink.parked == 1
            await wait_until(lambda: len(consumer.received) == 2)
    finally:
        await asyncio.to_thread(small_packets.stop)
    assert [r.event["data"]["ai"]["21"] for r in consumer.received] == ["SN-a", "SN-b"]
    sql = "SELECT first_seq, last_seq, reason FROM parked"
    ((first, last, reason),) = outbox_rows(tmp_path / OUTBOX_FILE_NAME, sql)
    assert first == last == 2  # the big one, alone
    assert "more than the broker's maximum packet size 2000" in reason
