"""Real parts for the tests: one Mosquitto per session on a free port, stoppable."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from gateway.localbroker import Mosquitto


@pytest.fixture(scope="session")
def broker() -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)")
    mosquitto = Mosquitto()
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()
