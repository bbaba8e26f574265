"""The barcode-scanner bridge as flashed (firmware_stubs/micropython/barcode_bridge), run
step by step against the real test Mosquitto: reads reach the scanner topic in order through
a Wi-Fi drop, the status topic holds the retained last will or the health report, and every
message it publishes decodes as the gateway decodes it."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from devices.model import DeviceStatus, ScanRead, Telemetry
from tests.firmware_stubs.board import FREE_HEAP_BYTES, STORE, Board, Listener, Received, listen
from tests.firmware_stubs.roundtrip import decoded

_DEVICE_IDS = itertools.count(1)  # retained messages outlive a test: each test its own device
GS1_128 = "]C1010950110153100010LOT12\x1d21SN1"  # as the store simulator's tills send them
EAN_13 = "]E00123601057072"
BACKOFF_FIRST_MS = 1000


def bridge(board: Board, **config: Any) -> Any:
    device_id = f"till-{next(_DEVICE_IDS)}"
    settings = board.config(device_id, uart={"id": 1, "baudrate": 9600, "rx": 16, "tx": 17})
    settings.update(config)
    main = board.load("barcode_bridge")
    device = main.lantern_device.device_of(settings, main.FIRMWARE)
    return main.Bridge(device, main.machine.UART(1, baudrate=9600))


def steps(bridge: Any, board: Board, count: int = 3, ms: int = 20) -> None:
    for _ in range(count):
        bridge.step()
        board.clock.advance(ms)


def codes(messages: list[Received]) -> list[str]:
    reads = [observation for message in messages for observation in decoded(message)]
    assert all(isinstance(read, ScanRead) for read in reads)
    return [read.code for read in reads if isinstance(read, ScanRead)]


def topics(bridge: Any) -> tuple[str, str]:
    device_id = bridge.device.config["id"]
    return f"lantern/{STORE}/scanner/{device_id}", f"lantern/{STORE}/device/{device_id}/status"


def test_reads_reach_the_scanner_topic_and_decode(board: Board, listener: Listener) -> None:
    scanner = bridge(board)
    scans, status = topics(scanner)

    scanner.reader.uart.receive(f"{GS1_128}\r\n{EAN_13}\r9638".encode())
    steps(scanner, board)
    scanner.reader.uart.receive(b"5074\n")
    steps(scanner, board)

    messages = listener.wait_for(scans, 3)
    assert codes(messages) == [GS1_128, EAN_13, "96385074"]
    (read, *_) = decoded(messages[0])
    assert isinstance(read, ScanRead) and read.gtin == "09501101531000"
    assert json.loads(messages[0].payload)["time"].endswith("Z")  # the board's clock is set
    (birth,) = listener.wait_for(status, 1)
    online, health = decoded(birth)
    assert online == DeviceStatus(device_id=scanner.device.config["id"], online=True)
    assert isinstance(health, Telemetry)
    assert health.values["firmware"] == "barcode-bridge 0.1.0"
    assert health.values["free_heap_bytes"] == FREE_HEAP_BYTES
    assert health.values["wifi_rssi_dbm"] == -58


def test_reads_wait_out_a_wifi_drop_and_go_in_order(board: Board, listener: Listener) -> None:
    scanner = bridge(board)
    scans, status = topics(scanner)
    scanner.reader.uart.receive(b"96385074\r\n")
    steps(scanner, board)
    listener.wait_for(scans, 1)

    board.access_point.drop()
    scanner.reader.uart.receive(f"{GS1_128}\r\n{EAN_13}\r\n".encode())
    steps(scanner, board, count=5)
    # The broker saw the connection die and published the retained last will.
    (_, will) = listener.wait_for(status, 2)
    assert (will.payload, decoded(will)) == (
        b"offline",
        [DeviceStatus(device_id=scanner.device.config["id"], online=False)],
    )
    assert [payload for _, payload in scanner.device.queue.items] != []
    assert len(listener.on(scans)) == 1

    board.access_point.restore()
    board.clock.advance(BACKOFF_FIRST_MS)
    steps(scanner, board)

    assert codes(listener.wait_for(scans, 3)) == ["96385074", GS1_128, EAN_13]
    rebirth = listener.wait_for(status, 3)[-1]
    assert json.loads(rebirth.payload)["queued"] == 2  # reported before the queue went out
    assert scanner.device.queue.items == []


def test_the_queue_is_bounded_and_counts_what_it_dropped(board: Board, listener: Listener) -> None:
    scanner = bridge(board, queue_max=2)
    scans, status = topics(scanner)
    board.access_point.drop()
    scanner.reader.uart.receive(b"1\r2\r3\r4\r")
    steps(scanner, board)

    board.access_point.restore()
    board.clock.advance(BACKOFF_FIRST_MS)
    steps(scanner, board)

    assert codes(listener.wait_for(scans, 2)) == ["3", "4"]
    (birth,) = listener.wait_for(status, 1)
    assert json.loads(birth.payload)["dropped"] == 2


def test_a_late_subscriber_finds_the_retained_state(board: Board, listener: Listener) -> None:
    scanner = bridge(board)
    _, status = topics(scanner)
    steps(scanner, board)
    listener.wait_for(status, 1)

    board.access_point.drop()
    listener.wait_for(status, 2)
    with listen(board.broker) as late:
        (retained,) = late.wait_for(status, 1)

    assert (retained.payload, retained.retain) == (b"offline", True)


def test_the_status_report_repeats_and_an_idle_session_stays_up(
    board: Board, listener: Listener
) -> None:
    scanner = bridge(board, report_interval_s=60)
    _, status = topics(scanner)
    steps(scanner, board)
    board.clock.advance(40_000)  # past half the keepalive: the loop pings
    steps(scanner, board, count=1)
    board.clock.advance(60_000)
    steps(scanner, board, count=1)

    reports = listener.wait_for(status, 2)
    assert [json.loads(report.payload)["status"] for report in reports] == ["online", "online"]
    assert json.loads(reports[1].payload)["uptime_s"] == 100
    assert scanner.device.link.client is not None


@pytest.mark.parametrize(
    ("received", "expected", "unreadable"),
    [
        (b"A\r\nB\r\n", ["A", "B"], 0),
        (b"\r\n\r\n", [], 0),
        (b"\xff\xfe\r", [], 1),  # not UTF-8: counted, not sent
        (b"x" * 600, [], 1),  # no line end within any symbology's capacity
    ],
)
def test_line_reader(board: Board, received: bytes, expected: list[str], unreadable: int) -> None:
    main = board.load("barcode_bridge")
    uart = main.machine.UART(1)
    reader = main.LineReader(uart)
    uart.receive(received)

    assert reader.codes() == expected
    assert reader.unreadable == unreadable
