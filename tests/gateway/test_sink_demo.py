"""``lantern demo --sink nats``: the demo's central record is a local ``nats-server -js``."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from gateway.sinks.localnats import NatsServer
from tests.gateway.test_demo import STOP_TIMEOUT_S, STOPPED, demo, read_until


def test_the_demo_forwards_to_a_local_jetstream() -> None:
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    assert mosquitto is not None and NatsServer.binary() is not None
    process = demo("--sink", "nats", path=f"{os.environ['PATH']}:{Path(mosquitto).parent}")
    try:
        header = "\n".join(read_until(process, r"status page", 30))
        assert "nats://127.0.0.1:" in header and "JetStream, stream LANTERN" in header
        read_until(process, r"central holds [1-9]", 30)  # events are in the stream
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:  # a failure above: stop it as a user would, so that its
            process.send_signal(signal.SIGINT)  # broker and nats-server stop with it
            try:
                process.communicate(timeout=STOP_TIMEOUT_S)
            finally:
                process.kill()
    assert process.returncode == 0, output
    stopped = STOPPED.search(output)
    assert stopped is not None and int(stopped.group(1)) > 0, output
    assert "Traceback" not in output
