"""The local action sink: a rule that publishes while the store's broker is down.

Real Mosquitto (stopped and started), the real gateway, a device that goes silent so that a
``device.offline`` rule fires exactly while the broker is away, as issue 9 found it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.sinks.mqtt_actions import MqttActionSink
from rules.model import parse_rules
from tests.gateway.sink_parts import mosquitto_with_persistence
from tests.gateway.test_sink_mqtt_bridge import CentralSubscriber
from tests.helpers import Publisher, make_settings, running_gateway, wait_until

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


def test_actions_wait_for_the_broker_and_an_expired_one_is_dropped_never_published(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "notice.yaml").write_text(NOTICE_RULE)
    (rules / "flash.yaml").write_text(FLASH_RULE)

    async def scenario() -> None:
        with mosquitto_with_persistence() as broker:
            screen = CentralSubscriber(broker.port, "store/#")
            settings = make_settings(
                tmp_path / "data",
                broker.url,
                mqtt={"reconnect_max_s": 0.5},
                devices=[{"id": "printer-1", "expected_interval_s": 2}],
                rules={"dir": rules},
            )
            try:
                async with running_gateway(settings) as gateway:
                    (sink,) = [s for s in gateway._sinks if isinstance(s, MqttActionSink)]
                    with Publisher(broker.port) as printer:
                        printer.publish_all([("lantern/s1/device/printer-1/status", "online")])
                    await wait_until(lambda: bool(gateway.inventory.devices()))
                    await asyncio.to_thread(broker.stop)
                    assert gateway.inventory.devices()[0].online, "stopped before it fell silent"
                    # Silent for its interval: offline, both rules fire, the broker is down.
                    await wait_until(lambda: sink.last_error is not None, timeout_s=10)
                    assert "broker is not connected" in (sink.last_error or "")
                    await asyncio.sleep(1.5)  # the flash's second runs out while it waits
                    assert sink.delivered == 0
                    await asyncio.to_thread(broker.start)
                    await wait_until(lambda: sink.delivered == 1, timeout_s=15)
                    await wait_until(lambda: len(screen.received) >= 1)
                    await asyncio.sleep(0.5)  # a late flash would arrive now
                    status = await sink.status()
                    assert (status.dropped, status.cursor_lag, status.last_error) == (1, 0, None)
            finally:
                screen.close()
            assert [r.event for r in screen.received] == [{"device": "printer-1", "rule": "notice"}]

    asyncio.run(scenario())  # the gateway stayed up throughout and stopped cleanly
