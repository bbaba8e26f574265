"""schemathesis against the running console's /openapi.json, with a valid admin token: for
every operation, generated requests (valid and not) never get a 5xx."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import Settings
from tests.gateway.console import WEB_TOKENS, bearer
from tests.helpers import running_gateway

EXAMPLES_PER_OPERATION = 25  # a few hundred requests in all: seconds, not minutes
RULE = """\
id: entered
when: {event: zone.entered}
then:
  - emit: {type: lantern.x.y, data: {}}
"""


def fuzz(base_url: str, headers: dict[str, str]) -> tuple[int, int, list[str]]:
    """(operations, requests, failures) of a schemathesis run against the console."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=headers)
    failures: list[str] = []
    operations = requests = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal requests
            requests += 1
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        check()
    return operations, requests, failures


async def test_no_generated_request_gets_a_server_error(
    gateway_settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "entered.yaml").write_text(RULE)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    (recordings / "empty.jsonl").write_text("")
    settings = gateway_settings.model_validate(
        {
            **gateway_settings.model_dump(),
            "rules": {"dir": rules},
            "web": {"port": 0, "tokens": WEB_TOKENS, "recordings_dir": recordings},
        }
    )
    gateway: Gateway
    async with running_gateway(settings, clock) as gateway:
        assert gateway.web is not None
        operations, requests, failures = await asyncio.to_thread(
            fuzz, gateway.web.url, bearer("admin")
        )
    print(f"schemathesis: {operations} operations, {requests} requests, {len(failures)} 5xx")
    assert operations >= 12, "the schema lost operations"
    assert requests >= operations * 2
    assert failures == []


pytestmark = pytest.mark.timeout(240)
