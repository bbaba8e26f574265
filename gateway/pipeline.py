"""Steps 2-4 of a message's flow: decode, pseudonymise, make events; dead-letter the rest.

:class:`Pipeline` turns a list of received messages into one outbox :class:`Batch` and the list
of messages to acknowledge once it is committed. It does no I/O: the ingest loop commits and
acknowledges. A decoder that raises anything but a decode error is caught here, at the device
boundary, logged with the topic, and dead-lettered: one bad device never stops ingest.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from devices.model import Message, Observation
from gateway.events import CloudEvent, IdGenerator, format_time, store_source
from gateway.mqtt import Inbound
from gateway.outbox import Batch, DeadLetter, EventRow
from gateway.privacy import Pseudonymizer
from gateway.router import Router
from lantern.errors import DecodeError

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
        self._counts: Counter[bytes] = Counter()
        self._size = size
        for digest in digests:
            self.add(digest)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._counts

    def add(self, digest: bytes) -> None:
        self._order.append(digest)
        self._counts[digest] += 1
        if len(self._order) > self._size:
            oldest = self._order.popleft()
            self._counts[oldest] -= 1
            if not self._counts[oldest]:
                del self._counts[oldest]


@dataclass(slots=True)
class Processed:
    """One batch in the making. Stages may change ``observations`` and add ``derived`` rows."""

    batch: Batch
    to_ack: list[Inbound]
    observations: list[tuple[Observation, datetime]] = field(default_factory=list)
    # Ids a stage needed before the rows exist (a rule's trace names its event), by id() of
    # the observation: each lives as long as the batch, so id() is not reused meanwhile.
    event_ids: dict[int, str] = field(default_factory=dict)
    duplicates: int = 0
    ignored: int = 0


class Stage(Protocol):
    """What runs on a batch's observations before they become events: device health,
    reorder debounce, presence and rules. Each adapts a pure core; ``now`` is passed in."""

    def process(self, processed: Processed, pipeline: Pipeline, now: datetime) -> None: ...

    def tick(self, processed: Processed, pipeline: Pipeline, now: datetime) -> None: ...


class Pipeline:
    def __init__(
        self,
        store_id: str,
        router: Router,
        pseudonymizer: Pseudonymizer,
        ids: IdGenerator,
        max_payload_bytes: int,
        dedup: DedupWindow,
        stages: Sequence[Stage] = (),
    ) -> None:
        self._store_id = store_id
        self._router = router
        self._pseudonymizer = pseudonymizer
        self._ids = ids
        self._max_payload_bytes = max_payload_bytes
        self._dedup = dedup
        self._stages = stages
        self.dead_letters_by_kind: Counter[str] = Counter()
        self.duplicates = 0
        self.ignored = 0
        self.messages = 0

    def process(self, messages: list[Inbound]) -> Processed:
        processed = Processed(Batch(), [])
        for inbound in messages:
            self.messages += 1
            if inbound.qos > 0:
                processed.to_ack.append(inbound)
                digest = message_digest(inbound.topic, inbound.payload)
                if inbound.dup and digest in self._dedup:
                    processed.duplicates += 1
                    continue
                self._dedup.add(digest)
                processed.batch.digests.append(digest)
            self._decode(inbound, processed)
        if messages:
            now = messages[-1].received_at
            for stage in self._stages:
                stage.process(processed, self, now)
        self._make_events(processed)
        self.duplicates += processed.duplicates
        self.ignored += processed.ignored
        return processed

    def tick(self, now: datetime) -> Processed:
        """Time-driven events with no message behind them (silent devices, presence exits)."""
        processed = Processed(Batch(), [])
        for stage in self._stages:
            stage.tick(processed, self, now)
        self._make_events(processed)
        return processed

    def _make_events(self, processed: Processed) -> None:
        """Observations become events first, then what stages derived from them, in order."""
        ids = processed.event_ids
        observed = [
            self.event(obs, received_at, ids.get(id(obs)))
            for obs, received_at in processed.observations
        ]
        processed.batch.events[:0] = observed

    def event_id(
        self, processed: Processed, observation: Observation, received_at: datetime
    ) -> str:
        """The id the observation's event will have, minted now (in the order of causes)."""
        minted = processed.event_ids.get(id(observation))
        if minted is None:
            minted = self._ids.next_id(observation.observed_at or received_at)
            processed.event_ids[id(observation)] = minted
        return minted

    def event(
        self, observation: Observation, received_at: datetime, event_id: str | None = None
    ) -> EventRow:
        """The outbox row of one (already pseudonymised) observation."""
        return self.event_row(
            observation.cloud_event_type(),
            observation.observed_at or received_at,
            observation.subject(),
            observation.event_data(),
            observation.device_id,
            event_id,
        )

    def event_row(
        self,
        event_type: str,
        time: datetime,
        subject: str | None,
        data: dict[str, object],
        device_id: str | None,
        event_id: str | None = None,
    ) -> EventRow:
        event = CloudEvent(
            id=event_id or self._ids.next_id(time),
            source=store_source(self._store_id, device_id),
            type=event_type,
            time=time,
            subject=subject,
            data=data,
        )
        return EventRow(event.id, event_type, event.model_dump_json(exclude_none=True))

    def _decode(self, inbound: Inbound, processed: Processed) -> None:
        size = len(inbound.payload)
        if size > self._max_payload_bytes:
            self._dead_letter(
                inbound,
                processed,
                "oversized",
                f"payload of {size} bytes exceeds the {self._max_payload_bytes}-byte limit",
            )
            return
        route = self._router.route(inbound.topic)
        if route is None:
            self._dead_letter(inbound, processed, "unrouted", "no configured source matches")
            return
        message = Message(inbound.topic, inbound.payload, inbound.received_at, route.fields)
        try:
            observations = route.decoder(message)
        except DecodeError as exc:
            self._dead_letter(inbound, processed, f"{route.kind}: undecodable", exc.reason)
            return
        except Exception as exc:  # the device boundary: a decoder bug must not stop ingest
            log.exception(
                "decoder %s failed on topic %s",
                route.kind,
                self._pseudonymizer.scrub(inbound.topic, inbound.received_at),
            )
            self._dead_letter(
                inbound, processed, f"{route.kind}: decoder failure", f"decoder failure: {exc!r}"
            )
            return
        if observations is None:
            processed.ignored += 1
            return
        for observation in observations:
            private = self._pseudonymizer.apply(observation, inbound.received_at)
            processed.observations.append((private, inbound.received_at))

    def _dead_letter(self, inbound: Inbound, processed: Processed, kind: str, reason: str) -> None:
        topic = self._pseudonymizer.scrub(inbound.topic, inbound.received_at)
        reason = self._pseudonymizer.scrub(reason, inbound.received_at)
        if not self.dead_letters_by_kind[kind]:
            # Once per kind: a misconfigured device sending 100 bad messages a second must not
            # flood the log; the status page shows the counts and the table holds every one.
            log.warning(
                "dead letter (%s) on %s: %s; further ones of this kind are only counted",
                kind,
                topic,
                reason,
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
