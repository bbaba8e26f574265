"""Real parts for the tests: one Mosquitto per session on a free port, stoppable; and how deep
the fuzz tests go."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from gateway.localbroker import Mosquitto

# Seeded (derandomized) so that CI and a developer see the same examples; no deadline, since a
# loaded box is slow now and then and big generated payloads are the point. A few hundred
# examples keep a developer's run short; CI (the CI variable set) keeps its 10,000.
settings.register_profile(
    "dev",
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", settings.get_profile("dev"), max_examples=10_000)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def broker() -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)")
    mosquitto = Mosquitto()
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()
