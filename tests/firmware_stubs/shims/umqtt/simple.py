"""umqtt.simple's ``MQTTClient`` on CPython, over paho-mqtt, against a real broker.

The same calls as micropython-lib's, with the same behaviour the firmware relies on: each call
blocks until it is done (``publish`` at QoS 1 returns once the PUBACK is in), the last will is
sent with CONNECT, and a dead connection raises OSError. The connection goes over the shim
``network``'s access point, so a Wi-Fi drop kills it without a DISCONNECT.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import network
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

_DEFAULT_TIMEOUT_S = 10.0  # a blocking socket without a timeout, but a test must end
_LOOP_STEP_S = 0.01


class MQTTException(Exception):
    pass


class _Socket:
    """What the firmware touches of ``MQTTClient.sock``: the timeout, and closing it."""

    def __init__(self, client: MQTTClient) -> None:
        self._client = client
        self.timeout = _DEFAULT_TIMEOUT_S

    def settimeout(self, seconds: float | None) -> None:
        self.timeout = _DEFAULT_TIMEOUT_S if seconds is None else seconds

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0)

    def close(self) -> None:
        self._client.break_off()


class MQTTClient:
    def __init__(
        self,
        client_id: bytes | str,
        server: str,
        port: int = 0,
        user: str | None = None,
        password: str | None = None,
        keepalive: int = 0,
        ssl: Any = None,
    ) -> None:
        self.client_id = _text(client_id)
        self.server = server
        self.port = port or 1883
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.sock: _Socket | None = None
        self._will: tuple[str, bytes, bool, int] | None = None
        self._paho: paho.Client | None = None
        self._connack: int | None = None

    def set_last_will(
        self, topic: bytes | str, msg: bytes | str, retain: bool = False, qos: int = 0
    ) -> None:
        self._will = (_text(topic), _bytes(msg), retain, qos)

    def connect(self, clean_session: bool = True) -> bool:
        if not network.ACCESS_POINT.up:
            raise OSError(113, "EHOSTUNREACH")
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean_session,
            protocol=paho.MQTTv311,
        )
        if self._will is not None:
            topic, payload, retain, qos = self._will
            client.will_set(topic, payload, qos=qos, retain=retain)
        if self.user:
            client.username_pw_set(self.user, self.password)
        client.on_connect = self._on_connect
        self._paho = client
        self.sock = _Socket(self)
        client.connect(self.server, self.port, self.keepalive or 60)  # OSError when refused
        self._loop_until(lambda: self._connack is not None)
        if self._connack:
            raise MQTTException(self._connack)
        network.ACCESS_POINT.attach(self)
        return False

    def publish(
        self, topic: bytes | str, msg: bytes | str, retain: bool = False, qos: int = 0
    ) -> None:
        client = self._alive()
        info = client.publish(_text(topic), _bytes(msg), qos=qos, retain=retain)
        if qos:
            self._loop_until(info.is_published)

    def ping(self) -> None:
        # paho sends PINGREQ itself when the keepalive is due, from its loop.
        self._step(0)

    def check_msg(self) -> None:
        self._step(0)

    def disconnect(self) -> None:
        client = self._alive()
        client.disconnect()
        self._paho = None

    def break_off(self) -> None:
        """The connection dies under us: no DISCONNECT, so the broker publishes the will."""
        client, self._paho = self._paho, None
        if client is None:
            return
        connection = client.socket()
        if isinstance(connection, socket.socket):
            connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, code: Any, properties: Any
    ) -> None:
        self._connack = int(code.value if hasattr(code, "value") else code)

    def _alive(self) -> paho.Client:
        if self._paho is None:
            raise OSError(-1, "connection closed")
        return self._paho

    def _step(self, timeout_s: float) -> None:
        if self._alive().loop(timeout=timeout_s) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.break_off()
            raise OSError(-1, "connection closed")

    def _loop_until(self, done: Any) -> None:
        assert self.sock is not None
        deadline = time.monotonic() + self.sock.timeout
        while not done():
            if time.monotonic() > deadline:
                raise OSError(110, "ETIMEDOUT")
            self._step(_LOOP_STEP_S)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
