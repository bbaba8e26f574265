"""The gateway's MQTT connection: a small MQTT 5 (and 3.1.1) client on an asyncio protocol.

Receiving is the hot path, so it does per message only what it must: the socket's data
arrives in chunks as large as the kernel has (often hundreds of packets), ``gateway/mqttwire.py``
cuts them into packets, and each PUBLISH goes straight to the ingest callback, with the
receive time taken once per chunk. There is no per-topic callback matching (the router
decides), no thread and no queue hop.

Acknowledgement is manual: ingest calls :meth:`MqttClient.ack` only after a message's batch is
committed, and the PUBACKs of a whole batch leave in one write. The session is persistent
(MQTT 5 clean start off with a session expiry; 3.1.1 clean session off), so what we never
acknowledged, the broker delivers again after a crash, with DUP set.

Failures stay inside the connection, as aiomqtt's patterns do: an exception while reading (a
malformed packet, a bug in a callback) is logged and ends the connection, and :meth:`run`
reconnects with backoff, which starts afresh after every accepted connection; nothing reaches
the loop's exception handler. A publish waits for its PUBACK at most ``_PUBLISH_TIMEOUT_S``
and leaves no waiter behind when it times out, is cancelled or the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from gateway.batch import Inbound
from gateway.clock import Clock
from gateway.config import MqttSettings
from gateway.mqttwire import (
    CONNACK,
    DISCONNECT,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    Connack,
    ProtocolError,
    Reader,
    connack_refusal,
    connect_packet,
    disconnect_packet,
    pingreq_packet,
    puback_packet,
    publish_packet,
    subscribe_packet,
)

__all__ = ["MqttClient", "NotConnectedError", "backoff_delay_s"]

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10.0  # TCP (and TLS) connect, then CONNACK and SUBACK, each
# A QoS 1 publish the broker has not acknowledged in this long is given up by the caller (an
# action sink retries it): on loopback a PUBACK takes milliseconds.
_PUBLISH_TIMEOUT_S = 10.0
# Our own QoS 1 publishes in flight at once (actions, status): they are few and small; the
# broker's receive maximum lowers it further.
_MAX_INFLIGHT_PUBLISHES = 100
_SUBSCRIBE_FAILURE = 0x80  # a SUBACK reason code at or above this refuses the filter
_PACKET_IDS = 65_535


class NotConnectedError(ConnectionError):
    """A publish while the broker connection is down; the caller waits and tries again."""


def backoff_delay_s(attempt: int, minimum_s: float, maximum_s: float) -> float:
    """Jittered exponential backoff ("equal jitter"): half fixed, half random, capped."""
    ceiling = min(maximum_s, minimum_s * 2.0**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class _Protocol(asyncio.Protocol):
    """The socket's events, handed to the client that owns this connection."""

    def __init__(self, client: MqttClient) -> None:
        self._client = client

    def data_received(self, data: bytes) -> None:
        self._client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(exc)


class MqttClient:
    """One MQTT connection: subscribe, receive into a callback, acknowledge, publish."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        status_topic: str,
        subscriptions: list[tuple[str, int]],
        on_message: Callable[[Inbound], None],
        clock: Clock,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._status_topic = status_topic
        self._subscriptions = subscriptions
        self._deliver = on_message
        self._clock = clock
        self._v5 = settings.protocol == "5"
        self._tls = tls or (ssl.create_default_context() if settings.tls else None)
        self._loop = asyncio.get_running_loop()
        self._session = 0  # which connection: an ack is only valid on the one that delivered
        self._transport: asyncio.Transport | None = None
        self._reader = Reader(self._v5)
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._connack: asyncio.Future[Connack] | None = None
        self._suback: asyncio.Future[bytes] | None = None
        self._publish_waiters: dict[int, asyncio.Future[None]] = {}
        self._inflight = asyncio.Semaphore(_MAX_INFLIGHT_PUBLISHES)
        self._next_packet_id = 0
        self._acks = bytearray()  # PUBACKs of this loop turn, sent in one write
        self._last_received = 0.0
        self._last_sent = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self.connect_count = 0
        self.messages_received = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def run(self) -> None:
        """Connect, stay connected, reconnect with jittered backoff; runs until cancelled.

        Backoff grows while attempts fail and starts afresh after every accepted connection,
        so a second outage soon after the first is retried as quickly as the first.
        """
        attempt = 0
        try:
            while True:
                self._ended.clear()
                if await self._connect_once():
                    attempt = 0
                    await self._ended.wait()
                delay = backoff_delay_s(
                    attempt, self._settings.reconnect_min_s, self._settings.reconnect_max_s
                )
                attempt += 1
                log.warning(
                    "MQTT %s:%s: %s; reconnecting in %.1f s",
                    self._settings.host,
                    self._settings.port,
                    self.last_error or "disconnected",
                    delay,
                )
                await asyncio.sleep(delay)
        finally:
            if self._transport is not None:
                self._transport.abort()

    async def _connect_once(self) -> bool:
        settings = self._settings
        self._session += 1
        self._reader = Reader(self._v5)
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                self._transport, _ = await self._loop.create_connection(
                    lambda: _Protocol(self),
                    settings.host,
                    settings.port,
                    ssl=self._tls,
                    server_hostname=settings.host if self._tls else None,
                )
        except TimeoutError:
            self.last_error = "cannot connect: timed out"
            return False
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            self.last_error = f"cannot connect: {why}"
            return False
        self._connack = self._loop.create_future()
        self._write(
            connect_packet(
                self._client_id,
                settings.keepalive_s,
                self._v5,
                settings.session_expiry_s,
                settings.receive_maximum,
                (self._status_topic, b"offline"),
                settings.username,
                settings.password,
            )
        )
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                connack = await self._connack
                if connack.reason:
                    self.last_error = (
                        f"broker refused the connection: {connack_refusal(connack.reason)}"
                    )
                    if connack.reason_string:
                        self.last_error += f" ({connack.reason_string})"
                    self._abort()
                    return False
                self._inflight = asyncio.Semaphore(
                    min(_MAX_INFLIGHT_PUBLISHES, connack.receive_maximum)
                )
                await self._subscribe()
        except TimeoutError:
            self.last_error = "no answer from the broker to CONNECT or SUBSCRIBE"
            self._abort()
            return False
        except NotConnectedError:
            return False  # the connection ended meanwhile: last_error says why
        self.connect_count += 1
        self.last_error = None
        log.info(
            "MQTT connected to %s:%s (session present: %s)",
            settings.host,
            settings.port,
            connack.session_present,
        )
        self._connected.set()
        self._schedule_keepalive()
        self._write(  # retained, not waited for: the will says offline if we die
            publish_packet(self._status_topic, b"online", 1, True, self._packet_id(), self._v5)
        )
        return True

    async def _subscribe(self) -> None:
        if not self._subscriptions:
            return
        self._suback = self._loop.create_future()
        self._write(subscribe_packet(self._packet_id(), self._subscriptions, self._v5))
        reasons = self._reader.suback_reasons(await self._suback)
        for (topic, _), reason in zip(self._subscriptions, reasons, strict=False):
            if reason >= _SUBSCRIBE_FAILURE:
                log.error("MQTT: the broker refused the subscription to %s (0x%02x)", topic, reason)

    def ack(self, inbound: Inbound) -> None:
        """Acknowledge a committed QoS 1 message, if the connection that brought it still lives.

        After a reconnect the broker redelivers whatever was unacknowledged (DUP set), and the
        pipeline recognises it by digest; acking an old packet id on a new connection could
        acknowledge a different message. The acks of one loop turn leave in one write.
        """
        if inbound.qos and inbound.session == self._session and self._transport is not None:
            if not self._acks:
                self._loop.call_soon(self._flush_acks)
            self._acks += puback_packet(inbound.mid)

    def _flush_acks(self) -> None:
        if self._acks and self._transport is not None:
            self._write(bytes(self._acks))
        self._acks.clear()

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        user_properties: Sequence[tuple[str, str]] = (),
        correlation_data: bytes | None = None,
    ) -> None:
        """Publish and, for QoS 1, wait until the broker acknowledged it.

        NotConnectedError while the connection is down (or when it ends before the PUBACK);
        TimeoutError when no PUBACK came in time.
        """
        data = payload.encode("utf-8") if isinstance(payload, str) else payload

        def packet(packet_id: int) -> bytes:
            return publish_packet(
                topic, data, qos, retain, packet_id, self._v5, user_properties, correlation_data
            )

        if not self.connected:
            raise NotConnectedError(f"not connected to {self._settings.host}:{self._settings.port}")
        if qos == 0:
            self._write(packet(0))
            return
        async with self._inflight:
            if not self.connected:
                raise NotConnectedError("the connection ended while the publish waited its turn")
            packet_id = self._packet_id()
            waiter = self._publish_waiters[packet_id] = self._loop.create_future()
            try:
                self._write(packet(packet_id))
                async with asyncio.timeout(_PUBLISH_TIMEOUT_S):
                    await waiter
            finally:
                self._publish_waiters.pop(packet_id, None)

    async def close(self) -> None:
        """Say we are going offline (the will only fires on an unclean end), then disconnect."""
        if self.connected:
            try:
                async with asyncio.timeout(2.0):
                    await self.publish(self._status_topic, "offline", qos=1, retain=True)
            except (TimeoutError, NotConnectedError):
                log.warning("MQTT: the broker did not confirm our offline status in time")
            self._flush_acks()
            if self._transport is not None:
                self._write(disconnect_packet())
                self._transport.close()
        self._connected.clear()

    # The connection's events (in the loop, from _Protocol).

    def _received(self, data: bytes) -> None:
        self._last_received = self._loop.time()
        try:
            packets = self._reader.feed(data)
            if not packets:
                return
            at = self._clock.now()  # once per read: the messages of one read arrived together
            reader, session = self._reader, self._session
            for kind, flags, body in packets:
                if kind == PUBLISH:
                    topic, payload, qos, packet_id, dup, _ = reader.publish(flags, body)
                    self.messages_received += 1
                    self._deliver(
                        Inbound.delivered(topic, payload, qos, packet_id, dup, at, session)
                    )
                elif kind == PUBACK:
                    self._settle(self._publish_waiters.pop(reader.packet_id(body), None))
                elif kind == CONNACK and self._connack is not None:
                    if not self._connack.done():
                        self._connack.set_result(reader.connack(body))
                elif kind == SUBACK and self._suback is not None:
                    if not self._suback.done():
                        self._suback.set_result(body)
                elif kind == DISCONNECT:
                    reason = reader.disconnect_reason(body)
                    self.last_error = f"the broker disconnected us (reason 0x{reason:02x})"
                    self._abort()
                    return
                elif kind != PINGRESP:
                    raise ProtocolError(f"an unexpected packet of type {kind}")
        except Exception as exc:  # the connection's boundary: end it, run() reconnects
            log.error("MQTT: reading failed, dropping the connection: %r", exc, exc_info=exc)
            self.last_error = f"reading failed: {type(exc).__name__}: {exc}"
            self._abort()

    def _lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connected.clear()
        self._acks.clear()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if exc is not None and self.last_error is None:
            self.last_error = f"connection lost: {exc}"
        ended = NotConnectedError(self.last_error or "the connection ended")
        for future in (self._connack, self._suback, *self._publish_waiters.values()):
            if future is not None and not future.done():
                future.set_exception(ended)
                future.exception()  # retrieved: a waiter may be gone already
        self._publish_waiters.clear()
        self._ended.set()

    # Helpers.

    def _write(self, data: bytes) -> None:
        if self._transport is None:
            raise NotConnectedError("the connection ended")
        self._transport.write(data)
        self._last_sent = self._loop.time()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows, in the next loop turn

    def _packet_id(self) -> int:
        for _ in range(_PACKET_IDS):
            self._next_packet_id = self._next_packet_id % _PACKET_IDS + 1
            if self._next_packet_id not in self._publish_waiters:
                return self._next_packet_id
        raise NotConnectedError("every packet id is in flight")  # pragma: no cover

    @staticmethod
    def _settle(waiter: asyncio.Future[Any] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _schedule_keepalive(self) -> None:
        self._keepalive = self._loop.call_later(self._settings.keepalive_s / 2, self._keep_alive)

    def _keep_alive(self) -> None:
        """Ping when we have been quiet; drop a broker that stopped answering (MQTT gives it
        one and a half keepalive intervals)."""
        if self._transport is None:
            return
        now, keepalive = self._loop.time(), self._settings.keepalive_s
        if now - self._last_received > 1.5 * keepalive:
            self.last_error = f"the broker sent nothing for {1.5 * keepalive:.0f} s"
            self._abort()
            return
        if now - self._last_sent >= keepalive / 2:
            self._write(pingreq_packet())
        self._schedule_keepalive()
