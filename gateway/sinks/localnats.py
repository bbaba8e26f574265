"""A ``nats-server -js`` of our own on a free port, with a store folder that outlives a restart.

The demo runs one as its central record when the binary is installed; the tests and the drain
benchmark run one each, and stop and start it to play an outage of the region.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from gateway.localbroker import free_port, stop_process, wait_for_port


class NatsServer:
    """A nats-server process with JetStream on; stop() and start() keep the port and store."""

    def __init__(self, port: int | None = None, directory: Path | None = None) -> None:
        self.port = port or free_port()
        self.directory = directory or Path(tempfile.mkdtemp(prefix="lantern-nats-"))
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        # Debian installs it in /usr/sbin, which a user's PATH often lacks.
        return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = self.binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (Debian: apt-get install nats-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "nats.log"
        self._process = subprocess.Popen(
            [
                binary,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.directory),
                "-l",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except OSError:
            self.stop()
            raise RuntimeError(f"nats-server did not start; see {log}") from None

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout_s=10)
            self._process = None
