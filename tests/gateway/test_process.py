"""`lantern run` as a real process: environment-only start, SIGTERM drain, kill -9 crash safety."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.ingest import FAILPOINT_ACK_DELAY_ENV
from gateway.localbroker import Mosquitto
from gateway.receiver import Receiver
from tests.helpers import Publisher, wait_until

LANTERN = [sys.executable, "-m", "gateway"]


def _env(store: str, data_dir: Path, broker: Mosquitto, forward_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
    env.update(
        LANTERN_STORE_ID=store,
        LANTERN_DATA_DIR=str(data_dir),
        LANTERN_MQTT_URL=broker.url,
        LANTERN_FORWARD_URL=forward_url,
        LANTERN_OUTBOX__BATCH_MAX_MS="20",
        LANTERN_HTTP_SINK__RETRY_MAX_S="0.5",
    )
    return env


async def _start(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *LANTERN,
        "run",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def _retained_status(port: int, topic: str) -> str | None:
    """What a newcomer sees on the gateway's retained status topic."""
    seen: list[str] = []
    got = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"status-probe-{time.time_ns()}")

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        seen.append(message.payload.decode())
        got.set()

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    got.wait(3)
    client.disconnect()
    client.loop_stop()
    return seen[-1] if seen else None


async def _online(broker: Mosquitto, store: str) -> None:
    topic = f"lantern/{store}/gateway/status"
    await wait_until(lambda: _retained_status(broker.port, topic) == "online")


async def test_run_with_only_environment_variables_then_sigterm_drains_and_exits_0(
    broker: Mosquitto, tmp_path: Path, receiver: Receiver, device: Publisher
) -> None:
    env = _env("envonly", tmp_path / "data", broker, receiver.url)
    process = await _start(env, tmp_path)  # no store.yaml anywhere, no LANTERN_CONFIG
    await _online(broker, "envonly")
    await device.send([("lantern/envonly/scanner/till-1", "9501101531000")])
    await wait_until(lambda: len(receiver.events) == 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "stopped cleanly" in log
    assert (tmp_path / "data" / "outbox.sqlite").exists()
    assert _retained_status(broker.port, "lantern/envonly/gateway/status") == "offline"


async def test_a_second_run_on_the_same_data_folder_or_a_taken_port_is_one_line(
    broker: Mosquitto, tmp_path: Path, receiver: Receiver
) -> None:
    env = _env("twice", tmp_path / "data", broker, receiver.url)
    first = await _start(env, tmp_path)
    await _online(broker, "twice")
    second = await _start(env, tmp_path)
    _, stderr = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 1
    (line,) = stderr.decode().splitlines()
    assert line.startswith(f"error: data_dir: {tmp_path / 'data'} is in use by another lantern")
    assert f"(pid {first.pid})" in line

    # Another folder, but the status page's port is the first one's.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**_env("port", tmp_path / "other", broker, receiver.url)}
        env["LANTERN_WEB__PORT"] = str(port)
        third = await _start(env, tmp_path)
        _, stderr = await asyncio.wait_for(third.communicate(), 30)
    first.send_signal(signal.SIGTERM)
    await asyncio.wait_for(first.communicate(), 30)
    assert third.returncode == 1
    lines = [line for line in stderr.decode().splitlines() if " INFO " not in line]
    assert lines == [
        f"error: web.port: cannot serve the status page on 127.0.0.1:{port}: address already in"
        " use (another lantern run, or another service, holds it: set web.port)"
    ]


@pytest.mark.slow
async def test_three_kill_9s_while_2000_scans_arrive_lose_and_duplicate_nothing(
    broker: Mosquitto, tmp_path: Path, receiver: Receiver
) -> None:
    seed = int(os.environ.get("LANTERN_CRASH_SEED", "20261122"))
    chance = random.Random(seed)
    total = 2000
    env = _env("crash", tmp_path / "data", broker, receiver.url)
    # Acks trail commits by 0.2 s: most kills land after a commit and before its ack, so the
    # broker redelivers committed messages (DUP) and dedup must catch them.
    env[FAILPOINT_ACK_DELAY_ENV] = "0.2"
    process = await _start(env, tmp_path)
    await _online(broker, "crash")

    def publish() -> None:
        with Publisher(broker.port) as device:
            sent = []
            for number in range(total):
                sent.append(
                    device.publish(
                        f"lantern/crash/scanner/till-{number % 4}",
                        f"]C1010950110153100021SN{number:06d}",
                    )
                )
                time.sleep(0.002)  # ~4 s of traffic, so the kills land mid-stream
            for info in sent:
                info.wait_for_publish(timeout=30)

    publisher = threading.Thread(target=publish, name="scanners")
    publisher.start()
    for _ in range(3):
        await asyncio.sleep(chance.uniform(0.3, 1.2))  # let it run a random while
        process.kill()  # SIGKILL: no drain, no goodbye
        await process.wait()
        process = await _start(env, tmp_path)
    await asyncio.to_thread(publisher.join)
    await wait_until(lambda: len(receiver.events) >= total, timeout_s=90)
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.communicate(), 30)

    ids_by_serial: dict[str, set[str]] = defaultdict(set)
    for event in receiver.deliveries:
        ids_by_serial[event["data"]["ai"]["21"]].add(event["id"])
    missing = {f"SN{n:06d}" for n in range(total)} - ids_by_serial.keys()
    assert not missing, f"seed {seed}: {len(missing)} serials lost, e.g. {sorted(missing)[:5]}"
    doubled = {serial: ids for serial, ids in ids_by_serial.items() if len(ids) != 1}
    assert not doubled, f"seed {seed}: serials under several event ids: {list(doubled.items())[:3]}"
    assert len(receiver.events) == total
