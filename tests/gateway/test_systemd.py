"""sd_notify against a real unix datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import systemd
from gateway.localbroker import Mosquitto
from tests.helpers import wait_until


class FakeManager:
    """The service manager's end: a bound datagram socket, read by a thread that notes when
    each message arrived (so a stalled sender shows as a gap)."""

    def __init__(self, address: str | bytes) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.socket.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._running = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data.decode()))

    def messages(self, settle_s: float = 0.1) -> list[str]:
        time.sleep(settle_s)
        return [message for _, message in self.received]

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self.socket.close()


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManager]:
    path = tmp_path / "notify"
    fake = FakeManager(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(systemd._notifier, "ready_sent", False)
    yield fake
    fake.close()


def test_each_notification_reaches_the_socket(manager: FakeManager) -> None:
    assert systemd.ready()
    assert systemd.status("mqtt up | in 12\nsecond line")
    assert systemd.watchdog()
    assert systemd.stopping()
    assert manager.messages() == [
        "READY=1",
        "STATUS=mqtt up | in 12 second line",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_an_abstract_namespace_socket_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"lantern-test-{uuid.uuid4().hex}"
    fake = FakeManager(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert fake.messages() == ["READY=1"]
    finally:
        fake.close()


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.ready()
    assert not systemd.watchdog()
    asyncio.run(asyncio.wait_for(systemd.watchdog_loop(0.01, lambda: "x"), 1))  # returns at once


def test_a_failing_send_is_logged_once_and_never_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="gateway.systemd"):
        for _ in range(5):
            assert not systemd.watchdog()
    warnings = [record for record in caplog.records if record.name == "gateway.systemd"]
    assert len(warnings) == 1
    assert "nobody-listens" in warnings[0].getMessage()


def test_the_watchdog_period_is_half_the_timeout_and_only_for_the_watched_pid() -> None:
    assert systemd.watchdog_period_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert systemd.watchdog_period_s(mine) == 15.0
    assert systemd.watchdog_period_s({**mine, "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert systemd.watchdog_period_s({}) is None
    assert systemd.watchdog_period_s({"WATCHDOG_USEC": "soon"}) is None


def test_the_loop_extends_start_up_then_pings_and_a_stuck_loop_stops_the_pings(
    manager: FakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    lines = iter(range(1_000_000))

    async def scenario() -> None:
        task = asyncio.create_task(systemd.watchdog_loop(60.0, lambda: f"in {next(lines)}"))
        await asyncio.sleep(0.2)  # waiting for the broker: start-up goes on while we live
        systemd.ready()
        await asyncio.sleep(0.5)
        time.sleep(0.5)  # the loop is stuck: a blocking call where there should be none
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(scenario())
    messages = [message for _, message in manager.received]
    ready_at = messages.index("READY=1")
    assert set(messages[:ready_at]) >= {"EXTEND_TIMEOUT_USEC=100000", "STATUS=in 0"}
    assert "WATCHDOG=1" not in messages[:ready_at]
    assert not any(m.startswith("EXTEND") for m in messages[ready_at:])
    pings = [at for at, message in manager.received if message == "WATCHDOG=1"]
    assert len(pings) >= 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert max(gaps) >= 0.45  # nothing while the loop was stuck ...
    assert pings[-1] - pings[gaps.index(max(gaps)) + 1] >= 0.1  # ... and pings again after


def test_the_status_is_awaited_and_a_failing_one_does_not_stop_the_pings(
    manager: FakeManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    calls = 0

    async def status_line() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("outbox closed")
        return "mqtt up"

    async def scenario() -> None:
        systemd.ready()
        task = asyncio.create_task(systemd.watchdog_loop(60.0, status_line))
        await asyncio.sleep(0.4)
        task.cancel()

    with caplog.at_level(logging.ERROR, logger="gateway.systemd"):
        asyncio.run(scenario())
    messages = manager.messages()
    assert messages.count("STATUS=mqtt up") == 1
    assert messages.count("WATCHDOG=1") >= 4
    assert len([r for r in caplog.records if r.name == "gateway.systemd"]) == 1


def test_without_a_watchdog_the_loop_refreshes_status_only(
    manager: FakeManager,
) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(systemd.watchdog_loop(0.05, lambda: "ok"))
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(scenario())
    messages = manager.messages()
    assert "WATCHDOG=1" not in messages
    assert messages.count("STATUS=ok") >= 3


async def test_lantern_run_tells_systemd_it_is_ready_alive_and_stopping(
    tmp_path: Path, broker: Mosquitto, manager: FakeManager
) -> None:
    """The unit's Type=notify and WatchdogSec as the gateway meets them: READY=1 once the
    broker is connected, WATCHDOG=1 from the loop at half the interval, STATUS= with the
    one-line summary, STOPPING=1 on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
    env |= {
        "LANTERN_STORE_ID": "sd",
        "LANTERN_DATA_DIR": str(tmp_path / "data"),
        "LANTERN_MQTT_URL": broker.url,
        "LANTERN_WEB__PORT": "0",
        "WATCHDOG_USEC": "1000000",  # a second: pings every half second
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_until(lambda: "READY=1" in manager.messages(0), timeout_s=30)
        await wait_until(
            lambda: sum("WATCHDOG=1" in m for m in manager.messages(0)) >= 3, timeout_s=10
        )
        statuses = [m for m in manager.messages(0) if m.startswith("STATUS=")]
        assert statuses and statuses[-1].startswith("STATUS=mqtt up | in 0")
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    assert "STOPPING=1" in manager.messages()
