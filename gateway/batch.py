"""The values one message becomes on its way through the gateway, free of any transport.

An :class:`Inbound` is a message as it arrived (from the broker, the box's own radio, an HTTP
post, a recording); a :class:`Batch` is what one outbox commit writes: the events of a batch of
messages (:class:`EventRow`), its dead letters (:class:`DeadLetter`), the digests that let a
redelivery be recognised, and the stages' state that must commit with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

__all__ = ["Batch", "DeadLetter", "EventRow", "Inbound"]

_NO_SESSION = 0  # not from a broker: nothing to acknowledge, on no connection


class Inbound(NamedTuple):
    """One received message, not yet acknowledged (when it came from a broker at QoS 1).

    Make one with the constructor that says where it came from. A tuple: one is made per
    message received, and a tuple is the cheapest immutable value Python makes.
    """

    topic: str
    payload: bytes
    qos: int
    mid: int  # the broker's packet id, for the acknowledgement
    dup: bool  # the broker says it may have delivered this one before
    received_at: datetime
    session: int  # which broker connection delivered it: an ack is only valid on that one

    @classmethod
    def delivered(
        cls,
        topic: str,
        payload: bytes,
        qos: int,
        mid: int,
        dup: bool,
        at: datetime,
        session: int,
    ) -> Inbound:
        """A message the broker delivered on connection ``session``."""
        # tuple.__new__ itself: a named tuple's own __new__ is a Python function, a call that
        # costs more than the tuple, and one is made per message (so are a Publish, a Route
        # and an EventRow, made the same way).
        return tuple.__new__(cls, (topic, payload, qos, mid, dup, at, session))

    @classmethod
    def local(cls, topic: str, payload: bytes, at: datetime) -> Inbound:
        """A message from inside the box (its own radio, an HTTP post, a payload decoded by
        hand): no broker holds it, so there is nothing to acknowledge or deduplicate."""
        return cls(topic, payload, 0, 0, False, at, _NO_SESSION)

    @classmethod
    def recorded(cls, topic: str, payload: bytes, qos: int, at: datetime) -> Inbound:
        """A message replayed from a recording, at the QoS it was recorded with."""
        return cls(topic, payload, qos, 0, False, at, _NO_SESSION)


class EventRow(NamedTuple):
    """One event as the outbox keeps it (a tuple: one is made per event)."""

    id: str
    type: str
    body: str  # the structured CloudEvent as JSON


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not become events, kept with why (addresses pseudonymised)."""

    received_at: str
    topic: str
    payload: bytes
    kind: str
    reason: str


@dataclass(slots=True)
class Batch:
    """What one commit writes, all or nothing."""

    events: list[EventRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)  # a stage's key -> its state (JSON)

    def __bool__(self) -> bool:
        return bool(self.events or self.dead_letters or self.digests or self.state)
