"""MicroPython's ``network`` on CPython: a station interface and the store's access point.

``ACCESS_POINT`` is the test hook: ``drop()`` takes the Wi-Fi away (and, as a real drop does,
kills every connection made over it: the broker sees them end without a DISCONNECT and
publishes their wills); ``restore()`` brings it back."""

from __future__ import annotations

from typing import Any, Protocol

STA_IF = 0
AP_IF = 1


class _Connection(Protocol):
    def break_off(self) -> None: ...


class AccessPoint:
    def __init__(self, ssid: str = "store-devices", rssi_dbm: int = -58) -> None:
        self.ssid = ssid
        self.rssi_dbm = rssi_dbm
        self.up = True
        self._connections: list[_Connection] = []

    def attach(self, connection: _Connection) -> None:
        self._connections.append(connection)

    def drop(self) -> None:
        self.up = False
        for connection in self._connections:
            connection.break_off()
        self._connections.clear()

    def restore(self) -> None:
        self.up = True


ACCESS_POINT = AccessPoint()


class WLAN:
    def __init__(self, interface: int = STA_IF) -> None:
        self.interface = interface
        self._active = False
        self._joined = False

    def active(self, on: bool | None = None) -> bool:
        if on is not None:
            self._active = on
        return self._active

    def connect(self, ssid: str, key: str | None = None) -> None:
        if not self._active:
            raise OSError("Wifi Not Started")
        self._joined = ACCESS_POINT.up and ssid == ACCESS_POINT.ssid

    def isconnected(self) -> bool:
        self._joined = self._joined and ACCESS_POINT.up
        return self._joined

    def status(self, param: str | None = None) -> Any:
        if param == "rssi":
            return ACCESS_POINT.rssi_dbm
        return 1010 if self.isconnected() else 1001  # STAT_GOT_IP, STAT_CONNECTING

    def config(self, name: str) -> Any:
        if name == "mac":
            return bytes.fromhex("246f28010203")
        raise ValueError(name)
