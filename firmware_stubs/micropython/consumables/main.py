"""Consumables reporter: an ESP32 in a smart device (a coffee machine's pod magazine) that says
how much is left, so the store reorders in time.

A sensor pulses a pin once per unit used (a pod ejected: a light barrier or a microswitch), and
staff press a button when they refill the slot. The level (units left), the slot's capacity and
the GTIN of the product that refills it go to ``lantern/{store}/reorder/{id}`` at QoS 1 as
``{"slot", "level", "unit", "capacity", "gtin", "time"}`` on every change and every
``report_interval_s``, which devices/reorder.py decodes; the gateway's debounce turns three low
reports in a row into one ``lantern.reorder.requested``. The level is kept in ``level.json`` so
a power cut does not refill the slot.

``config.json`` beside this file: ``store``, ``id``, ``wifi``, ``mqtt``, and ``slot``
(``{"name": "pods", "unit": "count", "capacity": 40, "gtin": "07612100055557"}``) and ``pins``
(``{"used": 4, "refilled": 5}``, both pulled up, active low); optional ``queue_max``,
``report_interval_s``, ``ntp_host`` and ``battery``.
"""

import json

import lantern_device
import machine

FIRMWARE = "consumables 0.1.0"
LOOP_MS = 100
LEVEL_FILE = "level.json"


class Magazine:
    """The slot's level, counted down by the sensor's pulses and set full by the refill button.

    The interrupt handlers only count: the loop reads and resets the counts with interrupts
    off, so a pulse during the read is never lost.
    """

    def __init__(self, capacity, used_pin, refilled_pin):
        self.capacity = capacity
        self.level = self._saved_level(capacity)
        self._used = 0
        self._refilled = False
        used_pin.irq(handler=self._on_used, trigger=machine.Pin.IRQ_FALLING)
        refilled_pin.irq(handler=self._on_refilled, trigger=machine.Pin.IRQ_FALLING)

    def update(self):
        """True when the level changed since the last call."""
        state = machine.disable_irq()
        used, refilled = self._used, self._refilled
        self._used, self._refilled = 0, False
        machine.enable_irq(state)
        level = self.capacity if refilled else self.level
        level = max(0, level - used)
        if level == self.level:
            return False
        self.level = level
        self._save()
        return True

    def _on_used(self, pin):
        self._used += 1

    def _on_refilled(self, pin):
        self._refilled = True

    @staticmethod
    def _saved_level(capacity):
        try:
            with open(LEVEL_FILE) as file:
                return min(capacity, json.load(file)["level"])
        except (OSError, ValueError, KeyError):  # first boot, or a file torn by a power cut
            return capacity

    def _save(self):
        with open(LEVEL_FILE, "w") as file:
            json.dump({"level": self.level}, file)


class Reporter:
    def __init__(self, device, magazine):
        self.device = device
        self.magazine = magazine
        self._slot = device.config["slot"]
        self._topic = lantern_device.device_topic(device.config, "reorder")
        self._heartbeat = lantern_device.Every(1000 * device.config.get("report_interval_s", 900))
        self.report()  # the level at boot

    def report(self):
        slot = self._slot
        self.device.send(
            self._topic,
            {
                "slot": slot["name"],
                "level": self.magazine.level,
                "unit": slot.get("unit", "count"),
                "capacity": self.magazine.capacity,
                "gtin": slot["gtin"],
            },
        )

    def step(self):
        if self.magazine.update() or self._heartbeat.due():
            self.report()
        self.device.service()


def main():
    config = lantern_device.load_config()
    pins = config["pins"]
    reporter = Reporter(
        lantern_device.device_of(config, FIRMWARE),
        Magazine(
            config["slot"]["capacity"],
            machine.Pin(pins["used"], machine.Pin.IN, machine.Pin.PULL_UP),
            machine.Pin(pins["refilled"], machine.Pin.IN, machine.Pin.PULL_UP),
        ),
    )
    lantern_device.run(reporter.step, LOOP_MS)


if __name__ == "__main__":
    main()
