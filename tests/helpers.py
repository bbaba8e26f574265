"""Shared test tools: an in-process gateway, a publisher, waiting for a condition."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.app import Gateway
from gateway.config import Settings

_client_ids = itertools.count()


def make_settings(data_dir: Path, broker_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store_id": "s1",
        "data_dir": data_dir,
        "mqtt": {"url": broker_url, "client_id": f"lantern-test-{data_dir.name}"},
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
async def running_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    stop = asyncio.Event()
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run(stop))
    ready = asyncio.create_task(gateway.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    await asyncio.wait_for(gateway.wait_connected(), 10)
    try:
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Publisher:
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

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
