"""A broker of our own on a free port: Mosquitto when it is installed, else amqtt in-process.

The demo runs one; the tests run one per session (and stop, kill and restart it to play a
broker outage). The Mosquitto configuration carries the same tuning as the store box's broker
(``systemd/mosquitto-lantern.conf``): persistence on, and queues deep enough that a slow or
absent gateway loses nothing (Mosquitto's default of 1,000 queued messages drops silently).

Mosquitto started as root drops to the ``mosquitto`` user unless told otherwise; that user
cannot write a temporary folder of ours (0700), so it would keep no log and no persistence,
and a restart would lose every queued message. The generated config names the user we run as.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from lantern.errors import StartupError

log = logging.getLogger(__name__)

# Kept identical to systemd/mosquitto-lantern.conf (a test compares them).
BROKER_TUNING = """\
persistence true
autosave_interval 1
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 4000
persistent_client_expiration 2d
"""
_READY_TIMEOUT_S = 10.0


def run_as_this_user() -> str:
    """The config line that keeps mosquitto as the user who started it (as root, it would
    drop to ``mosquitto``, which cannot read or write our folders)."""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, and SIGKILL if it has not ended within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_port(port: int, timeout_s: float = _READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Mosquitto:
    """A mosquitto process with a temporary config and store; stop(), kill() and start() keep
    the port and the store, so a restarted broker resumes its persistent sessions. A subclass
    changes the configuration through :meth:`config_text`."""

    def __init__(self, port: int | None = None, directory: Path | None = None) -> None:
        self.port = port or free_port()
        self.directory = directory or Path(tempfile.mkdtemp(prefix="lantern-mosquitto-"))
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        return (
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            + run_as_this_user()
            + f"persistence_location {self.directory}/\n"
            f"log_dest file {self.directory}/mosquitto.log\n" + BROKER_TUNING
        )

    def start(self) -> None:
        config = self.directory / "mosquitto.conf"
        config.write_text(self.config_text())
        self._process = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_for_port(self.port)
        except OSError:
            self.stop()
            raise RuntimeError(
                f"mosquitto did not start; see {self.directory}/mosquitto.log"
            ) from None

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout_s=5)
            self._process = None

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer: no save, what it held since its last
        save is gone."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def log_text(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class AmqttBroker:
    """The fallback when no mosquitto binary is installed: amqtt, MQTT 3.1.1, in-process."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise StartupError(
                "no broker to run: install mosquitto (apt-get install mosquitto), or amqtt"
                " (pip install 'lantern-gateway[demo]')"
            ) from None

        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {}},
            }
        )
        await self._broker.start()  # listening once it returns (asyncio.start_server)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
