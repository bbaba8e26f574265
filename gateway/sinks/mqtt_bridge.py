"""The MQTT bridge sink: every event to a central MQTT broker, QoS 1, one topic per type.

Each event goes to ``{prefix}/{store}/{type}`` as its structured CloudEvent JSON (MQTT 5
content type ``application/cloudevents+json``, as the CloudEvents MQTT binding has it), with
the event id both as the user property ``id`` and as the correlation data, so the consumer can
drop a resend by id. The cursor moves only past events whose PUBACK came back with success.

It speaks MQTT 5 over an asyncio stream with the gateway's codec (``gateway/mqttwire.py``),
as a QoS 1 publisher only. Not through paho (its publish path measured about 5,000 QoS 1
messages/s here), nor through the gateway's own client (``gateway/mqtt.py``): that one keeps
a persistent session with a will and a retained status for the store's broker, counts any
PUBACK as success (the bridge must tell a refused event, which it parks, from a retryable
one), and awaits each publish on its own task and future, 25,000 publishes/s when measured
here; a drain after an outage needs 50,000/s and more. A page's publishes are pipelined up to
the broker's Receive Maximum, written a chunk at a time, and their PUBACKs (which a broker
sends in order) taken as they come. The session is clean: what was in flight when a
connection dropped is resent on the next one under new packet ids, and the consumer's dedup
by id drops what had arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from gateway.config import MqttBridgeSinkSettings
from gateway.mqttwire import (
    CONNACK,
    DISCONNECT,
    PUBACK,
    ProtocolError,
    Reader,
    connack_refusal,
    connect_packet,
    disconnect_packet,
    pingreq_packet,
    publish_packet,
)
from gateway.outbox import Outbox, PendingRow
from gateway.sinks.base import Sink, client_tls_context, forwarding_types
from lantern.errors import RejectedBatchError, RetryableSinkError

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0  # TCP, TLS and CONNACK from a broker in the region
_CONTENT_TYPE = "application/cloudevents+json"  # the CloudEvents MQTT binding's, structured
_MAX_PACKET_ID = 65_535
_READ_CHUNK_BYTES = 256 * 1024  # PUBACKs are 4 bytes: one read takes thousands of them
# Publishes written at a time: the broker starts on the first while we build the rest.
_WRITE_CHUNK = 200
_REFUSED = 0x80  # a CONNACK or PUBACK reason code at or above this is a refusal
# Which setting to look at, for the refusals a setting can cause.
_CONNACK_FIX = {
    0x84: "the broker needs MQTT 5",
    0x85: "mqtt_bridge_sink.client_id",
    0x86: "mqtt_bridge_sink.username / password",
    0x87: "mqtt_bridge_sink.username / password, or the broker's ACL",
}
# PUBACK reasons that may pass later; any other failure refuses that one event for good.
_RETRYABLE_PUBACK = {0x80: "unspecified error", 0x83: "implementation specific error",
                     0x87: "not authorized", 0x97: "quota exceeded"}  # fmt: skip


class _Connection:
    """One MQTT 5 connection to the central broker, as a QoS 1 publisher."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        wire: Reader,
        receive_maximum: int,
        maximum_packet_bytes: int | None,
        keepalive_s: int,
    ) -> None:
        self._reader, self._writer, self._wire = reader, writer, wire
        self.receive_maximum = receive_maximum
        self.maximum_packet_bytes = maximum_packet_bytes
        self._keepalive_s = keepalive_s
        self._packet_id = 0
        self.acks: list[tuple[int, int]] = []  # (packet id, reason code), as they arrive
        self.news = asyncio.Event()  # PUBACKs arrived, or the connection ended
        self.lost: str | None = None
        self._written_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._read(), name="mqtt-bridge-read"),
            asyncio.create_task(self._ping(), name="mqtt-bridge-ping"),
        ]

    @classmethod
    async def open(cls, settings: MqttBridgeSinkSettings, client_id: str) -> _Connection:
        """Connect and read the CONNACK; RetryableSinkError saying why when that fails."""
        assert settings.url is not None
        try:
            return await cls._open(settings, settings.url, client_id)
        except (OSError, TimeoutError, ProtocolError) as exc:
            raise RetryableSinkError(
                f"cannot connect to {settings.url}: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc

    @classmethod
    async def _open(cls, settings: MqttBridgeSinkSettings, url: str, client_id: str) -> _Connection:
        parts = urlsplit(url)
        tls = None
        if parts.scheme == "mqtts" or settings.tls is not None:
            tls = client_tls_context(settings.tls)
        port = parts.port or (8883 if tls else 1883)
        username = settings.username or (unquote(parts.username) if parts.username else None)
        password = (
            settings.password.get_secret_value()
            if settings.password
            else (unquote(parts.password) if parts.password else None)
        )
        connect = connect_packet(
            client_id,
            settings.keepalive_s,
            v5=True,
            session_expiry_s=0,  # with clean start: we resend what was in flight ourselves
            receive_maximum=_MAX_PACKET_ID,  # a publisher: the broker sends us no PUBLISH
            will=None,
            username=username,
            password=password,
            clean_start=True,
        )
        wire = Reader(v5=True)
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=tls, limit=_READ_CHUNK_BYTES
            )
            writer.write(connect)
            packets: list[tuple[int, int, bytes]] = []
            while not packets:
                chunk = await reader.read(_READ_CHUNK_BYTES)
                if not chunk:
                    raise ConnectionResetError("the broker closed the connection")
                packets = wire.feed(chunk)
        kind, _, body = packets[0]
        refused = None
        if kind != CONNACK:
            refused = "the broker did not answer CONNECT with a CONNACK"
        else:
            connack = wire.connack(body)
            if connack.reason >= _REFUSED:
                refused = "the broker refused the connection: " + connack_refusal(connack.reason)
                if fix := _CONNACK_FIX.get(connack.reason):
                    refused += f" ({fix})"
                if connack.reason_string:
                    refused += f": {connack.reason_string}"
            elif connack.maximum_qos == 0:
                refused = "the broker takes QoS 0 only; the bridge needs QoS 1"
        if refused is not None:
            writer.close()
            raise RetryableSinkError(f"{url}: {refused}")
        connection = cls(
            reader,
            writer,
            wire,
            connack.receive_maximum,
            connack.maximum_packet_size,
            settings.keepalive_s,
        )
        connection._take(packets[1:])
        return connection

    def next_packet_id(self) -> int:
        self._packet_id = self._packet_id % _MAX_PACKET_ID + 1
        return self._packet_id

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        self._written_at = time.monotonic()
        await self._writer.drain()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._end("closed")
        with contextlib.suppress(Exception):  # best effort: the broker may be gone already
            self._writer.write(disconnect_packet())
            self._writer.close()
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()

    def _end(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
        self.news.set()

    async def _read(self) -> None:
        try:
            while True:
                # The broker answers our pings, so a silence this long is a dead connection.
                async with asyncio.timeout(self._keepalive_s * 1.5):
                    chunk = await self._reader.read(_READ_CHUNK_BYTES)
                if not chunk:
                    self._end("the broker closed the connection")
                    return
                self._take(self._wire.feed(chunk))
        except TimeoutError:
            self._end(f"no answer from the broker in {self._keepalive_s * 1.5:g} s")
        except (OSError, ProtocolError) as exc:
            self._end(f"connection lost: {type(exc).__name__}: {exc}")

    def _take(self, packets: list[tuple[int, int, bytes]]) -> None:
        """PUBACKs to the waiting page; a DISCONNECT ends the connection; PINGRESP is all
        the rest can be (we subscribe to nothing)."""
        for kind, _, body in packets:
            if kind == PUBACK:
                self.acks.append(self._wire.puback(body))
            elif kind == DISCONNECT:
                reason = self._wire.disconnect_reason(body)
                self._end(f"the broker disconnected us (reason 0x{reason:02x})")
        if self.acks:
            self.news.set()

    async def _ping(self) -> None:
        interval = self._keepalive_s / 2
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self._written_at >= interval:
                with contextlib.suppress(OSError):
                    await self.write(pingreq_packet())


class MqttBridgeSink(Sink):
    name = "mqtt-bridge"
    label = "MQTT bridge sink"

    def __init__(self, settings: MqttBridgeSinkSettings, store_id: str, outbox: Outbox) -> None:
        if settings.url is None:
            raise ValueError("the MQTT bridge sink needs a URL")
        super().__init__(settings, outbox, forwarding_types(settings))
        self._bridge = settings
        self._url = self.target = settings.url
        self._client_id = settings.client_id or f"lantern-bridge-{store_id}"
        self._topic_root = f"{settings.topic_prefix}/{store_id}/"
        self._connection: _Connection | None = None

    def topic(self, event_type: str) -> str:
        return self._topic_root + event_type

    async def prepare(self) -> None:
        if self._connection is not None:
            if self._connection.lost is None:
                return
            await self._drop(self._connection)  # it ended while the sink was idle
        self._connection = await _Connection.open(self._bridge, self._client_id)
        log.info("%s: connected to %s", self.label, self._url)

    async def close(self) -> None:
        if self._connection is not None:
            await self._drop(self._connection)

    def _packet(self, row: PendingRow, packet_id: int) -> bytes:
        """The event's structured CloudEvent, its id as user property and correlation data."""
        return publish_packet(
            self.topic(row.type),
            row.body.encode(),
            1,
            False,
            packet_id,
            v5=True,
            user_properties=(("id", row.id),),
            correlation_data=row.id.encode(),
            content_type=_CONTENT_TYPE,
            utf8_payload=True,
        )

    async def deliver(self, rows: Sequence[PendingRow]) -> None:
        connection = self._connection
        assert connection is not None  # prepare() ran
        window = min(connection.receive_maximum, _MAX_PACKET_ID)
        reasons: list[int | None] = [None] * len(rows)
        in_flight: dict[int, int] = {}  # packet id -> row index
        sent = acked = 0
        end = len(rows)  # the page ends before an event too large for the broker, if any
        too_large: str | None = None
        limit = connection.maximum_packet_bytes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._bridge.ack_timeout_s
        while acked < end:
            packets: list[bytes] = []
            while sent < end and len(in_flight) < window and len(packets) < _WRITE_CHUNK:
                packet_id = connection.next_packet_id()
                packet = self._packet(rows[sent], packet_id)
                if limit is not None and len(packet) > limit:
                    too_large = (
                        f"{len(packet)} bytes: more than the broker's maximum packet size {limit}"
                    )
                    end = sent  # what is before it is delivered first, then it is refused
                    break
                in_flight[packet_id] = sent
                packets.append(packet)
                sent += 1
            try:
                if packets:
                    await connection.write(b"".join(packets))
                    await asyncio.sleep(0)  # let the reader take the PUBACKs that came
                if sent == end or len(in_flight) >= window:
                    async with asyncio.timeout_at(deadline):
                        while not connection.acks and connection.lost is None:
                            connection.news.clear()
                            await connection.news.wait()
            except (OSError, TimeoutError) as exc:
                lost = connection.lost or (
                    f"no PUBACK within {self._bridge.ack_timeout_s:g} s"
                    if isinstance(exc, TimeoutError)
                    else f"{type(exc).__name__}: {exc}"
                )
                await self._drop(connection)
                raise RetryableSinkError(
                    f"{self._url}: {lost}", confirmed=self._head(reasons)
                ) from exc
            for packet_id, reason in connection.acks:
                index = in_flight.pop(packet_id, None)
                if index is not None:
                    reasons[index] = reason
                    acked += 1
            connection.acks.clear()
            if connection.lost is not None:
                await self._drop(connection)
                raise RetryableSinkError(
                    f"{self._url}: {connection.lost}", confirmed=self._head(reasons)
                )
            deadline = loop.time() + self._bridge.ack_timeout_s
        confirmed = self._head(reasons)
        if confirmed == end and too_large is not None:
            raise RejectedBatchError(too_large, confirmed=confirmed, refused=1)
        if confirmed < end:
            reason = reasons[confirmed] or 0
            if reason in _RETRYABLE_PUBACK:
                topic = self.topic(rows[confirmed].type)
                raise RetryableSinkError(
                    f"{self._url}: PUBACK {_RETRYABLE_PUBACK[reason]} for {topic}",
                    confirmed=confirmed,
                )
            raise RejectedBatchError(
                f"PUBACK reason 0x{reason:02x}", None, confirmed=confirmed, refused=1
            )

    async def _drop(self, connection: _Connection) -> None:
        """Give up a failed connection (its reader and pinger with it); prepare() opens anew."""
        self._connection = None
        await connection.close()

    @staticmethod
    def _head(reasons: list[int | None]) -> int:
        """How many events at the head of the page the broker took (a reason below 0x80)."""
        for index, reason in enumerate(reasons):
            if reason is None or reason >= _REFUSED:
                return index
        return len(reasons)
