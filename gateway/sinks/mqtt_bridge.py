"""The MQTT bridge sink: every event to a central MQTT broker, QoS 1, one topic per type.

Each event goes to ``{prefix}/{store}/{type}`` as its structured CloudEvent JSON (MQTT 5
content type ``application/cloudevents+json``, as the CloudEvents MQTT binding has it), with
the event id both as the user property ``id`` and as the correlation data, so the consumer can
drop a resend by id. The cursor moves only past events whose PUBACK came back with success.

It speaks MQTT 5 itself over an asyncio stream (only what a QoS 1 publisher needs: CONNECT,
PUBLISH, PUBACK, PING, DISCONNECT): paho's publish path measured about 5,000 QoS 1
messages/s here, this one well above the 50,000/s a drain after an outage needs. A page's
publishes are pipelined up to the broker's Receive Maximum, written in one go, and their
PUBACKs (which a broker sends in order) taken as they come. The session is clean: what was in
flight when a connection dropped is resent on the next one under new packet ids, and the
consumer's dedup by id drops what had arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from gateway.config import MqttBridgeSinkSettings
from gateway.outbox import Outbox, PendingRow
from gateway.sinks.base import Sink, client_tls_context, forwarding_types
from lantern.errors import RejectedBatchError, RetryableSinkError

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0  # TCP, TLS and CONNACK from a broker in the region
_CONTENT_TYPE = b"application/cloudevents+json"
_MAX_PACKET_ID = 65_535
_READ_CHUNK_BYTES = 256 * 1024
# Publishes written at a time: the broker starts on the first while we build the rest.
_WRITE_CHUNK = 200  # PUBACKs are 4 bytes: one read takes thousands of them

# Packet types (the high nibble of the first byte) and property identifiers, MQTT 5.0 §2.
_CONNACK, _PUBACK, _PINGRESP, _DISCONNECT = 2, 4, 13, 14
_PUBLISH_QOS1 = b"\x32"
_PINGREQ = b"\xc0\x00"
_PROP_RECEIVE_MAXIMUM, _PROP_MAXIMUM_QOS, _PROP_MAXIMUM_PACKET_SIZE = 0x21, 0x24, 0x27
_PROP_REASON_STRING = 0x1F
# Each property's value as its wire shape: 1, 2 or 4 bytes, a varint, a string or binary
# (2-byte length), or a string pair; needed to step over the ones we do not use.
_PROPERTY_SHAPES = {
    0x01: 1, 0x02: 4, 0x03: "s", 0x08: "s", 0x09: "s", 0x0B: "v", 0x11: 4, 0x12: "s",
    0x13: 2, 0x15: "s", 0x16: "s", 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: "s", 0x1C: "s", 0x1F: "s",
    0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: "p", 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}  # fmt: skip
_CONNACK_REASONS = {
    0x80: "unspecified error",
    0x84: "unsupported protocol version (the broker needs MQTT 5)",
    0x85: "client id not valid (mqtt_bridge_sink.client_id)",
    0x86: "bad user name or password (mqtt_bridge_sink.username / password)",
    # Mosquitto answers a wrong password with this one, not 0x86.
    0x87: "not authorized (mqtt_bridge_sink.username / password, or the broker's ACL)",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x97: "quota exceeded",
}
# PUBACK reasons that may pass later; any other failure refuses that one event for good.
_RETRYABLE_PUBACK = {0x80: "unspecified error", 0x83: "implementation specific error",
                     0x87: "not authorized", 0x97: "quota exceeded"}  # fmt: skip


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sized(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """A variable byte integer at ``at``: its value and where the next field starts."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _properties(data: bytes, at: int) -> dict[int, int | bytes]:
    """The properties at ``at`` (their length first), numbers as ints, strings as bytes."""
    length, at = _read_varint(data, at)
    end, found = at + length, dict[int, int | bytes]()
    while at < end:
        key = data[at]
        shape = _PROPERTY_SHAPES.get(key)
        at += 1
        if isinstance(shape, int):
            found[key] = int.from_bytes(data[at : at + shape], "big")
            at += shape
        elif shape == "v":
            found[key], at = _read_varint(data, at)
        elif shape in ("s", "p"):
            for _ in range(2 if shape == "p" else 1):
                size = int.from_bytes(data[at : at + 2], "big")
                found[key] = data[at + 2 : at + 2 + size]
                at += 2 + size
        else:
            raise ValueError(f"unknown MQTT property 0x{key:02x}")
    return found


class _Connection:
    """One MQTT 5 connection to the central broker, as a QoS 1 publisher."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        receive_maximum: int,
        maximum_packet_bytes: int | None,
        keepalive_s: int,
    ) -> None:
        self._reader, self._writer = reader, writer
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
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
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
        flags = 0x02  # clean start: we resend what was in flight ourselves
        payload = _sized(client_id.encode())
        if username is not None:
            flags |= 0x80
            payload += _sized(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _sized(password.encode())
        body = (
            _sized(b"MQTT")
            + bytes([5, flags])
            + struct.pack("!H", settings.keepalive_s)
            + b"\x00"
            + payload
        )
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=tls, limit=_READ_CHUNK_BYTES
            )
            writer.write(b"\x10" + _varint(len(body)) + body)
            first = await reader.readexactly(1)
            length = 0
            for shift in range(0, 28, 7):
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
            connack = await reader.readexactly(length)
        refused = None
        properties = _properties(connack, 2) if length > 2 else {}
        if first[0] >> 4 != _CONNACK or length < 2:
            refused = "the broker did not answer CONNECT with a CONNACK"
        elif connack[1] >= 0x80:
            refused = "the broker refused the connection: " + _CONNACK_REASONS.get(
                connack[1], f"reason 0x{connack[1]:02x}"
            )
            detail = properties.get(_PROP_REASON_STRING)
            if isinstance(detail, bytes):
                refused += f": {detail.decode(errors='replace')}"
        elif properties.get(_PROP_MAXIMUM_QOS) == 0:
            refused = "the broker takes QoS 0 only; the bridge needs QoS 1"
        if refused is not None:
            writer.close()
            raise RetryableSinkError(f"{url}: {refused}")
        maximum = properties.get(_PROP_MAXIMUM_PACKET_SIZE)
        receive_maximum = properties.get(_PROP_RECEIVE_MAXIMUM, _MAX_PACKET_ID)
        return cls(
            reader,
            writer,
            receive_maximum if isinstance(receive_maximum, int) else _MAX_PACKET_ID,
            maximum if isinstance(maximum, int) else None,
            settings.keepalive_s,
        )

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
            self._writer.write(b"\xe0\x00")  # DISCONNECT, normal
            self._writer.close()
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()

    def _end(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
        self.news.set()

    async def _read(self) -> None:
        buffer = b""
        try:
            while True:
                # The broker answers our pings, so a silence this long is a dead connection.
                async with asyncio.timeout(self._keepalive_s * 1.5):
                    chunk = await self._reader.read(_READ_CHUNK_BYTES)
                if not chunk:
                    self._end("the broker closed the connection")
                    return
                buffer = self._packets(buffer + chunk)
        except TimeoutError:
            self._end(f"no answer from the broker in {self._keepalive_s * 1.5:g} s")
        except (OSError, ValueError, IndexError) as exc:
            self._end(f"connection lost: {type(exc).__name__}: {exc}")

    def _packets(self, buffer: bytes) -> bytes:
        """Take the whole packets off the front of ``buffer``; return what is left."""
        at, size = 0, len(buffer)
        while size - at >= 2:
            kind = buffer[at] >> 4
            length, start, shift = 0, at + 1, 0
            while start < size:  # the remaining length, a varint (one byte for a PUBACK)
                byte = buffer[start]
                start += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break  # the length itself is not all here yet
            if start + length > size:
                break
            if kind == _PUBACK:
                packet_id = (buffer[start] << 8) | buffer[start + 1]
                reason = buffer[start + 2] if length > 2 else 0
                self.acks.append((packet_id, reason))
            elif kind == _DISCONNECT:
                reason = buffer[start] if length else 0
                self._end(f"the broker disconnected us (reason 0x{reason:02x})")
            at = start + length
        if self.acks:
            self.news.set()
        return buffer[at:]

    async def _ping(self) -> None:
        interval = self._keepalive_s / 2
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self._written_at >= interval:
                with contextlib.suppress(OSError):
                    await self.write(_PINGREQ)


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
        self._topics: dict[str, bytes] = {}  # event type -> its topic, encoded and sized
        self._connection: _Connection | None = None

    def topic(self, event_type: str) -> str:
        return self._topic_root + event_type

    async def prepare(self) -> None:
        if self._connection is not None and self._connection.lost is None:
            return
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        self._connection = await _Connection.open(self._bridge, self._client_id)
        log.info("%s: connected to %s", self.label, self._url)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def _packet(self, row: PendingRow, packet_id: int) -> bytes:
        topic = self._topics.get(row.type)
        if topic is None:
            topic = self._topics[row.type] = _sized(self.topic(row.type).encode())
        event_id = _sized(row.id.encode())
        properties = (
            b"\x01\x01"  # payload format: UTF-8
            + b"\x03"
            + _sized(_CONTENT_TYPE)
            + b"\x09"
            + event_id  # correlation data
            + b"\x26\x00\x02id"
            + event_id  # user property id = the event id
        )
        payload = row.body.encode()
        header = topic + packet_id.to_bytes(2, "big") + _varint(len(properties)) + properties
        return _PUBLISH_QOS1 + _varint(len(header) + len(payload)) + header + payload

    async def deliver(self, rows: Sequence[PendingRow]) -> None:
        connection = self._connection
        assert connection is not None  # prepare() ran
        window = min(connection.receive_maximum, _MAX_PACKET_ID)
        reasons: list[int | None] = [None] * len(rows)
        in_flight: dict[int, int] = {}  # packet id -> row index
        sent = acked = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._bridge.ack_timeout_s
        while acked < len(rows):
            packets: list[bytes] = []
            while sent < len(rows) and len(in_flight) < window and len(packets) < _WRITE_CHUNK:
                packet_id = connection.next_packet_id()
                packet = self._packet(rows[sent], packet_id)
                limit = connection.maximum_packet_bytes
                if limit is not None and len(packet) > limit:
                    raise RejectedBatchError(
                        f"{len(packet)} bytes: more than the broker's maximum packet size {limit}",
                        confirmed=self._head(reasons),
                        refused=1,
                    )
                in_flight[packet_id] = sent
                packets.append(packet)
                sent += 1
            try:
                if packets:
                    await connection.write(b"".join(packets))
                    await asyncio.sleep(0)  # let the reader take the PUBACKs that came
                if sent == len(rows) or len(in_flight) >= window:
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
                self._connection = None
                await connection.close()
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
                self._connection = None
                raise RetryableSinkError(
                    f"{self._url}: {connection.lost}", confirmed=self._head(reasons)
                )
            deadline = loop.time() + self._bridge.ack_timeout_s
        confirmed = self._head(reasons)
        if confirmed < len(rows):
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

    @staticmethod
    def _head(reasons: list[int | None]) -> int:
        """How many events at the head of the page the broker took (a reason below 0x80)."""
        for index, reason in enumerate(reasons):
            if reason is None or reason >= 0x80:
                return index
        return len(reasons)
