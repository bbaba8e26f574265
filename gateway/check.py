"""``lantern check``: is this box ready to run? One finding per thing, naming what to fix.

The configuration (as ``lantern run`` reads it: the file, then the environment), the data
folder, the rules folder when one is configured, and the broker: a real MQTT connection with
the configured credentials (TLS for ``mqtts://``) answered within a timeout. Nothing is
changed: the data folder is not created, and the broker connection uses a client id of its
own with no session left behind, so checking a box whose gateway is running does not take
over the gateway's session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.config import MqttSettings, Settings, load_settings
from gateway.mqttwire import (
    CONNACK,
    CREDENTIALS_REFUSED,
    ProtocolError,
    Reader,
    connack_refusal,
    connect_packet,
    disconnect_packet,
)
from lantern.errors import ConfigError, RulesInvalid

# A broker on the box or the store network answers CONNECT in milliseconds; a few seconds
# tell a slow one from one that is not there without keeping a technician waiting.
BROKER_TIMEOUT_S = 5.0


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
        yield from check_rules(settings.rules.dir, settings)
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


def check_rules(directory: Path, settings: Settings) -> Iterator[Finding]:
    """The rules as ``lantern run`` reads them: against what this store has."""
    from gateway.rulesdir import read_rules, store_catalog

    try:
        rules = read_rules(directory, store_catalog(settings))
    except RulesInvalid as exc:
        for problem in exc.problems:
            file = Path(problem.file)
            shown = file if file.is_absolute() else directory / file
            yield Finding(False, f"rules: {shown}: {problem.field}: {problem.message}")
        return
    yield Finding(True, f"rules {directory}: {len(rules)} rules")


def check_broker(mqtt: MqttSettings, timeout_s: float = BROKER_TIMEOUT_S) -> Finding:
    """Connect as the gateway would (credentials, TLS, protocol) and wait for the CONNACK."""
    return asyncio.run(_check_broker(mqtt, timeout_s))


async def _check_broker(mqtt: MqttSettings, timeout_s: float) -> Finding:
    where = f"{'mqtts' if mqtt.tls else 'mqtt'}://{mqtt.host}:{mqtt.port}"
    who = f"user {mqtt.username}" if mqtt.username else "no user name"
    v5 = mqtt.protocol == "5"
    connect = connect_packet(
        f"lantern-check-{os.getpid()}",
        max(5, int(timeout_s)),
        v5,
        0,  # no session left behind on the broker
        1,
        None,
        mqtt.username,
        mqtt.password,
        clean_start=True,
    )
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                mqtt.host,
                mqtt.port,
                ssl=ssl.create_default_context() if mqtt.tls else None,
                server_hostname=mqtt.host if mqtt.tls else None,
            )
            writer.write(connect)
            wire = Reader(v5)
            while not (packets := wire.feed(await reader.read(4096) or _closed())):
                pass
    except TimeoutError:
        return Finding(
            False, f"mqtt.url: the broker at {where} did not answer within {timeout_s:g} s"
        )
    except ssl.SSLError as exc:
        detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return Finding(False, f"mqtt.url: TLS with {where} failed: {detail}")
    except (ConnectionResetError, _Closed):
        if mqtt.tls:  # a plain listener drops a TLS hello
            return Finding(
                False,
                f"mqtt.url: {where} closed the connection during the TLS handshake: is it a"
                " plain listener (mqtt://)?",
            )
        return Finding(False, f"mqtt.url: the broker at {where} closed the connection")
    except OSError as exc:
        return Finding(False, f"mqtt.url: cannot reach the broker at {where}: {_os_reason(exc)}")
    except ProtocolError as exc:
        return Finding(False, f"mqtt.url: {where} does not speak MQTT as expected: {exc}")
    finally:
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.write(disconnect_packet())
                writer.close()
    kind, _, body = packets[0]
    if kind != CONNACK:
        return Finding(False, f"mqtt.url: {where} answered CONNECT with packet type {kind}")
    reason = Reader(v5).connack(body).reason
    if reason:
        refused = connack_refusal(reason)
        fix = "user name and password" if reason in CREDENTIALS_REFUSED else "broker"
        return Finding(
            False, f"mqtt.url: the broker at {where} refused {who}: {refused} (check the {fix})"
        )
    return Finding(True, f"broker {where}: accepted {who} (MQTT {mqtt.protocol})")


class _Closed(ConnectionError):
    """The broker closed the connection before answering."""


def _closed() -> bytes:
    raise _Closed


def _os_reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
