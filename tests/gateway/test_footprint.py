"""What a gateway loads before its configuration asks for more: memory is the box's budget.

A sink's client, the console and the box's radio come in only when configured, and the CEL
engine's package without its command-line REPL (``rules/conditions.py``).
"""

from __future__ import annotations

import subprocess
import sys

# Each of these is 5-25 MiB of a gateway that no store.yaml has asked for yet.
LOADED_ONLY_WHEN_CONFIGURED = (
    "aiohttp",  # the HTTP sink's client
    "nats",  # the NATS sink's
    "fastapi",  # the console
    "uvicorn",
    "bleak",  # the box's own radio
    "cryptography",
    "prompt_toolkit",  # cel's REPL, never
    "pygments",
    "rich",
)


def test_starting_a_gateway_loads_no_optional_part() -> None:
    probe = (
        "import sys, gateway.app, gateway.build, gateway.cli;"
        f" print(' '.join(m for m in {LOADED_ONLY_WHEN_CONFIGURED!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
