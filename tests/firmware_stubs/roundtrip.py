"""Every message a firmware stub publishes goes through the decoder the gateway routes its
topic to, with the gateway's default sources: what the gateway would make of it."""

from __future__ import annotations

from datetime import UTC, datetime

from devices.model import Message, Observation
from gateway.config import DEFAULT_SOURCES
from gateway.router import Router, default_decoders
from tests.firmware_stubs.board import STORE, Received

_ROUTER = Router(DEFAULT_SOURCES, STORE, default_decoders())


def decoded(message: Received) -> list[Observation]:
    """The observations of one published message; a decode error fails the test."""
    route = _ROUTER.route(message.topic)
    assert route is not None, f"the gateway does not subscribe to {message.topic}"
    observations = route.decoder(
        Message(message.topic, message.payload, datetime.now(UTC), route.fields)
    )
    assert observations, f"{route.kind} ignored {message.payload!r}"
    return observations
