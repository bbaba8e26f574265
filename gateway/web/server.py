"""The console's server: uvicorn, run by the gateway as one task of its TaskGroup.

``async with WebServer(...)`` binds the port (a taken one is a one-line StartupError naming
``web.port``, before anything else starts) and keeps the last log lines for the diagnostics;
``run()`` is the task: it serves until cancelled, then closes the open pages' streams and
the connections, and samples the traffic history for the charts meanwhile. uvicorn installs
no signal handlers of its own: the gateway's stop is the only stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Iterator

import uvicorn

from gateway.clock import Clock
from gateway.config import WebSettings
from gateway.status import StatusView
from gateway.web.app import AcceptPost, Console, create_app
from gateway.web.auth import protect
from gateway.web.history import HISTORY_INTERVAL_S
from gateway.web.pages import add_pages
from lantern.errors import StartupError

__all__ = ["WebServer"]

log = logging.getLogger(__name__)

_GRACEFUL_STOP_S = 2  # for answers in flight when the gateway stops; streams end at once
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_BACKLOG = 2_048  # uvicorn's own default


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM and SIGINT are the gateway's: it drains, then stops us


class WebServer:
    """``async with WebServer(...)`` holds the port; ``run()`` serves; ``url`` says where."""

    def __init__(
        self,
        settings: WebSettings,
        status: StatusView,
        accept: AcceptPost,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._status = status
        self._clock = clock
        self.console = Console.of(status, settings, accept, clock)
        app = create_app(self.console)
        add_pages(app, self.console)
        self.app = protect(app, settings)
        self._socket: socket.socket | None = None
        self.host = settings.listen_host
        self.port = settings.port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def __aenter__(self) -> WebServer:
        self._socket = self._bind()
        self.port = int(self._socket.getsockname()[1])
        logging.getLogger().addHandler(self.console.logs)
        if not self._settings.tokens:
            log.warning(
                "the console has no token, so no one can log in; it listens on %s only."
                " Add one: lantern token new --name NAME --role admin",
                self.host,
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        logging.getLogger().removeHandler(self.console.logs)
        if self._socket is not None:
            self._socket.close()

    def _bind(self) -> socket.socket:
        host, port = self.host, self.port
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            listener = socket.socket(family, kind, proto)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(address)
                listener.listen(_BACKLOG)
            except OSError:
                listener.close()
                raise
        except OSError as exc:
            code = exc.errno or errno.EADDRNOTAVAIL
            why = os.strerror(code).lower() if exc.errno else str(exc)
            raise StartupError(
                f"web.port: cannot serve the status page on {host}:{port}: {why}"
                " (another lantern run, or another service, holds it: set web.port)"
            ) from None
        listener.setblocking(False)
        return listener

    async def run(self) -> None:
        """Serve until cancelled (the gateway's stop), then close down in order."""
        assert self._socket is not None, "run() inside async with"
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            http="h11",
            ws="none",
            timeout_graceful_shutdown=_GRACEFUL_STOP_S,
        )
        server = _Server(config)
        sampler = asyncio.create_task(self._sample(), name="web-history")
        try:
            await server.serve(sockets=[self._socket])
        except asyncio.CancelledError:
            self.console.closing.set()  # the live pages' streams end now
            if server.started:  # stopped in its main loop: close what it serves
                await server.shutdown()
            raise
        finally:
            self.console.closing.set()
            self._socket.close()
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

    async def _sample(self) -> None:
        """The traffic history the floor page charts; a failure skips one sample."""
        failing = False
        while True:
            try:
                snapshot = await self._status.snapshot()
                self.console.history.add(
                    self._clock.now(), snapshot.messages_in, snapshot.outbox_depth
                )
                failing = False
            except Exception:
                if not failing:  # once per run of failures, not every 10 s
                    log.exception("console: cannot sample the traffic for the charts")
                failing = True
            await self._clock.sleep(HISTORY_INTERVAL_S)
