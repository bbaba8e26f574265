"""A board for the firmware stubs under CPython, and a listener on the broker (see conftest)."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.localbroker import Mosquitto

SHIMS = Path(__file__).resolve().parent / "shims"
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_stubs" / "micropython"
STORE = "s1"
# The modules a firmware stub imports from the board, fresh for each test.
BOARD_MODULES = ("machine", "network", "umqtt", "umqtt.simple", "ntptime", "lantern_device")
FREE_HEAP_BYTES = 104_000


class Clock:
    """MicroPython's ticks: milliseconds that only the test moves on."""

    def __init__(self) -> None:
        self.now_ms = 0

    def ticks_ms(self) -> int:
        return self.now_ms

    @staticmethod
    def ticks_diff(later: int, earlier: int) -> int:
        return later - earlier

    @staticmethod
    def ticks_add(ticks: int, delta: int) -> int:
        return ticks + delta

    def sleep_ms(self, ms: int) -> None:
        self.advance(ms)

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@dataclass
class Board:
    """An ESP32 as the firmware sees it: its files, its clock, the store's access point."""

    directory: Path
    clock: Clock
    broker: Mosquitto

    def config(self, device_id: str, **extra: Any) -> dict[str, Any]:
        config = {
            "store": STORE,
            "id": device_id,
            "wifi": {"ssid": "store-devices", "password": "secret"},
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port, "keepalive_s": 60},
            **extra,
        }
        (self.directory / "config.json").write_text(json.dumps(config))
        return config

    def load(self, stub: str) -> ModuleType:
        """The stub's main.py as the board would run it, but not started."""
        spec = importlib.util.spec_from_file_location(f"{stub}_main", FIRMWARE / stub / "main.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    @property
    def access_point(self) -> Any:
        return sys.modules["network"].ACCESS_POINT


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Listener:
    """A subscriber on the store's topics, as the gateway is: what the devices published."""

    messages: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [message for message in self.messages if message.topic == topic]

    def wait_for(self, topic: str, count: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.on(topic)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} messages expected on {topic}, got {self.on(topic)}")
            time.sleep(0.01)
        return self.on(topic)


@contextmanager
def listen(broker: Mosquitto, pattern: str = f"lantern/{STORE}/#") -> Iterator[Listener]:
    listener = Listener()
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with listener._lock:
            listener.messages.append(Received(message.topic, message.payload, message.retain))

    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda client, *args: client.subscribe(pattern, qos=1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert subscribed.wait(10), "the listener could not subscribe"
        yield listener
    finally:
        client.disconnect()  # wakes paho's loop, which loop_stop then joins at once
        client.loop_stop()
