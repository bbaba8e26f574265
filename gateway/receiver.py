"""A local stand-in for the central commerce record: receives the HTTP sink's batches.

It accepts ``application/cloudevents-batch+json`` (and a single structured event), gzip or not,
checks an optional bearer token, keeps every event once by its ``(source, id)`` dedup key and
counts the redeliveries it saw, exactly what the real record must do with at-least-once
delivery. The demo runs it; the tests run it as the real HTTP peer, and stop and start it to
play an outage.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.events import BATCH_CONTENT_TYPE

EVENTS_PATH = "/events"


class Receiver:
    """``async with Receiver() as receiver:`` serves ``receiver.url`` until the block ends."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        self._host = host
        self.port = port
        self._token = token
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []  # every event as received, redeliveries too
        self.bodies: list[bytes] = []  # every accepted request body, decompressed
        self.batches = 0
        self.rejected = 0
        # A test may answer with something else: return a status to send instead of 200.
        self.intercept: Callable[[web.Request], Awaitable[int | None]] | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}{EVENTS_PATH}"

    @property
    def redeliveries(self) -> int:
        return len(self.deliveries) - len(self.events)

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again, on the same port after a stop: the gateway's URL stays valid)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(EVENTS_PATH, self._receive)
        app.router.add_get(EVENTS_PATH, self._summary)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self.port, reuse_address=True).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        if self._token is not None and request.headers.get("Authorization") != (
            f"Bearer {self._token}"
        ):
            self.rejected += 1
            return web.json_response({"error": "bad or missing bearer token"}, status=401)
        if self.intercept is not None and (status := await self.intercept(request)) is not None:
            return web.json_response({"error": "intercepted"}, status=status)
        content_type = request.content_type
        body = await request.read()
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            self.rejected += 1
            return web.json_response({"error": f"not JSON: {exc}"}, status=400)
        if content_type == BATCH_CONTENT_TYPE and isinstance(document, list):
            events = document
        elif content_type == "application/cloudevents+json" and isinstance(document, dict):
            events = [document]
        else:
            self.rejected += 1
            return web.json_response({"error": f"unexpected {content_type}"}, status=415)
        for event in events:
            if not isinstance(event, dict) or not {"id", "source", "type"} <= event.keys():
                self.rejected += 1
                return web.json_response({"error": "not a CloudEvent"}, status=400)
        self.bodies.append(body)
        for event in events:
            self.deliveries.append(event)
            self.events.setdefault((event["source"], event["id"]), event)
        self.batches += 1
        return web.json_response({"accepted": len(events)})

    async def _summary(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"events": len(self.events), "redeliveries": self.redeliveries, "batches": self.batches}
        )
