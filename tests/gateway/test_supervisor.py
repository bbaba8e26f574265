"""A part fails alone: the supervisor logs it once per kind, shows it, restarts it; the end of
a part on purpose is no failure; cancellation is how the gateway stops it."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from gateway.clock import ManualClock
from gateway.supervisor import Supervisor


async def test_a_failing_part_is_restarted_shown_and_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(ManualClock(datetime(2026, 12, 3, tzinfo=UTC)))
    runs = 0
    healthy = asyncio.Event()

    async def flaky_sink() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ConnectionResetError("the far side hung up")
        healthy.set()
        await asyncio.Event().wait()  # runs on, as a healthy part does

    with caplog.at_level(logging.ERROR, logger="gateway.supervisor"):
        async with asyncio.TaskGroup() as tasks:
            kept = tasks.create_task(supervisor.keep("sink:http", flaky_sink))
            await asyncio.wait_for(healthy.wait(), 10)
            (part,) = supervisor.parts.values()
            assert (part.status, part.failures) == ("running", 3)
            assert part.last_error == "ConnectionResetError: the far side hung up"
            kept.cancel()  # the gateway stopping: passes through, nothing logged
    (record,) = caplog.records
    assert "sink:http failed, restarting in" in record.getMessage()
    assert record.exc_info is not None


async def test_a_part_that_ends_by_itself_is_not_restarted() -> None:
    supervisor = Supervisor(ManualClock(datetime(2026, 12, 3, tzinfo=UTC)))

    async def no_adapter() -> None:
        return None

    await asyncio.wait_for(supervisor.keep("local-ble", no_adapter), 5)
    assert supervisor.parts["local-ble"].status == "ended"
