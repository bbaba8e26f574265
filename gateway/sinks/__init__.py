"""Where committed events go: every sink runs the one delivery loop of ``base.py``."""

from __future__ import annotations

from gateway.config import Settings
from gateway.mqtt import MqttClient
from gateway.outbox import Outbox
from gateway.sinks.base import Sink, SinkStatus
from gateway.sinks.mqtt_actions import MqttActionSink

__all__ = ["Sink", "SinkStatus", "build_sinks"]


def build_sinks(settings: Settings, outbox: Outbox, mqtt: MqttClient) -> list[Sink]:
    """Every configured sink, and always the local action sink (rules' publishes).

    A sink's module is imported only when it is configured: the HTTP client (aiohttp) and the
    NATS client (nats-py) are some 20 MiB each of a box's memory."""
    sinks: list[Sink] = []
    if settings.http_sink.url is not None:
        from gateway.sinks.http import HttpSink

        sinks.append(HttpSink(settings.http_sink, outbox))
    if settings.nats_sink.url is not None:
        from gateway.sinks.jetstream import NatsSink

        sinks.append(NatsSink(settings.nats_sink, settings.store_id, outbox))
    if settings.mqtt_bridge_sink.url is not None:
        from gateway.sinks.mqtt_bridge import MqttBridgeSink

        sinks.append(MqttBridgeSink(settings.mqtt_bridge_sink, settings.store_id, outbox))
    sinks.append(MqttActionSink(outbox, mqtt, settings.action_sink))
    return sinks
