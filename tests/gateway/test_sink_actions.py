"""The local action sink: a rule that publishes while the store's broker is down.

Real Mosquitto (stopped and started), the real gateway, a device that goes silent so that a
``device.offline`` rule fires exactly while the broker is away, as issue 9 found it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.clock import ManualClock
from gateway.localbroker import Mosquitto
from rules.model import parse_rules
from tests.helpers import (
    Publisher,
    Subscriber,
    make_settings,
    running_gateway,
    settled,
    status,
    wait_until,
)

NOTICE_RULE = """\
id: printer-notice
when: {event: device.offline}
then:
  - publish:
      topic: "store/{{ store.id }}/staff/notice"
      payload: {device: "{{ event.device }}", rule: notice}
      ttl: 2m
"""
# The same outage, with an expiry shorter than the broker is away: worthless when it returns.
FLASH_RULE = (
    NOTICE_RULE.replace("printer-notice", "printer-flash")
    .replace("rule: notice", "rule: flash")
    .replace("ttl: 2m", "ttl: 1s")
)


def test_a_publish_ttl_is_parsed_and_defaults_to_five_minutes() -> None:
    rules = parse_rules(
        {
            "a.yaml": NOTICE_RULE,
            "b.yaml": NOTICE_RULE.replace("printer-notice", "b").replace("      ttl: 2m\n", ""),
        }
    )
    ttls = {rule.id: rule.then[0].publish.ttl for rule in rules if rule.then[0].publish}
    assert ttls == {"printer-notice": 120.0, "b": 300.0}


async def test_actions_wait_for_the_broker_and_an_expired_one_is_dropped_never_published(
    tmp_path: Path, broker: Mosquitto
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "notice.yaml").write_text(NOTICE_RULE)
    (rules / "flash.yaml").write_text(FLASH_RULE)
    settings = make_settings(
        tmp_path / "data",
        broker.url,
        mqtt={"reconnect_max_s": 0.5},
        devices=[{"id": "printer-1", "expected_interval_s": 2}],
        rules={"dir": rules},
    )
    # An action's expiry is its event's time plus its ttl, and the sink holds it to the wall
    # clock: the gateway's clock starts behind, so that the device's silence can be long and
    # the flash still expire half a second after it fires.
    clock = ManualClock(datetime.now(UTC) - timedelta(seconds=30))
    with Subscriber(broker.port, "store/#") as screen:
        async with running_gateway(settings, clock) as gateway:

            def actions() -> dict[str, Any]:
                (sink,) = [s for s in status(gateway).sinks() if s["name"] == "mqtt-actions"]
                return sink

            with Publisher(broker.port) as printer:
                printer.publish_all([("lantern/s1/device/printer-1/status", "online")])
            await settled(gateway, 1)
            await asyncio.to_thread(broker.stop)
            try:
                assert status(gateway).devices()[0].online, "stopped before it fell silent"
                # Silent for more than its interval: offline, both rules fire, no broker.
                clock.advance(time.time() - 0.5 - clock.now().timestamp())
                flash_expires = clock.now().timestamp() + 1.0  # fired now, with a ttl of 1 s
                await wait_until(lambda: actions()["last_error"] is not None)
                assert "broker is not connected" in actions()["last_error"]
                # The sink counts what it dropped once the page is done, which waits for the
                # broker: the wall clock passing the flash's expiry is what the test waits for.
                await wait_until(lambda: time.time() > flash_expires)
                assert actions()["delivered"] == 0
            finally:
                await asyncio.to_thread(broker.start)
            await wait_until(lambda: actions()["delivered"] == 1)

            async def cursor_written() -> bool:  # past the notice and the dropped flash
                statuses = await status(gateway).sink_statuses()
                return {s.name: s.cursor_lag for s in statuses}["mqtt-actions"] == 0

            await wait_until(cursor_written)
            assert (actions()["dropped"], actions()["last_error"]) == (1, None)
            # Published after the notice's PUBACK, so it reaches the screen after anything the
            # gateway published: a late flash would come before it.
            with Publisher(broker.port) as last:
                last.publish_all([("store/s1/staff/notice", '{"rule": "last"}')])
            await wait_until(lambda: len(screen.received) >= 2)
    assert [r.event for r in screen.received] == [
        {"device": "printer-1", "rule": "notice"},
        {"rule": "last"},
    ]  # and the gateway stayed up throughout and stopped cleanly
