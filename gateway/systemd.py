"""Telling systemd how the gateway is (``sd_notify``), without a dependency.

Under ``Type=notify`` systemd passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or
``@name`` for the abstract namespace) and reads ``KEY=value`` lines from it: ``READY=1`` ends
start-up, ``STATUS=`` is what ``systemctl status lantern`` shows, ``WATCHDOG=1`` proves the
process is alive, ``STOPPING=1`` says a stop has begun. With ``WatchdogSec=`` set, systemd
also passes ``$WATCHDOG_USEC`` and restarts the service when no ``WATCHDOG=1`` arrives in that
time. The pings come from a task on the event loop, so a loop that is stuck (a blocking call,
a busy coroutine) stops them and is restarted, which a thread pinging beside it would hide.
Before ``READY=1`` the same pings extend the start-up timeout (``EXTEND_TIMEOUT_USEC=``).

Without ``$NOTIFY_SOCKET`` (a terminal, the tests, the demo) every call is a no-op. Sending
never blocks (the socket is non-blocking) and never raises: a failure is logged once, since a
notification that cannot be sent must not stop the gateway it reports on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)


class _Notifier:
    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._failing = False
        self.ready_sent = False  # start-up is over for systemd: the watchdog is armed

    def send(self, message: str, environ: Mapping[str, str]) -> bool:
        """Send one notification; whether it was sent (False: not under systemd, or failed)."""
        address = _address(environ.get("NOTIFY_SOCKET", ""))
        if address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)
            self._socket.sendto(message.encode("utf-8", "replace"), address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot notify systemd at %s (%s); the service manager may think the"
                    " gateway is not ready or stuck: %s",
                    environ.get("NOTIFY_SOCKET"),
                    message.split("=", 1)[0],
                    exc,
                )
            return False
        if self._failing:
            self._failing = False
            log.info("notifying systemd again at %s", environ.get("NOTIFY_SOCKET"))
        return True


def _address(value: str) -> str | bytes | None:
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None  # unset, or a kind we do not speak (vsock:): nothing to notify


_notifier = _Notifier()


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``KEY=value`` lines to systemd; False when not under systemd or when it failed."""
    return _notifier.send(message, os.environ if environ is None else environ)


def ready() -> bool:
    _notifier.ready_sent = True
    return notify("READY=1")


def status(line: str) -> bool:
    return notify("STATUS=" + line.replace("\n", " "))


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_period_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd set for this process (pinging twice per timeout
    survives one late wakeup), or None when nothing watches it."""
    environ = os.environ if environ is None else environ
    watched_pid = environ.get("WATCHDOG_PID")
    if watched_pid and watched_pid != str(os.getpid()):
        return None  # inherited from the process systemd watches: not ours
    try:
        timeout_us = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return timeout_us / 2e6 if timeout_us > 0 else None


async def watchdog_loop(interval_s: float, status_line: Callable[[], str | Awaitable[str]]) -> None:
    """Ping ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` and refresh ``STATUS=`` at least every
    ``interval_s``, until cancelled. Returns at once when not under systemd.

    systemd arms the watchdog only at ``READY=1``. Until then (the gateway may wait long for a
    broker that is down at boot) each ping is ``EXTEND_TIMEOUT_USEC=`` by the watchdog's
    timeout instead: start-up may last as long as the loop is alive, and a loop stuck before
    it is ready is still killed. The status line is asked for after the ping and given until
    the next one (it reads the outbox, whose one writer may be busy); one that fails or takes
    longer is logged once and the pings go on.
    """
    if _address(os.environ.get("NOTIFY_SOCKET", "")) is None:
        return
    ping_s = watchdog_period_s()
    period_s = min(interval_s, ping_s) if ping_s is not None else interval_s
    status_failing = False
    while True:
        if ping_s is not None:
            if _notifier.ready_sent:
                watchdog()
            else:
                notify(f"EXTEND_TIMEOUT_USEC={round(ping_s * 2e6)}")
        try:
            line = status_line()
            if inspect.isawaitable(line):
                async with asyncio.timeout(period_s):  # the next ping must not wait on it
                    line = await line
            status(line)
            status_failing = False
        except Exception:
            if not status_failing:
                log.exception("the systemd status line could not be made; pinging on")
            status_failing = True
        await asyncio.sleep(period_s)
