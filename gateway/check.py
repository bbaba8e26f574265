"""``lantern check``: is this box ready to run? One finding per thing, naming what to fix.

The configuration (as ``lantern run`` reads it: the file, then the environment), the data
folder, the rules folder when one is configured, and the broker: a real MQTT connection with
the configured credentials (TLS for ``mqtts://``) answered within a timeout. Nothing is
changed: the data folder is not created, and the broker connection uses a client id of its
own with no session left behind, so checking a box whose gateway is running does not take
over the gateway's session.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import MqttSettings, Settings, load_settings
from lantern.errors import ConfigError, RulesInvalid

# A broker on the box or the store network answers CONNECT in milliseconds; a few seconds
# tell a slow one from one that is not there without keeping a technician waiting.
BROKER_TIMEOUT_S = 5.0
# CONNACK reason codes that point at the credentials: bad user name or password, not
# authorized (paho maps MQTT 3.1.1's return codes 4 and 5 onto these).
_CREDENTIALS_REFUSED = (134, 135)


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    text: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'error'}: {self.text}"


def check_box(config: Path | None, broker_timeout_s: float = BROKER_TIMEOUT_S) -> Iterator[Finding]:
    """Each check's finding as it is made; the broker's may take up to the timeout."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        for problem in exc.problems:
            yield Finding(False, f"config: {problem}")
        return
    origin = config or os.environ.get("LANTERN_CONFIG") or "defaults and environment"
    yield Finding(True, f"config {origin}: store {settings.store_id}")
    yield check_data_dir(settings)
    if settings.rules.dir is not None:
        yield from check_rules(settings.rules.dir)
    yield check_broker(settings.mqtt, broker_timeout_s)


def check_data_dir(settings: Settings) -> Finding:
    directory = settings.data_dir
    existing = directory
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return Finding(False, f"data_dir: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        return Finding(
            False, f"data_dir: {existing} is not writable by this user (uid {os.geteuid()})"
        )
    if existing != directory:
        return Finding(True, f"data_dir {directory}: does not exist yet, lantern run creates it")
    return Finding(True, f"data_dir {directory}: writable")


def check_rules(directory: Path) -> Iterator[Finding]:
    from gateway.rulesdir import read_rules

    try:
        rules = read_rules(directory)
    except RulesInvalid as exc:
        for problem in exc.problems:
            file = Path(problem.file)
            shown = file if file.is_absolute() else directory / file
            yield Finding(False, f"rules: {shown}: {problem.field}: {problem.message}")
        return
    yield Finding(True, f"rules {directory}: {len(rules)} rules")


def check_broker(mqtt: MqttSettings, timeout_s: float = BROKER_TIMEOUT_S) -> Finding:
    """Connect as the gateway would (credentials, TLS, protocol) and wait for the CONNACK."""
    where = f"{'mqtts' if mqtt.tls else 'mqtt'}://{mqtt.host}:{mqtt.port}"
    who = f"user {mqtt.username}" if mqtt.username else "no user name"
    v5 = mqtt.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"lantern-check-{os.getpid()}",
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else True,
        reconnect_on_failure=False,
    )
    client.connect_timeout = timeout_s
    if mqtt.username:
        client.username_pw_set(mqtt.username, mqtt.password)
    if mqtt.tls:
        client.tls_set_context(ssl.create_default_context())
    answers: list[ReasonCode] = []
    client.on_connect = lambda _client, _userdata, _flags, reason, _props: answers.append(reason)
    properties = None
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0  # leave nothing behind on the broker
    try:
        client.connect(
            mqtt.host, mqtt.port, keepalive=max(5, int(timeout_s)), properties=properties
        )
        deadline = time.monotonic() + timeout_s
        while not answers and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except ssl.SSLError as exc:
        detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return Finding(False, f"mqtt.url: TLS with {where} failed: {detail}")
    except ConnectionResetError:
        if mqtt.tls:  # a plain listener drops a TLS hello
            return Finding(
                False,
                f"mqtt.url: {where} closed the connection during the TLS handshake: is it a"
                " plain listener (mqtt://)?",
            )
        return Finding(False, f"mqtt.url: the broker at {where} closed the connection")
    except OSError as exc:
        return Finding(False, f"mqtt.url: cannot reach the broker at {where}: {_os_reason(exc)}")
    finally:
        client.disconnect()
        with contextlib.suppress(OSError):
            client.loop(timeout=0.1)  # sends the DISCONNECT
    if not answers:
        return Finding(
            False, f"mqtt.url: the broker at {where} did not answer within {timeout_s:g} s"
        )
    reason = answers[0]
    if reason.is_failure:
        fix = "user name and password" if reason.value in _CREDENTIALS_REFUSED else "broker"
        return Finding(
            False, f"mqtt.url: the broker at {where} refused {who}: {reason} (check the {fix})"
        )
    return Finding(True, f"broker {where}: accepted {who} (MQTT {mqtt.protocol})")


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
