"""The gateway's local web server: the technicians' status page and API, and the Meraki
Scanning API receiver.

Everything is served from the box itself, so it works with the internet down. The Meraki
controller GETs the validator, then POSTs observations carrying the shared secret (403
otherwise); a POST is answered 200 only once its events are committed, so Meraki's own retry
covers a failure. The secret is removed from the payload before anything keeps it.
"""

from __future__ import annotations

import dataclasses
import html
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from devices.wifi import validate_secret
from gateway.config import WebSettings
from gateway.mqtt import Inbound

if TYPE_CHECKING:
    from gateway.app import Gateway

MERAKI_PATH = "/meraki"
_MAX_POST_BYTES = 8 * 1024 * 1024  # a Meraki post for a busy floor is a few hundred KiB
_RECENT_DEAD_LETTERS = 20
_DEFAULT_TRACES = 100
_RECENT_TRACES = 20  # on the page: enough to see why the last few visitors got what they got


class WebServer:
    def __init__(self, settings: WebSettings, gateway: Gateway) -> None:
        self._settings = settings
        self._gateway = gateway
        self._runner: web.AppRunner | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        return f"http://{self._settings.host}:{self.port}"

    async def __aenter__(self) -> WebServer:
        app = web.Application(client_max_size=_MAX_POST_BYTES)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/rules/traces", self._traces)
        app.router.add_get(MERAKI_PATH, self._meraki_validator)
        app.router.add_post(MERAKI_PATH, self._meraki_post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._settings.host, self._settings.port).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def status(self) -> dict[str, Any]:
        gateway = self._gateway
        snapshot = await gateway.snapshot()
        dead = await gateway.outbox.query(
            "SELECT received_at, topic, kind, reason FROM dead_letters ORDER BY id DESC LIMIT ?",
            (_RECENT_DEAD_LETTERS,),
        )
        return {
            "store_id": gateway.settings.store_id,
            "time": datetime.now(UTC).isoformat(),
            "counters": dataclasses.asdict(snapshot),
            "mqtt": {
                "broker": f"{gateway.settings.mqtt.host}:{gateway.settings.mqtt.port}",
                "connected": snapshot.mqtt_connected,
                "last_error": gateway.mqtt_error,
            },
            "sinks": gateway.sink_states(),
            "dead_letters_by_kind": gateway.dead_letters_by_kind(),
            "recent_dead_letters": [
                {"received_at": at, "topic": topic, "kind": kind, "reason": reason}
                for at, topic, kind, reason in dead
            ],
            "devices": [record.model_dump(mode="json") for record in gateway.inventory.devices()],
            "rules": gateway.rules_status(),
            "recent_rule_outcomes": [
                trace.model_dump(mode="json", exclude={"event_id"})
                for trace in (
                    gateway.location.engine.traces(limit=_RECENT_TRACES)
                    if gateway.location is not None
                    else []
                )
            ],
        }

    async def _traces(self, request: web.Request) -> web.Response:
        """Why a rule did or did not fire: ?rule=ID&visitor=ID&limit=N, newest first."""
        try:
            limit = int(request.query.get("limit", _DEFAULT_TRACES))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a whole number") from None
        location = self._gateway.location
        traces = (
            location.engine.traces(
                rule=request.query.get("rule"), visitor=request.query.get("visitor"), limit=limit
            )
            if location is not None
            else []
        )
        return web.json_response([trace.model_dump(mode="json") for trace in traces])

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status())

    async def _page(self, request: web.Request) -> web.Response:
        status = await self.status()
        return web.Response(text=_render(status), content_type="text/html")

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
        except ValueError:
            raise web.HTTPBadRequest(text="not JSON") from None
        if not isinstance(document, dict) or not validate_secret(
            document, expected.get_secret_value()
        ):
            raise web.HTTPForbidden(text="wrong or missing secret")
        del document["secret"]  # the shared secret is not an event's business
        topic = f"lantern/{self._gateway.settings.store_id}/wifi/meraki"
        payload = json.dumps(document, separators=(",", ":")).encode()
        inbound = Inbound(topic, payload, 0, 0, False, datetime.now(UTC), 0)
        await self._gateway.ingest.submit(inbound)
        await self._gateway.mirror_for_recording(inbound)
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
