"""Real parts for the tests, as fixtures: one Mosquitto per session on a free port (tests may
stop and restart it), an HTTP receiver standing in for the central record, a manual clock,
and a gateway running in the test's own event loop; for the sinks, an outbox of the test's own
and a ``nats-server -js``. Also how deep the fuzz tests go.

A test changes the running gateway's settings with ``@pytest.mark.settings(section={...})``;
a test that needs several gateway runs (a restart) uses ``running_gateway`` itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings

from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import Settings
from gateway.localbroker import Mosquitto
from gateway.outbox import Outbox
from gateway.receiver import Receiver
from gateway.sinks.localnats import NatsServer
from tests.gateway.sink_parts import open_outbox
from tests.helpers import Publisher, make_settings, running_gateway

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


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def broker() -> AsyncIterator[Mosquitto]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)")
    mosquitto = Mosquitto()
    await asyncio.to_thread(mosquitto.start)
    yield mosquitto
    await asyncio.to_thread(mosquitto.stop)


@pytest.fixture
def clock() -> ManualClock:
    """Time for the gateway's ticks, receive times, rules polling: moved by the test."""
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as central:
        yield central


@pytest.fixture
def gateway_settings(
    request: pytest.FixtureRequest, tmp_path: Path, broker: Mosquitto, receiver: Receiver
) -> Settings:
    """The test gateway's settings: forwarding to ``receiver``, changed by the test's
    ``@pytest.mark.settings(...)``."""
    overrides: dict[str, Any] = {"http_sink": {"url": receiver.url}}
    marker = request.node.get_closest_marker("settings")
    for key, value in (marker.kwargs if marker else {}).items():
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            overrides[key] = {**overrides[key], **value}
        else:
            overrides[key] = value
    return make_settings(tmp_path / "data", broker.url, **overrides)


@pytest.fixture
async def gateway(gateway_settings: Settings, clock: ManualClock) -> AsyncIterator[Gateway]:
    async with running_gateway(gateway_settings, clock) as running:
        yield running


@pytest.fixture
def device(broker: Mosquitto) -> Iterator[Publisher]:
    """A store device publishing to the broker at QoS 1."""
    with Publisher(broker.port) as publisher:
        yield publisher


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    """An outbox file of the test's own, with no gateway around it: the sink tests commit to
    it and run a sink on it."""
    async with open_outbox(tmp_path) as opened:
        yield opened


@pytest.fixture
async def jetstream(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A ``nats-server -js`` on a free port with a store in ``tmp_path`` (it outlives a
    restart); the tests stop and start it to play an outage of the region."""
    if NatsServer.binary() is None:
        pytest.fail("nats-server is not installed: .ci/run installs it (apt: nats-server)")
    server = NatsServer(directory=tmp_path / "nats")
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)
