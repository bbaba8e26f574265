"""Barcode-scanner bridge: an ESP32 between a serial (UART) barcode scanner and the store's Wi-Fi.

The scanner sends each read as a line (CR, LF or both after it, as scanners do in their serial
or "RS-232" mode; set it to send AIM symbology identifiers, ``]C1``, ``]E0``...). Each read is
published to ``lantern/{store}/scanner/{id}`` at QoS 1 as ``{"code": ..., "time": ...}``
(``time`` once NTP has set the clock), which devices/barcode.py decodes. Reads wait in a bounded
queue while Wi-Fi or the broker is away and go out in order when they are back.

``config.json`` beside this file: ``store``, ``id``, ``wifi``, ``mqtt``, and ``uart``
(``{"id": 1, "baudrate": 9600, "rx": 16, "tx": 17}``); optional ``queue_max``,
``report_interval_s``, ``ntp_host`` and ``battery``.
"""

import lantern_device
import machine

FIRMWARE = "barcode-bridge 0.1.0"
LOOP_MS = 20  # a scanner sends a read in a few ms at 9600 baud; the UART buffers the rest
MAX_CODE_BYTES = 512  # longer than any symbology's capacity: a line past it is noise


class LineReader:
    """Reads from a UART: one code per CR- or LF-terminated line."""

    def __init__(self, uart):
        self.uart = uart
        self.unreadable = 0  # lines too long, or not UTF-8: counted, not sent
        self._buffer = b""

    def codes(self):
        """The codes completed since the last call."""
        data = self.uart.read() if self.uart.any() else None
        if not data:
            return []
        lines = (self._buffer + data).replace(b"\n", b"\r").split(b"\r")
        self._buffer = lines.pop()  # what follows the last line end: a read still coming
        if len(self._buffer) > MAX_CODE_BYTES:
            self._buffer = b""
            self.unreadable += 1
        codes = []
        for line in lines:
            if not line:
                continue  # the LF of a CR LF pair
            try:
                codes.append(line.decode("utf-8"))
            except UnicodeError:
                self.unreadable += 1
        return codes


class Bridge:
    def __init__(self, device, uart):
        self.device = device
        self.reader = LineReader(uart)
        self._topic = lantern_device.device_topic(device.config, "scanner")

    def step(self):
        for code in self.reader.codes():
            self.device.send(self._topic, {"code": code})
        self.device.service()


def main():
    config = lantern_device.load_config()
    uart = config["uart"]
    bridge = Bridge(
        lantern_device.device_of(config, FIRMWARE),
        machine.UART(uart["id"], baudrate=uart["baudrate"], rx=uart["rx"], tx=uart["tx"]),
    )
    lantern_device.run(bridge.step, LOOP_MS)


if __name__ == "__main__":
    main()
