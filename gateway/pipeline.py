"""Steps 2-4 of a message's flow: decode, pseudonymise, derive, make events; dead-letter the rest.

:meth:`Pipeline.process` turns received messages into one outbox :class:`Batch`, in one
forward pass. Each message is checked against the dedup window, routed to its decoder, and
each observation the decoder makes is pseudonymised and *enters the batch*: its event id is
minted (once), then every stage in turn looks at it (:class:`Stage`), and its row is written
followed by what the stages derived from it. A derived observation (a zone entered, a reorder
requested) enters the same way, through the stages after the one that derived it, so a rule
sees a zone event and a zone event never goes back through presence.

No I/O here: the ingest loop commits the batch and only then acknowledges its messages. A
decoder that raises anything but a decode error is caught here, at the device boundary, and
dead-lettered: one bad device never stops ingest.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

import msgspec

from devices.model import KindCache, Message, Observation
from gateway.batch import Batch, DeadLetter, EventRow, Inbound
from gateway.events import EventFactory, format_time
from gateway.privacy import Pseudonymizer
from gateway.router import Router
from lantern.errors import DecodeError

__all__ = [
    "NOTHING",
    "NOT_NEWS",
    "DedupWindow",
    "Derived",
    "Entry",
    "Pipeline",
    "Processed",
    "Stage",
    "message_digest",
]

log = logging.getLogger(__name__)

_DIGEST_BYTES = 16  # 128 bits: no accidental collision within any dedup window


def message_digest(topic: str, payload: bytes) -> bytes:
    """What identifies a QoS 1 message across a redelivery: its topic and payload."""
    return hashlib.blake2b(
        topic.encode("utf-8", "surrogatepass") + b"\0" + payload, digest_size=_DIGEST_BYTES
    ).digest()


class DedupWindow:
    """Digests of the last N committed messages, to recognise a redelivered (DUP) one."""

    def __init__(self, size: int, digests: Iterable[bytes] = ()) -> None:
        self._order: deque[bytes] = deque()
        # digest -> how many of the window's messages have it (a legitimate repeat is two)
        self._counts: dict[bytes, int] = {}
        self._size = size
        for digest in digests:
            self.add(digest)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._counts

    def add(self, digest: bytes) -> None:
        counts = self._counts
        self._order.append(digest)
        counts[digest] = counts.get(digest, 0) + 1
        if len(self._order) > self._size:
            oldest = self._order.popleft()
            left = counts[oldest] - 1
            if left:
                counts[oldest] = left
            else:
                del counts[oldest]


class Entry(msgspec.Struct, frozen=True):
    """An observation that entered the batch, with the id its event has from then on."""

    observation: Observation
    at: datetime  # its receive (or tick) time: the clock presence and the rules run on
    event_id: str


class Derived(msgspec.Struct, frozen=True, kw_only=True):
    """What a stage makes of one entry.

    ``observations`` enter the batch right after it (through the later stages); ``rows`` are
    final (a rule's publish, an emitted event). ``keep=False`` says the entry is no news (a
    last will for a device already flagged offline): it gets no row and the later stages do
    not see it.
    """

    observations: Sequence[Observation] = ()
    rows: Sequence[EventRow] = ()
    keep: bool = True


NOTHING = Derived()
NOT_NEWS = Derived(keep=False)


class Stage:
    """One step that every entry of a batch goes through, adapting a pure core (device health,
    reorder debounce, presence, rules). Time is handed in: ``entry.at``, the tick's ``now``.

    A stage with state names its ``state_key``; the state it reports from
    :meth:`changed_state` commits with the batch that changed it, and :meth:`restore` takes it
    back at the next start.
    """

    state_key: ClassVar[str | None] = None

    def takes(self, kind: type[Observation]) -> bool:
        """Whether entries of this kind may concern the stage (asked once per kind): the
        pipeline does not hand it the others."""
        return True

    def observe(self, entry: Entry) -> Derived:
        return NOTHING

    def tick(self, now: datetime) -> Sequence[Observation]:
        """What the passing of time alone makes (a silent device, a visitor gone)."""
        return ()

    def changed_state(self) -> str | None:
        """The state to commit with the batch just built, if it changed (else None)."""
        return None

    def closing_state(self) -> str | None:
        """The state to commit at a clean stop, if any."""
        return self.changed_state()

    def restore(self, saved: str) -> bool:
        """Take back the saved state; True if it is used up and must be cleared (a snapshot
        that a later crash would make stale). Raises ValueError on state it cannot read."""
        return False


@dataclass(slots=True)
class Processed:
    """One batch, and the messages to acknowledge once it is committed."""

    batch: Batch = field(default_factory=Batch)
    to_ack: list[Inbound] = field(default_factory=list)
    duplicates: int = 0
    ignored: int = 0  # messages no decoder claimed ("not mine")


class Pipeline:
    def __init__(
        self,
        router: Router,
        pseudonymizer: Pseudonymizer,
        events: EventFactory,
        max_payload_bytes: int,
        dedup: DedupWindow,
        stages: Sequence[Stage] = (),
    ) -> None:
        self._router = router
        self._pseudonymizer = pseudonymizer
        self._events = events
        self._max_payload_bytes = max_payload_bytes
        self._dedup = dedup
        self.stages = tuple(stages)
        # Each kind's stages, as (position, observe): a sighting never meets the reorder stage.
        self._plans = KindCache(self._plan)
        self.dead_letters_by_kind: Counter[str] = Counter()
        self.stage_failures: Counter[str] = Counter()
        self.messages_by_family: Counter[str] = Counter()  # by source kind, or "unrouted"
        self.duplicates = 0
        self.ignored = 0
        self.messages = 0

    def process(self, messages: Sequence[Inbound]) -> Processed:
        processed = Processed()
        batch, dedup = processed.batch, self._dedup
        # Bound once for the batch: each of these runs for every message.
        to_ack, digests, decode = processed.to_ack.append, batch.digests.append, self._decode
        pseudonymise, enter = self._pseudonymizer.apply, self._enter
        self.messages += len(messages)
        for inbound in messages:
            if inbound.qos > 0:
                to_ack(inbound)
                digest = message_digest(inbound.topic, inbound.payload)
                if inbound.dup and digest in dedup:
                    processed.duplicates += 1
                    continue
                dedup.add(digest)
                digests(digest)
            at = inbound.received_at
            for observation in decode(inbound, processed):
                enter(batch, pseudonymise(observation, at), at)
        self._collect_state(processed.batch, closing=False)
        self.duplicates += processed.duplicates
        self.ignored += processed.ignored
        return processed

    def admit(self, observations: Iterable[Observation], at: datetime) -> Processed:
        """Observations made outside a decoder (a raw advertisement decoded by hand)."""
        processed = Processed()
        for observation in observations:
            self._enter(processed.batch, self._pseudonymizer.apply(observation, at), at)
        return processed

    def tick(self, now: datetime) -> Processed:
        """Time-driven events with no message behind them (silent devices, presence exits)."""
        processed = Processed()
        for index, stage in enumerate(self.stages):
            for observation in stage.tick(now):
                self._enter(processed.batch, observation, now, index + 1)
        self._collect_state(processed.batch, closing=False)
        return processed

    def closing_state(self) -> Batch:
        """What the stages keep for the next start, taken at a clean stop."""
        batch = Batch()
        self._collect_state(batch, closing=True)
        return batch

    def _enter(
        self, batch: Batch, observation: Observation, at: datetime, first_stage: int = 0
    ) -> None:
        entry = Entry(observation, at, self._events.mint(observation.observed_at or at))
        derived: list[tuple[int, Derived]] = []
        for index, observe in self._plans[type(observation)]:
            if index < first_stage:
                continue
            try:
                outcome = observe(entry)
            except Exception:  # a stage's boundary: its bug costs what it derives, not ingest
                self._stage_failed(index, entry)
                continue
            if outcome is NOTHING:  # what most stages say of most entries
                continue
            if not outcome.keep:
                return
            derived.append((index, outcome))
        batch.events.append(self._events.observed(observation, entry.event_id, at))
        for index, outcome in derived:
            for derived_observation in outcome.observations:
                self._enter(batch, derived_observation, at, index + 1)
            batch.events.extend(outcome.rows)

    def _plan(self, kind: type[Observation]) -> tuple[tuple[int, Callable[[Entry], Derived]], ...]:
        return tuple(
            (index, stage.observe) for index, stage in enumerate(self.stages) if stage.takes(kind)
        )

    def _stage_failed(self, index: int, entry: Entry) -> None:
        name = type(self.stages[index]).__name__
        if not self.stage_failures[name]:
            log.exception(
                "%s failed on %s event %s; the event is kept, further failures only counted",
                name,
                entry.observation.cloud_event_type(),
                entry.event_id,
            )
        self.stage_failures[name] += 1

    def _collect_state(self, batch: Batch, closing: bool) -> None:
        for stage in self.stages:
            state = stage.closing_state() if closing else stage.changed_state()
            if state is not None and stage.state_key is not None:
                batch.state[stage.state_key] = state

    def _decode(self, inbound: Inbound, processed: Processed) -> Sequence[Observation]:
        """The message's observations, not yet pseudonymised; none when it is a dead letter."""
        size = len(inbound.payload)
        if size > self._max_payload_bytes:
            self._dead_letter(
                inbound,
                processed,
                "oversized",
                f"payload of {size} bytes exceeds the {self._max_payload_bytes}-byte limit",
            )
            return ()
        route = self._router.route(inbound.topic)
        self.messages_by_family[route.kind if route is not None else "unrouted"] += 1
        if route is None:
            self._dead_letter(inbound, processed, "unrouted", "no configured source matches")
            return ()
        message = Message(inbound.topic, inbound.payload, inbound.received_at, route.fields)
        try:
            observations = route.decoder(message)
        except DecodeError as exc:
            self._dead_letter(inbound, processed, f"{route.kind}: undecodable", exc.reason)
            return ()
        except Exception as exc:  # the device boundary: a decoder bug must not stop ingest
            self._dead_letter(
                inbound,
                processed,
                f"{route.kind}: decoder failure",
                f"decoder failure: {type(exc).__name__}: {_short(exc)}",
                exc,
            )
            return ()
        if observations is None:
            processed.ignored += 1
            return ()
        return observations

    def _dead_letter(
        self,
        inbound: Inbound,
        processed: Processed,
        kind: str,
        reason: str,
        error: Exception | None = None,
    ) -> None:
        topic = self._pseudonymizer.scrub(inbound.topic, inbound.received_at)
        reason = self._pseudonymizer.scrub(reason, inbound.received_at)
        if not self.dead_letters_by_kind[kind]:
            # Once per kind: a misconfigured device sending 100 bad messages a second must not
            # flood the log; the status page shows the counts and the table holds every one.
            # A decoder's own failure carries its traceback, once, for whoever fixes it.
            log.warning(
                "dead letter (%s) on %s: %s; further ones of this kind are only counted",
                kind,
                topic,
                reason,
                exc_info=error,
            )
        self.dead_letters_by_kind[kind] += 1
        processed.batch.dead_letters.append(
            DeadLetter(
                format_time(inbound.received_at),
                topic,
                self._scrubbed(inbound),
                kind,
                reason,
            )
        )

    def _scrubbed(self, inbound: Inbound) -> bytes:
        """The payload to keep: MAC-shaped text pseudonymised (binary is kept as it came)."""
        try:
            text = inbound.payload.decode("utf-8")
        except UnicodeDecodeError:
            return inbound.payload
        return self._pseudonymizer.scrub(text, inbound.received_at).encode("utf-8")


_MAX_ERROR_CHARS = 200  # of a decoder's exception text in a dead letter's reason


def _short(error: Exception) -> str:
    """An exception's text, bounded: a RecursionError or a huge int's message can be long."""
    text = str(error)
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."
