"""The consumables reporter as flashed (firmware_stubs/micropython/consumables), run step by
step against the real test Mosquitto: its level reports decode as the gateway decodes them
and drive the gateway's reorder debounce; its status carries the battery; its level survives
a reboot."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from devices.model import DeviceStatus, Telemetry
from devices.reorder import ReorderReport, ReorderRequested, ReorderTracker, SlotConfig
from tests.firmware_stubs.board import STORE, Board, Listener
from tests.firmware_stubs.roundtrip import decoded

_DEVICE_IDS = itertools.count(1)  # retained messages outlive a test: each test its own device
GTIN = "07612100055557"
CAPACITY = 12
BATTERY = {"adc_pin": 34, "divider": 2.0, "empty_mv": 3300, "full_mv": 4200}


class Machine:
    """The coffee machine around the board: its pod sensor and refill button, and the board."""

    def __init__(self, board: Board, device_id: str | None = None) -> None:
        self.id = device_id or f"coffee-{next(_DEVICE_IDS)}"
        settings = board.config(
            self.id,
            slot={"name": "pods", "unit": "count", "capacity": CAPACITY, "gtin": GTIN},
            pins={"used": 4, "refilled": 5},
            battery=BATTERY,
        )
        main = board.load("consumables")
        self.pod_used = main.machine.Pin(4)
        self.refill_button = main.machine.Pin(5)
        magazine = main.Magazine(CAPACITY, self.pod_used, self.refill_button)
        self.reporter = main.Reporter(
            main.lantern_device.device_of(settings, main.FIRMWARE), magazine
        )
        self._board = board

    def step(self, count: int = 1) -> None:
        for _ in range(count):
            self.reporter.step()
            self._board.clock.advance(100)

    def reports(self, listener: Listener, count: int) -> list[ReorderReport]:
        topic = f"lantern/{STORE}/reorder/{self.id}"
        observations = [o for message in listener.wait_for(topic, count) for o in decoded(message)]
        assert all(isinstance(observation, ReorderReport) for observation in observations)
        return [o for o in observations if isinstance(o, ReorderReport)]


def test_levels_decode_and_drive_the_reorder_debounce(board: Board, listener: Listener) -> None:
    coffee = Machine(board)
    coffee.step()  # the level at boot
    for _ in range(4):
        coffee.pod_used.press(3)
        coffee.step()

    levels = coffee.reports(listener, 5)
    assert [(report.slot, report.level, report.unit) for report in levels] == [
        ("pods", level, "count") for level in (12.0, 9.0, 6.0, 3.0, 0.0)
    ]
    assert {(report.capacity, report.replacement_gtins) for report in levels} == {
        (float(CAPACITY), (GTIN,))
    }
    # The gateway's debounce, the registry naming no product: the device's GTIN is ordered,
    # once, on the third low report in a row.
    tracker = ReorderTracker(
        [SlotConfig(device_id=coffee.id, slot="pods", threshold=6, rearm_level=10)]
    )
    now = datetime.now(UTC)
    events = [event for report in levels for event in tracker.update(report, now)]
    assert [(type(event), event.level, event.gtin) for event in events] == [
        (ReorderRequested, 0.0, GTIN)
    ]


def test_a_refill_reports_a_full_slot(board: Board, listener: Listener) -> None:
    coffee = Machine(board)
    coffee.pod_used.press(10)
    coffee.step()
    coffee.refill_button.press()
    coffee.pod_used.press(1)  # a pod used after the refill, before the loop saw either
    coffee.step()

    assert [report.level for report in coffee.reports(listener, 3)] == [12.0, 2.0, 11.0]


def test_the_status_carries_the_battery(board: Board, listener: Listener) -> None:
    coffee = Machine(board)
    coffee.step()

    (birth,) = listener.wait_for(f"lantern/{STORE}/device/{coffee.id}/status", 1)
    online, health = decoded(birth)
    assert online == DeviceStatus(device_id=coffee.id, online=True)
    assert isinstance(health, Telemetry)
    # The ADC reads 2.05 V behind a 1:2 divider: 4100 mV, 88 % between 3300 and 4200 mV.
    assert (health.values["battery_mv"], health.values["battery_pct"]) == (4100, 88)
    assert health.values["firmware"] == "consumables 0.1.0"


def test_the_level_survives_a_reboot(board: Board, listener: Listener) -> None:
    coffee = Machine(board)
    coffee.pod_used.press(5)
    coffee.step()
    assert json.loads((board.directory / "level.json").read_text()) == {"level": 7}

    rebooted = Machine(board, coffee.id)
    rebooted.step()

    assert [report.level for report in rebooted.reports(listener, 3)] == [12.0, 7.0, 7.0]


def test_a_torn_level_file_means_a_full_slot(board: Board, listener: Listener) -> None:
    (board.directory / "level.json").write_text('{"lev')
    coffee = Machine(board)
    coffee.step()

    assert [report.level for report in coffee.reports(listener, 1)] == [12.0]
