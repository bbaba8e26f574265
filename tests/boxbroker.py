"""The store box's broker as shipped (``systemd/mosquitto-lantern.conf``), run from a copy.

Only what must differ to run it beside other tests is substituted: the port (on 127.0.0.1),
the password file, the persistence, log and pid paths, and the user (run as root, Mosquitto
drops to the ``mosquitto`` user, who cannot read a root-owned temporary folder). Everything
else is the shipped file, so a test of this broker is a test of what a store runs. A benchmark
may override single settings (``autosave_interval``) to compare them.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.localbroker import Mosquitto

SHIPPED_BROKER_CONFIG = (
    Path(__file__).resolve().parent.parent / "systemd" / "mosquitto-lantern.conf"
)
# The lines a copy must replace: a shipped file without one of them is not the store's config.
_PLACED_KEYS = ("listener", "password_file", "persistence_location", "log_dest", "pid_file")
_SESSION_EXPIRY_S = 86_400  # the gateway's default (mqtt.session_expiry_s)


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """A Mosquitto password file (hashed, as ``mosquitto_passwd -b`` writes it)."""
    path.unlink(missing_ok=True)
    for user, password in users.items():
        create = [] if path.exists() else ["-c"]
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(path), user, password],
            check=True,
            capture_output=True,
        )


def box_config(
    shipped: str, port: int, directory: Path, overrides: Mapping[str, str] | None = None
) -> str:
    """The shipped config with the placed keys pointed at ``directory`` and ``port``."""
    replacements = {
        "listener": f"listener {port} 127.0.0.1",
        "password_file": f"password_file {directory / 'passwd'}",
        "persistence_location": f"persistence_location {directory}/",
        "log_dest": f"log_dest file {directory / 'mosquitto.log'}",
        "pid_file": f"pid_file {directory / 'mosquitto.pid'}",
        "user": f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        **{key: f"{key} {value}" for key, value in (overrides or {}).items()},
    }
    lines, replaced = [], set()
    for line in shipped.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() and not line.startswith("#") else ""
        if key in replacements:
            if key in replaced:
                raise ValueError(f"the shipped broker config sets {key} twice")
            replaced.add(key)
            lines.append(replacements[key])
        else:
            lines.append(line)
    if missing := [key for key in _PLACED_KEYS if key not in replaced]:
        raise ValueError(f"the shipped broker config has no {', '.join(missing)}")
    lines += [line for key, line in replacements.items() if key not in replaced]
    return "\n".join(lines) + "\n"


class BoxBroker(Mosquitto):
    """A mosquitto process on the shipped config, with a password file of ``users``; as any
    Mosquitto here, kill() is a SIGKILL and start() comes back on the same port and folder."""

    def __init__(
        self,
        users: Mapping[str, str],
        overrides: Mapping[str, str] | None = None,
        directory: Path | None = None,
    ) -> None:
        super().__init__(directory=directory or Path(tempfile.mkdtemp(prefix="lantern-box-")))
        self._overrides = overrides
        write_password_file(self.directory / "passwd", users)

    def config_text(self) -> str:
        shipped = SHIPPED_BROKER_CONFIG.read_text()
        return box_config(shipped, self.port, self.directory, self._overrides)

    @property
    def database(self) -> Path:
        return self.directory / "mosquitto.db"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def save(self) -> None:
        """Make the broker write its database now (SIGUSR1), and wait until it has."""
        before = self.database.stat().st_ino if self.database.exists() else None
        os.kill(self.pid, signal.SIGUSR1)
        wait_for(lambda: self.database.exists() and self.database.stat().st_ino != before)


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


def _session(
    port: int,
    client_id: str,
    credentials: tuple[str, str] | None,
    on_message: paho.CallbackOnMessage,
) -> paho.Client:
    """A persistent MQTT 5 session as the gateway keeps one: clean start off from its first
    connection, a day's expiry. (Mosquitto 2.0 never writes a session that began with clean
    start on to its database, whatever its expiry: after a restart it would be gone.)"""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if credentials is not None:
        client.username_pw_set(*credentials)
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = _SESSION_EXPIRY_S
    properties.ReceiveMaximum = 2_000
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    return client


def subscribe_and_leave(
    port: int, client_id: str, topic: str, credentials: tuple[str, str] | None = None
) -> None:
    """Subscribe a persistent session at QoS 1 and disconnect: the broker queues for it."""
    subscribed = threading.Event()
    client = _session(port, client_id, credentials, lambda *_: None)
    client.on_subscribe = lambda *_: subscribed.set()
    client.loop_start()
    client.subscribe(topic, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK")
    client.disconnect()
    client.loop_stop()


def drain(
    port: int, client_id: str, credentials: tuple[str, str] | None = None, idle_s: float = 3.0
) -> list[bytes]:
    """Come back on the session and take every message the broker kept for it (until none
    has come for ``idle_s``)."""
    received: list[bytes] = []
    last = [time.monotonic()]

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        received.append(message.payload)
        last[0] = time.monotonic()

    client = _session(port, client_id, credentials, on_message)
    client.loop_start()
    wait_for(lambda: time.monotonic() - last[0] > idle_s, timeout_s=600)
    client.disconnect()
    client.loop_stop()
    return received
