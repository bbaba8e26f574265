"""paho-mqtt driven from the asyncio loop: the gateway's one MQTT connection.

paho does the protocol; the loop does the waiting. paho tells us when its socket opens, closes
and has something to write, and we register it with the loop's selector (paho's own asyncio
example), so receiving costs no thread and no queue hop: a readable socket runs
``loop_read`` right in the loop, which calls :meth:`MqttClient._on_message`. That was measured
at about 22k msg/s against 9k for aiomqtt, which also acknowledges before we have committed.

Acknowledgement is manual (``manual_ack=True``): the ingest loop calls :meth:`ack` only after a
message's batch is committed. The session is persistent (MQTT 5 ``clean_start=False`` with a
session expiry; MQTT 3.1.1 ``clean_session=False``), so what we never acknowledged, the broker
redelivers after a crash, with DUP set.

The only thread is paho's blocking TCP connect, run with ``asyncio.to_thread`` so that a slow
or unreachable broker never stalls the loop.

Failures stay inside the connection, as aiomqtt's patterns do: an exception while reading or
writing the socket (from paho or from a callback) is logged and ends the connection, and
:meth:`MqttClient.run` reconnects with backoff; it never reaches the loop's exception handler.
A publish waits for its PUBACK at most ``publish_timeout_s`` and leaves no waiter behind when
it times out or is cancelled. This is the only module that imports paho.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.batch import Inbound
from gateway.clock import Clock
from gateway.config import MqttSettings

__all__ = ["MqttClient", "NotConnectedError", "backoff_delay_s"]

log = logging.getLogger(__name__)

_MISC_INTERVAL_S = 1.0  # paho wants loop_misc about once a second for keepalive pings
_CONNACK_TIMEOUT_S = 10.0  # a broker that accepted TCP but never answers CONNECT
# Packets read per wakeup of the socket reader: paho reads one per loop_read, and going back to
# the selector after each costs more than the packet; 100 keeps the loop fair to other tasks.
_MAX_PACKETS_PER_WAKEUP = 100
# Outgoing QoS 1 publishes (actions, status) in flight at once; they are few and small.
_MAX_INFLIGHT_PUBLISHES = 100
# A QoS 1 publish the broker has not acknowledged in this long is given up by the caller (an
# action sink retries it): on loopback a PUBACK takes milliseconds.
_PUBLISH_TIMEOUT_S = 10.0


class NotConnectedError(ConnectionError):
    """A publish while the broker connection is down; the caller waits and tries again."""


def backoff_delay_s(attempt: int, minimum_s: float, maximum_s: float) -> float:
    """Jittered exponential backoff ("equal jitter"): half fixed, half random, capped."""
    ceiling = min(maximum_s, minimum_s * 2.0**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


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
    ) -> None:
        self._settings = settings
        self._status_topic = status_topic
        self._subscriptions = subscriptions
        self._deliver = on_message
        self._clock = clock
        self._v5 = settings.protocol == "5"
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            clean_session=None if self._v5 else False,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self._client.tls_set_context(ssl.create_default_context())
        self._client.will_set(status_topic, "offline", qos=1, retain=True)
        self._client.max_inflight_messages_set(_MAX_INFLIGHT_PUBLISHES)
        self._client.max_queued_messages_set(0)  # unbounded: an action is never dropped here
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._session = 0
        self._connected = asyncio.Event()
        self._connection_ended = asyncio.Event()
        self._connack: asyncio.Future[bool] | None = None  # set by CONNACK or a disconnect
        self._publish_waiters: dict[int, asyncio.Future[None]] = {}
        self.connect_count = 0
        self.messages_received = 0
        self.last_error: str | None = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = settings.session_expiry_s
            properties.ReceiveMaximum = settings.receive_maximum
            self._client.connect_async(
                settings.host,
                settings.port,
                settings.keepalive_s,
                clean_start=False,
                properties=properties,
            )
        else:
            self._client.connect_async(settings.host, settings.port, settings.keepalive_s)

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
        self._misc_timer = self._loop.call_later(_MISC_INTERVAL_S, self._misc)
        attempt = 0
        try:
            while True:
                self._connection_ended.clear()
                if await self._connect_once():
                    attempt = 0
                    await self._connection_ended.wait()
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
            self._misc_timer.cancel()

    async def _connect_once(self) -> bool:
        self._session += 1  # before the socket opens: acks for the old connection are void
        self._connack = self._loop.create_future()
        try:
            await asyncio.to_thread(self._client.reconnect)
        except (OSError, ssl.SSLError) as exc:
            self.last_error = f"cannot connect: {exc}"
            return False
        try:
            async with asyncio.timeout(_CONNACK_TIMEOUT_S):
                return await self._connack
        except TimeoutError:
            self.last_error = "no CONNACK from the broker"
            self._client.disconnect()
            return False

    def ack(self, inbound: Inbound) -> None:
        """Acknowledge a committed QoS 1 message, if the connection that brought it still lives.

        After a reconnect the broker redelivers whatever was unacknowledged (DUP set), and the
        pipeline recognises it by digest; acking an old packet id on a new connection could
        acknowledge a different message.
        """
        if inbound.qos > 0 and inbound.session == self._session and self.connected:
            self._client.ack(inbound.mid, inbound.qos)

    async def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish and, for QoS 1, wait until the broker acknowledged it.

        NotConnectedError while the connection is down; TimeoutError when no PUBACK came in
        time (the connection is then likely gone, and a reconnect follows).
        """
        if not self.connected:
            raise NotConnectedError(f"not connected to {self._settings.host}:{self._settings.port}")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise NotConnectedError(f"publish refused: {paho.error_string(info.rc)}")
        if qos == 0 or info.is_published():
            return
        waiter = self._loop.create_future()
        self._publish_waiters[info.mid] = waiter
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT_S):
                await waiter
        finally:
            self._publish_waiters.pop(info.mid, None)

    async def close(self) -> None:
        """Say we are going offline (the will only fires on an unclean end), then disconnect."""
        if self.connected:
            try:
                async with asyncio.timeout(2.0):
                    await self.publish(self._status_topic, "offline", qos=1, retain=True)
            except (TimeoutError, NotConnectedError):
                log.warning("MQTT: the broker did not confirm our offline status in time")
            self._client.disconnect()
        self._connected.clear()

    # paho callbacks: they run in the loop thread, inside loop_read / loop_write / loop_misc.

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            self._settle_connack(False)
            return
        self.connect_count += 1
        self.last_error = None
        log.info(
            "MQTT connected to %s:%s (session present: %s)",
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )
        topics: list[tuple[str, Any]] = [
            (topic, SubscribeOptions(qos=qos) if self._v5 else qos)
            for topic, qos in self._subscriptions
        ]
        if topics:
            client.subscribe(topics)
        client.publish(self._status_topic, "online", qos=1, retain=True)
        self._connected.set()
        self._settle_connack(True)

    def _settle_connack(self, accepted: bool) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(accepted)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        if reason is not None and reason.is_failure:
            self.last_error = f"connection lost: {reason}"
        self._settle_connack(False)
        for waiter in self._publish_waiters.values():
            if not waiter.done():
                waiter.set_exception(NotConnectedError("the connection ended before the PUBACK"))
        self._publish_waiters.clear()
        self._connection_ended.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers reject such topics; never let one stop ingest
            topic = message._topic.decode("utf-8", "backslashreplace")
        self.messages_received += 1
        self._deliver(
            Inbound.delivered(
                topic,
                bytes(message.payload),  # already bytes: no copy
                message.qos,
                message.mid,
                message.dup,
                self._clock.now(),
                self._session,
            )
        )

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        waiter = self._publish_waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _misc(self) -> None:
        self._client.loop_misc()
        self._misc_timer = self._loop.call_later(_MISC_INTERVAL_S, self._misc)

    def _in_loop(self, function: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            function(*args)
        else:  # the connect runs in a worker thread
            self._loop.call_soon_threadsafe(function, *args)

    def _on_readable(self) -> None:
        """Read packets while they keep coming, up to a bound (see _MAX_PACKETS_PER_WAKEUP)."""
        try:
            for _ in range(_MAX_PACKETS_PER_WAKEUP):
                before = self.messages_received
                if self._client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    return
                if self.messages_received == before:  # nothing more buffered, or not a PUBLISH
                    return
        except Exception as exc:  # the connection's boundary: end it, run() reconnects
            self._fail("reading", exc)

    def _on_writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:  # the connection's boundary: end it, run() reconnects
            self._fail("writing", exc)

    def _fail(self, doing: str, exc: Exception) -> None:
        log.error("MQTT: %s failed, dropping the connection: %r", doing, exc, exc_info=exc)
        self.last_error = f"{doing} failed: {type(exc).__name__}: {exc}"
        self._client.disconnect()
        if self._connected.is_set():  # paho reports the end only once its socket closes
            self._on_disconnect(self._client, None, None, None, None)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_reader, sock, self._on_readable)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_reader, sock)
        self._in_loop(self._loop.remove_writer, sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_writer, sock, self._on_writable)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_writer, sock)
