"""Shared test tools: an in-process gateway, ``lantern run`` as a process, a device that
publishes, a consumer that subscribes, the outbox on disk, and waiting for a condition."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.app import OUTBOX_FILE_NAME, Gateway
from gateway.clock import Clock
from gateway.config import Settings
from gateway.localbroker import Mosquitto
from gateway.status import StatusView

_client_ids = itertools.count()


class SavingMosquitto(Mosquitto):
    """The fault tests' broker: the shipped one, which :meth:`save` has write its store now, so
    that a SIGKILL right after loses nothing it acknowledged.

    Saving on every change (``autosave_on_changes``, which this class used before) is not
    that: Mosquitto does not count a message that goes straight into a subscriber's in-flight
    window (not queued behind it) as a change, so it is written at the next counted change
    only, and a kill before that loses it though its publisher has the PUBACK, unless the
    subscriber had read it off the socket. With a 4,000-message window most messages take that
    path, and the broker-kill test lost scans in 3 runs of 13. It also made the broker slow:
    it wrote its whole store after every PUBACK, and took 2.5 s to acknowledge the tills' last
    scans before a kill.
    """

    def save(self, timeout_s: float = 10.0) -> None:
        """Have the broker write its store (SIGUSR1) and wait until a new one is in place.

        Mosquitto writes ``mosquitto.db.new`` and renames it over the old file, all on its one
        thread, so a store renamed after this call began was written after every PUBACK the
        broker had sent before it: it holds every message acknowledged so far.
        """
        assert self._process is not None, "the broker is not running"
        store = self.directory / "mosquitto.db"
        before = store.stat().st_ino if store.exists() else None
        self._process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while not store.exists() or store.stat().st_ino == before:
            if time.monotonic() > deadline:
                raise AssertionError(f"the broker wrote no new {store} in {timeout_s} s")
            time.sleep(0.001)


def make_settings(data_dir: Path, broker_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store_id": "s1",
        "data_dir": data_dir,
        # A session of its own at the shared broker; the same Settings keep it across restarts.
        "mqtt": {"url": broker_url, "client_id": f"lantern-test-{next(_client_ids)}"},
        "outbox": {"batch_max_ms": 20},
        "http_sink": {"retry_min_s": 0.05, "retry_max_s": 0.5},
        "web": {"port": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


@asynccontextmanager
async def running_gateway(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Gateway]:
    """A gateway running in this loop until the block ends, then drained as on SIGTERM.

    A failure of the test's own block is raised as it is (not in an exception group), and
    the gateway is stopped either way.
    """
    stop = asyncio.Event()
    gateway = Gateway(settings, clock)
    run = asyncio.create_task(gateway.run(stop), name="gateway")
    ready = asyncio.create_task(gateway.ready.wait(), name="gateway-ready")
    try:
        await asyncio.wait([run, ready], return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            run.result()  # start-up failed: its error, not a timeout
        await asyncio.wait_for(gateway.wait_connected(), 10)
        yield gateway
    finally:
        ready.cancel()
        stop.set()
        await asyncio.wait_for(run, 30)


def status(gateway: Gateway) -> StatusView:
    assert gateway.status is not None, "the gateway is not running"
    return gateway.status


def sink_delivered(gateway: Gateway, name: str = "http") -> int:
    (sink,) = [sink for sink in status(gateway).sinks() if sink["name"] == name]
    return int(sink["delivered"])


def outbox_rows(
    where: Settings | Path, sql: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """Read the outbox file as it is on disk (read-only, beside its writer): a gateway's (by
    its settings) or any outbox file (by its path)."""
    path = where.data_dir / OUTBOX_FILE_NAME if isinstance(where, Settings) else where
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 15.0
) -> None:
    """Poll a condition (plain or async) until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def settled(gateway: Gateway, received: int) -> None:
    """Until the gateway has received ``received`` messages in all, and committed and
    acknowledged every one: what was sent so far is in, at the clock's time."""
    ingest = gateway.ingest
    await wait_until(lambda: ingest.settled == ingest.received >= received)


class _PahoThread:
    """A paho client on its own network thread, stopped by ``close`` or a ``with`` block."""

    client: paho.Client

    def close(self) -> None:
        self.client.disconnect()  # first: it wakes paho's network thread, which then ends
        self.client.loop_stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Publisher(_PahoThread):
    """A device: a paho client with its own network thread, publishing at QoS 1."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-device-{next(_client_ids)}"
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    def publish_all(self, messages: list[tuple[str, bytes | str]], qos: int = 1) -> None:
        infos = [self.publish(topic, payload, qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)

    async def send(self, messages: list[tuple[str, bytes | str]], qos: int = 1) -> None:
        """publish_all without blocking the test's loop (the gateway runs in it)."""
        await asyncio.to_thread(self.publish_all, messages, qos)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    user_properties: list[tuple[str, str]]
    correlation_data: bytes | None
    content_type: str | None
    at: float  # time.monotonic() when it arrived

    @property
    def event(self) -> Any:
        return json.loads(self.payload)


SUBSCRIBE_TIMEOUT_S = 10.0  # a loaded 2-core box answers in milliseconds


class Subscriber(_PahoThread):
    """A consumer (the chain's, or a store's screen): an MQTT 5 session that outlives a broker
    restart or its own absence (the broker queues for it), at QoS 1, on a paho thread; ready
    once the broker has acknowledged its subscription.

    A new Subscriber with the same ``client_id`` resumes the session and receives its queue.
    """

    def __init__(self, port: int, topic: str = "lantern/#", client_id: str | None = None) -> None:
        self.received: list[Received] = []
        subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-consumer-{next(_client_ids)}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.reconnect_delay_set(0.05, 0.5)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600  # the broker keeps the queue while we are away
        self.client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        self.client.loop_start()
        # What is published before the broker has the subscription is no one's: it is lost.
        if not subscribed.wait(SUBSCRIBE_TIMEOUT_S):
            self.close()
            raise AssertionError(f"no SUBACK for {topic} in {SUBSCRIBE_TIMEOUT_S} s")

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        properties = message.properties
        with self._lock:
            self.received.append(
                Received(
                    message.topic,
                    message.payload,
                    bool(message.retain),
                    list(getattr(properties, "UserProperty", [])),
                    getattr(properties, "CorrelationData", None),
                    getattr(properties, "ContentType", None),
                    time.monotonic(),
                )
            )


# ``lantern run`` as a real process, configured by its environment alone.

LANTERN = [sys.executable, "-m", "gateway"]


def lantern_env(store: str, data_dir: Path, broker: Mosquitto, forward_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
    env.update(
        LANTERN_STORE_ID=store,
        LANTERN_DATA_DIR=str(data_dir),
        LANTERN_MQTT_URL=broker.url,
        LANTERN_FORWARD_URL=forward_url,
        LANTERN_OUTBOX__BATCH_MAX_MS="20",
        LANTERN_HTTP_SINK__RETRY_MAX_S="0.5",
        LANTERN_WEB__PORT="0",  # any free port: 8080 may be the box's own lantern's, or a test's
    )
    return env


async def start_lantern(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    """``lantern run``; its log on ``stderr`` (a pipe: read it, or it fills)."""
    return await asyncio.create_subprocess_exec(
        *LANTERN,
        "run",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def retained_status(port: int, topic: str) -> str | None:
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


async def lantern_online(broker: Mosquitto, store: str) -> None:
    """Until the store's gateway says it is online on its retained status topic."""
    topic = f"lantern/{store}/gateway/status"

    async def online() -> bool:  # in a thread: the test's loop serves a receiver meanwhile
        return await asyncio.to_thread(retained_status, broker.port, topic) == "online"

    await wait_until(online)
