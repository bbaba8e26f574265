"""`lantern run` as a real process: environment-only start, SIGTERM drain, kill -9 crash safety."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.ingest import FAILPOINT_ACK_DELAY_ENV
from gateway.localbroker import Mosquitto
from gateway.receiver import Receiver
from tests.helpers import (
    Publisher,
    lantern_env,
    lantern_online,
    retained_status,
    start_lantern,
    wait_until,
)

STOP_TIMEOUT_S = 30.0  # systemd/lantern.service's TimeoutStopSec: a stop must fit in it


async def test_run_with_only_environment_variables_then_sigterm_drains_and_exits_0(
    broker: Mosquitto, tmp_path: Path, receiver: Receiver, device: Publisher
) -> None:
    env = lantern_env("envonly", tmp_path / "data", broker, receiver.url)
    process = await start_lantern(env, tmp_path)  # no store.yaml anywhere, no LANTERN_CONFIG
    await lantern_online(broker, "envonly")
    await device.send([("lantern/envonly/scanner/till-1", "9501101531000")])
    await wait_until(lambda: len(receiver.events) == 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "stopped cleanly" in log
    assert (tmp_path / "data" / "outbox.sqlite").exists()
    assert retained_status(broker.port, "lantern/envonly/gateway/status") == "offline"


async def test_a_second_run_on_the_same_data_folder_or_a_taken_port_is_one_line(
    broker: Mosquitto, tmp_path: Path, receiver: Receiver
) -> None:
    env = lantern_env("twice", tmp_path / "data", broker, receiver.url)
    first = await start_lantern(env, tmp_path)
    await lantern_online(broker, "twice")
    second = await start_lantern(env, tmp_path)
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
        env = {**lantern_env("port", tmp_path / "other", broker, receiver.url)}
        env["LANTERN_WEB__PORT"] = str(port)
        third = await start_lantern(env, tmp_path)
        _, stderr = await asyncio.wait_for(third.communicate(), 30)
    first.send_signal(signal.SIGTERM)
    await asyncio.wait_for(first.communicate(), 30)
    assert third.returncode == 1
    lines = [line for line in stderr.decode().splitlines() if " INFO " not in line]
    assert lines == [
        f"error: web.port: cannot serve the status page on 127.0.0.1:{port}: address already in"
        " use (another lantern run, or another service, holds it: set web.port)"
    ]


def _redeliveries(log: str) -> int:
    """Committed messages the broker delivered again (a kill between commit and ack)."""
    return sum(int(count) for count in re.findall(r"redelivered: (\d+) messages", log))


async def _log_of(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    return (await process.stderr.read()).decode(errors="replace")


async def _connected(process: asyncio.subprocess.Process) -> str:
    """The run's log up to its own "MQTT connected" line: from there on it is consuming."""
    assert process.stderr is not None
    lines = []
    while not lines or "MQTT connected to" not in lines[-1]:
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert line, "lantern run exited before it connected:\n" + "".join(lines)
        lines.append(line.decode(errors="replace"))
    return "".join(lines)


@pytest.mark.slow
async def test_twenty_kill_9s_while_50000_scans_arrive_lose_and_duplicate_nothing(
    broker: Mosquitto, tmp_path: Path, receiver: Receiver
) -> None:
    seed = int(os.environ.get("LANTERN_CRASH_SEED", "20261203"))
    chance = random.Random(seed)
    total, kills = 50_000, 20
    scans_per_run = total // kills
    env = lantern_env("crash", tmp_path / "data", broker, receiver.url)
    # Acks trail commits by 0.2 s: most kills land after a commit and before its ack, so the
    # broker redelivers committed messages (DUP) and dedup must catch them.
    env[FAILPOINT_ACK_DELAY_ENV] = "0.2"
    process = await start_lantern(env, tmp_path)
    runs_connected = threading.Semaphore(0)
    publishing = threading.Event()

    def publish() -> None:
        """The tills scan a share of the stream per run, begun once that run has connected.

        A run's start-up (0.5-2 s, with the machine's load) must not eat its life: a share takes
        at least 1.5 s to send, longer than a run lives once connected, so each kill lands while
        its share still arrives.
        """
        with Publisher(broker.port) as device:
            sent = []
            for number in range(total):
                if number % scans_per_run == 0:
                    runs_connected.acquire()
                topic = f"lantern/crash/scanner/till-{number % 4}"
                sent.append(device.publish(topic, f"]C1010950110153100021SN{number:06d}"))
                if number % 100 == 99:
                    time.sleep(0.06)
            for info in sent:
                info.wait_for_publish(timeout=60)
        publishing.set()

    publisher = threading.Thread(target=publish, name="scanners")
    publisher.start()
    logs: list[str] = []
    start_ups_s: list[float] = []
    for _ in range(kills):
        started = time.monotonic()
        head = await _connected(process)
        start_ups_s.append(time.monotonic() - started)
        runs_connected.release()
        await asyncio.sleep(chance.uniform(0.3, 1.0))  # how long this run lives before its kill
        process.kill()  # SIGKILL: no drain, no goodbye
        await process.wait()
        logs.append(head + await _log_of(process))
        process = await start_lantern(env, tmp_path)
    assert not publishing.is_set(), "the kills must land while the scans still arrive"
    await asyncio.to_thread(publisher.join)
    await wait_until(lambda: len(receiver.events) >= total, timeout_s=120)
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    logs.append(stderr.decode(errors="replace"))
    assert process.returncode == 0

    ids_by_serial: dict[str, set[str]] = defaultdict(set)
    for event in receiver.deliveries:
        ids_by_serial[event["data"]["ai"]["21"]].add(event["id"])
    missing = {f"SN{n:06d}" for n in range(total)} - ids_by_serial.keys()
    assert not missing, f"seed {seed}: {len(missing)} serials lost, e.g. {sorted(missing)[:5]}"
    doubled = {serial: ids for serial, ids in ids_by_serial.items() if len(ids) != 1}
    assert not doubled, f"seed {seed}: serials under several event ids: {list(doubled.items())[:3]}"
    assert len(receiver.events) == total
    # Some kill fell between a commit and its acknowledgement: the broker redelivered
    # committed messages, and the next run recognised every one of them.
    assert _redeliveries("\n".join(logs)) > 0
    print(  # the figures for the record: pytest -s shows them
        f"{kills} kills, {total} scans: 0 lost, 0 under two ids,"
        f" {_redeliveries(chr(10).join(logs))} redeliveries deduplicated,"
        f" {receiver.redeliveries} HTTP redeliveries deduplicated by the central record;"
        f" start-up to connected {min(start_ups_s):.2f}-{max(start_ups_s):.2f} s"
    )


@pytest.mark.slow
async def test_sigterm_under_load_exits_0_in_time_and_a_restart_loses_nothing(
    broker: Mosquitto, tmp_path: Path, receiver: Receiver
) -> None:
    total = 20_000
    env = lantern_env("drain", tmp_path / "data", broker, receiver.url)
    process = await start_lantern(env, tmp_path)
    await lantern_online(broker, "drain")
    scans = [
        (f"lantern/drain/scanner/till-{n % 4}", f"]C1010950110153100021SN{n:06d}")
        for n in range(total)
    ]
    with Publisher(broker.port) as device:
        sending = asyncio.create_task(device.send(scans))
        await wait_until(lambda: len(receiver.events) >= total // 10)  # under load, mid-stream
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT_S)
        stopped_in_s = time.monotonic() - started
        await sending
    assert process.returncode == 0, stderr.decode()
    assert len(receiver.events) < total  # it did stop mid-stream
    process = await start_lantern(env, tmp_path)
    await wait_until(lambda: len(receiver.events) >= total, timeout_s=60)
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.communicate(), STOP_TIMEOUT_S)
    serials = sorted(event["data"]["ai"]["21"] for event in receiver.events.values())
    assert serials == [f"SN{n:06d}" for n in range(total)]
    assert len(receiver.deliveries) - len(receiver.events) <= 500  # one HTTP batch at most
    print(f"SIGTERM under load: exit 0 in {stopped_in_s:.2f} s; {total} scans, 0 lost")
