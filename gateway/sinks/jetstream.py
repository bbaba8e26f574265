"""The NATS JetStream sink: every event to the chain's stream, exactly once by its id.

Each event is published to ``{prefix}.{store}.{type without "lantern."}`` (a scan:
``lantern.store-1.scan.read``) as its structured CloudEvent JSON, with the header
``Nats-Msg-Id`` = the event id, so that JetStream's duplicate window drops a resend. A page's
publishes are pipelined: all go out at once, each with its own reply subject
(``<inbox>.<seq>``), and the PubAcks are then taken in order; the cursor moves past the events
whose acks came back, and the rest of the page is sent again after a backoff (ack lost, server
restarting, stream full). That is nats-py's ``publish_async`` in spirit, without its future and
semaphore per message, which cost two thirds of the throughput.

At start the sink checks that the stream exists and takes the store's subjects; with
``create_stream: true`` it creates a file-backed one. When it is missing, one line says what to
do, and the sink tries again (with backoff, or at once when woken).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig

from gateway.config import NatsSinkSettings
from gateway.outbox import Outbox, PendingRow
from gateway.sinks.base import Sink, client_tls_context, forwarding_types
from lantern.errors import RejectedBatchError, RetryableSinkError

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 2.0  # a server on the region's network answers in milliseconds
_RECONNECT_WAIT_S = 0.5  # between reconnect attempts; the delivery loop's backoff is on top
_CLOSE_TIMEOUT_S = 2.0
# Acks of a whole page can be buffered before the loop reads them: no limit of nats-py's may
# drop one (a dropped ack would only resend, but a resend of a whole page each time).
_ACK_PENDING_MSGS = 1_000_000
_NO_RESPONDERS = "503"  # NATS status: no stream listens on the subject
_WRITE_CHUNK = 200  # publishes buffered before the flusher may write them


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether every subject that ``subject`` (which may end in ``>``) matches also matches
    the stream subject ``pattern``."""
    ours, theirs = subject.split("."), pattern.split(".")
    for index, token in enumerate(theirs):
        if token == ">":
            return index < len(ours)
        if index >= len(ours) or ours[index] == ">":
            return False
        if token not in ("*", ours[index]):
            return False
    return len(theirs) == len(ours)


class NatsSink(Sink):
    name = "nats"
    label = "NATS sink"

    def __init__(self, settings: NatsSinkSettings, store_id: str, outbox: Outbox) -> None:
        if settings.url is None:
            raise ValueError("the NATS sink needs a URL")
        super().__init__(settings, outbox, forwarding_types(settings))
        self._url = settings.url
        self.target = f"{settings.url} stream {settings.stream}"
        self._nats = settings
        self.subjects = f"{settings.subject_prefix}.{store_id}.>"
        self._subject_root = f"{settings.subject_prefix}.{store_id}."
        self._client: NatsClient | None = None
        self._connecting: asyncio.Task[NatsClient] | None = None
        self._connect_error: str | None = None
        self._stream_checked = False
        self._inbox = ""
        self._acks: dict[int, str | None] = {}  # seq -> None when stored, else why not
        self._last_seq = 0  # the seq whose ack completes the page in flight
        self._page_acked = asyncio.Event()
        self._duplicates = 0  # in the page in flight: JetStream had them already
        self.duplicates = 0

    def subject(self, event_type: str) -> str:
        return self._subject_root + event_type.removeprefix("lantern.")

    async def prepare(self) -> None:
        if self._client is None:
            self._client = await self._connected()
            self._inbox = self._client.new_inbox()
            await self._client.subscribe(
                f"{self._inbox}.*", cb=self._on_ack, pending_msgs_limit=_ACK_PENDING_MSGS
            )
        if not self._stream_checked:
            await self._check_stream(self._client)
            self._stream_checked = True

    async def _connected(self) -> NatsClient:
        """The client once connected. nats-py's first connect retries for ever (as we ask
        it to), so it runs on its own task, and until it succeeds each attempt of the loop
        reports the last reason it gave."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name="nats-connect")
        await asyncio.wait([self._connecting], timeout=_CONNECT_TIMEOUT_S)
        if not self._connecting.done():
            raise RetryableSinkError(
                f"cannot connect to {self._url}: {self._connect_error or 'no answer'}"
            )
        connecting, self._connecting = self._connecting, None
        return connecting.result()

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing is best effort: we are stopping
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await client.close()

    async def deliver(self, rows: Sequence[PendingRow]) -> None:
        client = self._client
        assert client is not None  # prepare() ran
        if not client.is_connected:
            raise RetryableSinkError(f"not connected to {self._url}")
        self._acks.clear()
        self._duplicates = 0
        self._page_acked.clear()
        self._last_seq = rows[-1].seq
        try:
            for index, row in enumerate(rows, 1):
                if index % _WRITE_CHUNK == 0:  # let nats-py's flusher send, the server start
                    await asyncio.sleep(0)
                await client.publish(
                    self.subject(row.type),
                    row.body.encode(),
                    reply=f"{self._inbox}.{row.seq}",
                    headers={"Nats-Msg-Id": row.id},
                )
        except nats.errors.Error as exc:  # closed, reconnecting with a full buffer
            raise RetryableSinkError(
                f"publish to {self._url}: {type(exc).__name__}: {exc}",
                confirmed=self._acked_head(rows),
            ) from exc
        why = "the connection was lost"
        try:
            async with asyncio.timeout(self._nats.ack_timeout_s):
                await self._page_acked.wait()
        except TimeoutError:
            why = f"none within {self._nats.ack_timeout_s:g} s"
        confirmed = self._acked_head(rows)
        if self._duplicates:
            self.duplicates += self._duplicates
            log.info(
                "%s: JetStream already held %d of these %d events (sent again after a crash or"
                " a lost ack): dropped as duplicates",
                self.label,
                self._duplicates,
                len(rows),
            )
        if confirmed == len(rows):
            return
        row = rows[confirmed]
        if row.seq not in self._acks:
            raise RetryableSinkError(
                f"no PubAck from {self._url} for {len(rows) - confirmed} of {len(rows)}"
                f" publishes: {why}",
                confirmed=confirmed,
            )
        reason = self._acks[row.seq] or ""
        if reason.startswith(("5", "429")):  # the stream or server is busy, full or gone
            raise RetryableSinkError(reason, confirmed=confirmed)
        raise RejectedBatchError(reason, None, confirmed=confirmed, refused=1)

    def _acked_head(self, rows: Sequence[PendingRow]) -> int:
        """How many rows at the head of the page JetStream has stored."""
        for index, row in enumerate(rows):
            if row.seq not in self._acks or self._acks[row.seq] is not None:
                return index
        return len(rows)

    async def _on_ack(self, message: Msg) -> None:
        seq = int(message.subject.rpartition(".")[2])
        if message.headers and message.headers.get("Status") == _NO_RESPONDERS:
            self._acks[seq] = f"503 no stream takes {self.subjects}: is {self._nats.stream} gone?"
        elif b'"error"' not in message.data:  # the common case, without parsing it
            self._acks[seq] = None
            if b'"duplicate"' in message.data:
                self._duplicates += 1
        else:
            error = json.loads(message.data)["error"]
            self._acks[seq] = (
                f"{error.get('code')} {error.get('description')} (JetStream error"
                f" {error.get('err_code')})"
            )
        if seq >= self._last_seq:
            self._page_acked.set()

    async def _connect(self) -> NatsClient:
        settings = self._nats
        reported: set[str] = set()

        async def on_error(exc: Exception) -> None:
            text = self._connect_error = f"{type(exc).__name__}: {exc}"
            # Before the first connect the delivery loop reports it; after, nats-py reports
            # each failed reconnect: once is enough.
            if self._client is not None and text not in reported:
                reported.add(text)
                log.warning("%s: %s: %s", self.label, self._url, text)

        async def on_disconnected() -> None:
            self._page_acked.set()  # what the server had not acked is lost with it: resend
            if self._client is None:  # we are closing it
                return
            log.warning("%s: disconnected from %s; reconnecting", self.label, self._url)

        async def on_reconnected() -> None:
            reported.clear()
            self._connect_error = None
            log.info("%s: reconnected to %s", self.label, self._url)
            self.wake()

        try:
            tls = None
            if settings.tls is not None or self._url.startswith("tls:"):
                tls = client_tls_context(settings.tls)  # a missing file: OSError, one line
            return await nats.connect(
                self._url,
                name="lantern",
                connect_timeout=_CONNECT_TIMEOUT_S,
                reconnect_time_wait=_RECONNECT_WAIT_S,
                max_reconnect_attempts=-1,  # a store outlives any outage of the region
                tls=tls,
                user_credentials=str(settings.credentials) if settings.credentials else None,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise RetryableSinkError(
                f"cannot connect to {self._url}: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc

    async def _check_stream(self, client: NatsClient) -> None:
        """The stream exists and takes our subjects, or is created when we may; else one line
        naming what to change."""
        stream, jetstream = self._nats.stream, client.jetstream()
        try:
            try:
                info = await jetstream.stream_info(stream)
            except nats.js.errors.NotFoundError:
                if not self._nats.create_stream:
                    raise RetryableSinkError(
                        f"stream {stream} does not exist on {self._url}: create it for subjects"
                        f" {self.subjects}, or set nats_sink.create_stream: true"
                    ) from None
                info = await jetstream.add_stream(
                    StreamConfig(
                        name=stream,
                        subjects=[self.subjects],
                        storage=StorageType.FILE,
                        duplicate_window=self._nats.duplicate_window_s,
                    )
                )
                log.info(
                    "%s: created stream %s (file storage, subjects %s, duplicate window %g s)",
                    self.label,
                    stream,
                    self.subjects,
                    self._nats.duplicate_window_s,
                )
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
            raise RetryableSinkError(
                f"JetStream is not enabled on {self._url} (nats-server -js)"
            ) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise RetryableSinkError(
                f"cannot check stream {stream} on {self._url}: {type(exc).__name__}: {exc}"
            ) from exc
        subjects = info.config.subjects or []
        if not any(subject_covers(pattern, self.subjects) for pattern in subjects):
            raise RetryableSinkError(
                f"stream {stream} on {self._url} does not take {self.subjects} (its subjects:"
                f" {', '.join(subjects) or 'none'}): add them, or set nats_sink.stream"
            )
        window = info.config.duplicate_window or 0
        if window < self._nats.duplicate_window_s:
            log.warning(
                "%s: stream %s drops duplicates only within %g s, less than %g s: an event"
                " resent after a longer outage may be stored twice",
                self.label,
                stream,
                window,
                self._nats.duplicate_window_s,
            )
