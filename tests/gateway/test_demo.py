"""``lantern demo``: a whole simulated store that says where everything is and stops cleanly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
# Generous for a loaded CI box; a demo that hangs on stop (as it once did for two minutes
# with amqtt, waiting for acknowledgements) still fails.
STOP_TIMEOUT_S = 30.0
STOPPED = re.compile(r"stopped: the central record holds (\d+) events")


def demo(*args: str, path: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", *args],
        cwd=ROOT,
        env={**os.environ, "PATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(process: subprocess.Popen[str], pattern: str, timeout_s: float) -> list[str]:
    """Output lines up to and including the first that matches."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(lines))


def test_ctrl_c_stops_the_demo_cleanly_after_events_reach_the_central_record() -> None:
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    assert mosquitto is not None
    process = demo(path=f"{os.environ['PATH']}:{Path(mosquitto).parent}")
    try:
        header = read_until(process, r"status page", 30)
        text = "\n".join(header)
        for where in ("broker", "(mosquitto;", "central record", "outbox", "rules", "actions"):
            assert where in text
        read_until(process, r"central holds [1-9]", 30)  # the live one-line summary
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, output
    stopped = STOPPED.search(output)
    assert stopped is not None and int(stopped[1]) > 0, output
    assert "Traceback" not in output


def test_without_mosquitto_the_demo_runs_on_amqtt_and_stops_in_time() -> None:
    no_mosquitto = os.pathsep.join(
        directory
        for directory in os.environ["PATH"].split(os.pathsep)
        if not (Path(directory) / "mosquitto").exists()
    )
    process = demo("--seconds", "5", path=no_mosquitto)
    try:
        output, _ = process.communicate(timeout=5 + STOP_TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "amqtt (in-process)" in output
    stopped = STOPPED.search(output)
    assert stopped is not None and int(stopped[1]) > 0, output
    assert "PUBACK" not in output and "Traceback" not in output
