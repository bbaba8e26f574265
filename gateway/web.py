"""The gateway's local web server: the technicians' status page and API, and the Meraki
Scanning API receiver.

Everything is served from the box itself, so it works with the internet down. The Meraki
controller GETs the validator, then POSTs observations carrying the shared secret (403
otherwise); a POST is answered 200 only once its events are committed, so Meraki's own retry
covers a failure. The secret is removed from the payload before anything keeps it.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devices.wifi import validate_secret
from gateway.batch import Inbound
from gateway.clock import Clock
from gateway.config import WebSettings
from gateway.status import StatusView
from lantern.errors import StartupError

__all__ = ["MERAKI_PATH", "WebServer"]

MERAKI_PATH = "/meraki"
_MAX_POST_BYTES = 8 * 1024 * 1024  # a Meraki post for a busy floor is a few hundred KiB
_DEFAULT_TRACES = 100

AcceptPost = Callable[[Inbound], Awaitable[None]]  # returns once the message is committed


class WebServer:
    """``async with WebServer(...)`` serves until the block ends; ``url`` says where."""

    def __init__(
        self,
        settings: WebSettings,
        status: StatusView,
        accept: AcceptPost,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._status = status
        self._accept = accept
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        return f"http://{self._settings.host}:{self.port}"

    async def __aenter__(self) -> WebServer:
        app = web.Application(client_max_size=_MAX_POST_BYTES)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/status", self._status_json)
        app.router.add_get("/api/rules/traces", self._traces)
        app.router.add_get(MERAKI_PATH, self._meraki_validator)
        app.router.add_post(MERAKI_PATH, self._meraki_post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = self._settings.host, self._settings.port
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as exc:
            await self._runner.cleanup()
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise StartupError(
                f"web.port: cannot serve the status page on {host}:{port}: {why}"
                " (another lantern run, or another service, holds it: set web.port)"
            ) from None
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        """Why a rule did or did not fire: ?rule=ID&visitor=ID&limit=N, newest first."""
        try:
            limit = int(request.query.get("limit", _DEFAULT_TRACES))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a whole number") from None
        traces = self._status.traces(
            rule=request.query.get("rule"), visitor=request.query.get("visitor"), limit=limit
        )
        return web.json_response([trace.model_dump(mode="json") for trace in traces])

    async def _status_json(self, request: web.Request) -> web.Response:
        return web.json_response(await self._status.document())

    async def _page(self, request: web.Request) -> web.Response:
        document = await self._status.document()
        return web.Response(text=_render(document), content_type="text/html")

    async def _meraki_validator(self, request: web.Request) -> web.Response:
        if self._settings.meraki_validator is None:
            raise web.HTTPNotFound(text="the Meraki receiver is not configured")
        return web.Response(text=self._settings.meraki_validator)

    async def _meraki_post(self, request: web.Request) -> web.Response:
        expected = self._settings.meraki_secret
        if expected is None:
            raise web.HTTPNotFound(text="the Meraki receiver is not configured")
        try:
            document = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise web.HTTPBadRequest(text="not JSON") from None
        if not isinstance(document, dict) or not validate_secret(
            document, expected.get_secret_value()
        ):
            raise web.HTTPForbidden(text="wrong or missing secret")
        del document["secret"]  # the shared secret is not an event's business
        topic = f"lantern/{self._status.settings.store_id}/wifi/meraki"
        payload = json.dumps(document, separators=(",", ":")).encode()
        await self._accept(Inbound.local(topic, payload, self._clock.now()))
        return web.json_response({"accepted": True})


def _render(status: dict[str, Any]) -> str:
    """A page a technician reads on a phone: no scripts, no outside resources."""

    def table(rows: list[dict[str, Any]], empty: str) -> str:
        if not rows:
            return f"<p>{html.escape(empty)}</p>"
        head = "".join(f"<th>{html.escape(str(key))}</th>" for key in rows[0])
        body = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(str(value))}</td>" for value in row.values())
            + "</tr>"
            for row in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    counters = status["counters"]
    mqtt = status["mqtt"]
    mqtt_state = "<b>connected</b>" if mqtt["connected"] else '<b class="bad">DISCONNECTED</b>'
    by_kind = [status["dead_letters_by_kind"]] if status["dead_letters_by_kind"] else []
    rules = status["rules"]
    occupancy = [rules["occupancy"]] if rules["occupancy"] else []
    reload_error = (
        '<b class="bad">Last change refused, the previous rules keep running:</b> '
        + html.escape("; ".join(rules["reload_error"]))
        if rules["reload_error"]
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta http-equiv="refresh" content="5"><title>Lantern - {html.escape(status["store_id"])}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}.bad{{color:#b00}}</style></head>
<body><h1>Lantern, store {html.escape(status["store_id"])}</h1>
<p>MQTT {html.escape(mqtt["broker"])}:
{mqtt_state}
{html.escape(mqtt["last_error"] or "")}</p>
<h2>Counters</h2>{table([counters], "")}
<h2>Sinks</h2>{table(status["sinks"], "No sink configured: events stay in the outbox.")}
<h2>Dead letters by kind</h2>{table(by_kind, "None.")}
<h2>Latest dead letters</h2>{table(status["recent_dead_letters"], "None.")}
<h2>Devices</h2>{table(status["devices"], "No device heard yet.")}
<h2>Rules</h2><p>{rules["count"]} rules from {html.escape(str(rules["dir"]))};
{rules["reloads"]} reloads. {reload_error}</p>
{table(rules["summary"], "No rule evaluated yet.")}
<h2>Latest rule outcomes</h2>{table(status["recent_rule_outcomes"], "None yet.")}
<p>Why a rule did or did not fire for a visitor: <a href="/api/rules/traces">/api/rules/traces</a>
?rule=&lt;id&gt;&amp;visitor=&lt;id&gt;</p>
<h2>Zone occupancy</h2>{table(occupancy, "Nobody in a zone.")}
<p>JSON: <a href="/api/status">/api/status</a>. Updated {html.escape(status["time"])}.</p>
</body></html>"""
