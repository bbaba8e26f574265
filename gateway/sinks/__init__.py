"""Where committed events go: every sink runs the one delivery loop of ``base.py``."""

from __future__ import annotations

from gateway.config import Settings
from gateway.mqtt import MqttClient
from gateway.outbox import Outbox
from gateway.sinks.base import Sink, SinkStatus
from gateway.sinks.http import HttpSink
from gateway.sinks.jetstream import NatsSink
from gateway.sinks.mqtt_actions import MqttActionSink
from gateway.sinks.mqtt_bridge import MqttBridgeSink

__all__ = ["Sink", "SinkStatus", "build_sinks"]


def build_sinks(settings: Settings, outbox: Outbox, mqtt: MqttClient) -> list[Sink]:
    """Every configured sink, and always the local action sink (rules' publishes)."""
    sinks: list[Sink] = []
    if settings.http_sink.url is not None:
        sinks.append(HttpSink(settings.http_sink, outbox))
    if settings.nats_sink.url is not None:
        sinks.append(NatsSink(settings.nats_sink, settings.store_id, outbox))
    if settings.mqtt_bridge_sink.url is not None:
        sinks.append(MqttBridgeSink(settings.mqtt_bridge_sink, settings.store_id, outbox))
    sinks.append(MqttActionSink(outbox, mqtt, settings.action_sink))
    return sinks
