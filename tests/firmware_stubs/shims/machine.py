"""MicroPython's ``machine`` on CPython, as much as the firmware stubs use: pins with
interrupts, a UART, an ADC, the watchdog. Each part has a test hook (``press``, ``receive``,
``uv``) standing in for the hardware on the other side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, pin_id: int, mode: int = -1, pull: int = -1) -> None:
        self.id = pin_id
        self._handler: Callable[[Pin], Any] | None = None

    def irq(self, handler: Callable[[Pin], Any] | None = None, trigger: int = 0) -> None:
        self._handler = handler

    def value(self) -> int:
        return 1  # pulled up: idle

    def press(self, times: int = 1) -> None:
        """The sensor or button pulls the pin low ``times`` times."""
        for _ in range(times):
            if self._handler is not None:
                self._handler(self)


class UART:
    def __init__(self, uart_id: int, baudrate: int = 115200, **pins: int) -> None:
        self.id = uart_id
        self.baudrate = baudrate
        self._received = b""

    def any(self) -> int:
        return len(self._received)

    def read(self, nbytes: int | None = None) -> bytes | None:
        if not self._received:
            return None
        count = len(self._received) if nbytes is None else nbytes
        data, self._received = self._received[:count], self._received[count:]
        return data

    def receive(self, data: bytes) -> None:
        """Bytes the scanner sent."""
        self._received += data


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin: Pin) -> None:
        self.pin = pin
        self.uv = 2_050_000  # what the divided cell reads: 4.1 V behind a 1:2 divider

    def atten(self, attenuation: int) -> None:
        self.attenuation = attenuation

    def read_uv(self) -> int:
        return self.uv


class WDT:
    def __init__(self, timeout: int = 5000) -> None:
        self.timeout = timeout
        self.fed = 0

    def feed(self) -> None:
        self.fed += 1


def disable_irq() -> int:
    return 0


def enable_irq(state: int) -> None:
    return None


def unique_id() -> bytes:
    return bytes.fromhex("246f28010203")
