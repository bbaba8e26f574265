"""The console's pages: Jinja2 templates (autoescaped: every value is text, whatever it holds),
a little plain JavaScript, and server-sent events that carry each section re-rendered.

A page is made of sections, each one template under ``templates/sections/``; the page renders
them once, and ``/live/<page>`` renders them again every few seconds and sends them as one
event, which the page's script swaps in. So a section is written once, for both.

Pages: ``/`` for technicians (phone first), ``/floor`` (the zones' live occupancy and the last
hour's traffic, for anyone logged in), ``/rules`` for marketers, ``/login``, and ``/docs``
(the API, from the box's own copy of Swagger UI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.web.app import Console, rule_infos
from gateway.web.auth import SESSION_COOKIE
from gateway.web.tokens import Principal, find_token

__all__ = ["add_pages"]

TEMPLATES = Path(__file__).parent / "templates"
LIVE_INTERVAL_S = 2.0  # how often an open page is brought up to date
_MAX_LIVE_STREAMS = 50  # open pages at once: the staff of one store, with room to spare
_FIELDS_SHOWN = frozenset(
    {
        "store_id", "time", "timezone", "ready", "not_ready", "counters", "mqtt", "outbox",
        "sinks", "messages_by_family", "dead_letters_by_kind", "recent_dead_letters",
        "devices", "zones", "presence_visitors", "rules", "recent_rule_outcomes",
    }
)  # fmt: skip
_SINK_FIELDS_SHOWN = frozenset(
    {"name", "delivered", "parked", "last_error", "local", "pending", "oldest_pending_age_s"}
)
_API_PREFIXES = ("/api/", "/live/", "/metrics", "/openapi.json")


class Pages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        timezone = console.status.timezone
        self.env.filters["local"] = lambda value: local_time(value, timezone, console.clock.now())
        self.env.filters["ago"] = duration_text
        self.env.filters["text"] = value_text
        self.env.filters["plain"] = plain_error
        self.env.filters["without"] = lambda mapping, keys: {
            key: value for key, value in mapping.items() if key not in keys
        }
        self.env.globals["store_id"] = console.status.settings.store_id
        self.env.globals["timezone"] = console.status.settings.timezone
        self.live_streams = 0

    def html(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(template).render(**context), status)

    async def sections(self, page: str, principal: Principal) -> dict[str, str]:
        """Each section of ``page``, rendered: element id → HTML."""
        context = await self.context(page, principal)
        return {
            name: self.env.get_template(f"sections/{name}.html").render(**context)
            for name in PAGE_SECTIONS[page]
        }

    async def context(self, page: str, principal: Principal) -> dict[str, Any]:
        status = self.console.status
        if page == "status":
            document = await status.document()
            return {
                "doc": document,
                "extra": {k: v for k, v in document.items() if k not in _FIELDS_SHOWN},
                "sink_fields_shown": _SINK_FIELDS_SHOWN,
            }
        if page == "floor":
            return {
                "floor": floor_plan(status.zones()),
                "zones": status.zones(),
                "visitors": status.presence_visitors(),
                "charts": charts(self.console.history.series()),
            }
        rules = status.rules()
        return {
            "rules": rule_infos(status),
            "reload_error": rules["reload_error"],
            "rules_dir": rules["dir"],
            "recent": [trace.as_json() for trace in status.traces(limit=20)],
        }


PAGE_SECTIONS: Mapping[str, tuple[str, ...]] = {
    "status": ("overview", "sinks", "devices", "dead-letters", "rules-summary", "more"),
    "floor": ("map", "charts"),
    "rules": ("rule-list",),
}
PAGE_TITLES = {"status": "Status", "floor": "Floor", "rules": "Rules"}
PAGE_TEMPLATES = {"rules": "rules.html"}  # the others are their sections and nothing else
PAGE_ROLES: Mapping[str, str | None] = {"status": "technician", "floor": None, "rules": "marketer"}


def add_pages(app: FastAPI, console: Console) -> None:
    pages = Pages(console)
    guard = console.guard

    anyone, marketer = guard.require(None), guard.require("marketer")

    async def page(request: Request, name: str, principal: Principal, **extra: Any) -> HTMLResponse:
        return pages.html(
            PAGE_TEMPLATES.get(name, "sections-page.html"),
            title=PAGE_TITLES[name],
            page=name,
            principal=principal,
            sections=await pages.sections(name, principal),
            **extra,
        )

    @app.get("/", include_in_schema=False, response_model=None)
    async def home(request: Request) -> Response:
        principal = await anyone(request)
        if not principal.may("technician"):
            return RedirectResponse("/rules", 303)
        return await page(request, "status", principal)

    @app.get("/floor", include_in_schema=False)
    async def floor(request: Request) -> Response:
        principal = await anyone(request)
        return await page(request, "floor", principal)

    @app.get("/rules", include_in_schema=False)
    async def rules(request: Request) -> Response:
        principal = await marketer(request)
        return await page(request, "rules", principal)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        principal = await anyone(request)
        return pages.html("docs.html", page="docs", principal=principal)

    @app.get("/live/{name}", include_in_schema=False)
    async def live(name: str, request: Request) -> Response:
        if name not in PAGE_SECTIONS:
            return Response("no such page", 404)
        principal = await guard.require(PAGE_ROLES[name])(request)
        if pages.live_streams >= _MAX_LIVE_STREAMS:
            return Response("too many open pages; close one", 429)
        return StreamingResponse(
            _updates(pages, name, principal, request),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    @app.get("/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        return login_page(pages, request)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        token = (form.get("token") or [""])[0].strip()
        principal = find_token(token, console.settings.tokens) if token else None
        if principal is None:
            return login_page(pages, request, "That token is not known here.", 401)
        target = (form.get("next") or [""])[0]
        if not target.startswith("/") or target.startswith("//"):
            target = "/" if principal.may("technician") else "/rules"
        response = RedirectResponse(target, 303)
        response.set_cookie(
            SESSION_COOKIE,
            guard.sessions.open(principal),
            max_age=int(guard.sessions.lifetime_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        if session is not None:
            guard.sessions.close(session)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> Response:
        """A page asked for without the right token answers with the login form (401) or
        says who may (403); the API answers JSON."""
        if request.url.path.startswith(_API_PREFIXES) or exc.status_code not in (401, 403):
            return await http_exception_handler(request, exc)
        if exc.status_code == 401:
            return login_page(pages, request, status=401)
        return pages.html("forbidden.html", 403, page="forbidden", principal=None, why=exc.detail)


def login_page(
    pages: Pages, request: Request, error: str | None = None, status: int = 200
) -> HTMLResponse:
    target = request.query_params.get("next") or (
        request.url.path if request.url.path not in ("/login", "/logout") else "/"
    )
    return pages.html(
        "login.html",
        status,
        page="login",
        principal=None,
        error=error,
        next=target,
        no_tokens=not pages.console.settings.tokens,
        next_quoted=quote(target),
    )


async def _updates(
    pages: Pages, name: str, principal: Principal, request: Request
) -> AsyncIterator[str]:
    """The page's sections every few seconds, until it closes, its login ends or the
    server stops."""
    console = pages.console
    pages.live_streams += 1
    try:
        while not console.closing.is_set() and console.guard.principal(request) is not None:
            sections = await pages.sections(name, principal)
            yield f"event: update\ndata: {json.dumps(sections)}\n\n"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LIVE_INTERVAL_S):
                    await console.closing.wait()
    finally:
        pages.live_streams -= 1


# --- what the templates show ----------------------------------------------------------------


def local_time(value: str | datetime | None, timezone: Any, now: datetime) -> str:
    """A time in the store's time zone: the time alone today, else with the date."""
    if value is None:
        return "—"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = at.astimezone(timezone)
    if local.date() == now.astimezone(timezone).date():
        return f"{local:%H:%M:%S}"
    return f"{local:%Y-%m-%d %H:%M}"


def duration_text(seconds: float | None) -> str:
    """``40 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if seconds is None:
        return "—"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3_600, whole // 86_400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{days} d {hours % 24} h" if hours % 24 else f"{days} d"


# What a technician reads beside an error's own text: the usual causes, in plain words.
# The first clue found wins: a broker's refusal of credentials reads "refused" too.
_PLAIN_ERRORS = (
    ("not authorized", "the broker refused the user name or password in mqtt.url"),
    ("bad user name or password", "the broker refused the user name or password in mqtt.url"),
    ("refused", "nothing answers at that address: is the service running, is the port right?"),
    ("name or service not known", "that host name does not resolve: check the URL"),
    ("temporary failure in name resolution", "no DNS answer: check the box's network"),
    ("timed out", "no answer in time: the far side is down or the network is slow"),
    ("timeout", "no answer in time: the far side is down or the network is slow"),
    ("401", "the far side refused the token: check http_sink.token"),
    ("403", "the far side refused the token: check http_sink.token"),
    ("certificate", "the TLS certificate was not accepted"),
)


def plain_error(text: str | None) -> str:
    """An error as logged, followed by what it usually means."""
    if not text:
        return "—"
    lowered = text.lower()
    for clue, meaning in _PLAIN_ERRORS:
        if clue in lowered:
            return f"{meaning} ({text})"
    return text


def value_text(value: Any) -> str:
    """Any value as a person reads it: no Python spellings (None, True, {})."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {value_text(item)}" for key, item in value.items()) or "—"
    if isinstance(value, list | tuple):
        return ", ".join(value_text(item) for item in value) or "—"
    return str(value)


_MAP_WIDTH = 600.0  # the SVG's own units; it scales to the page
_MAP_MARGIN = 10.0
_TILE_WIDTH, _TILE_HEIGHT, _TILE_GAP = 140.0, 56.0, 10.0  # a scanner zone's box
_TILES_PER_ROW = 4


def floor_plan(zones: list[dict[str, Any]]) -> dict[str, Any]:
    """The zones laid out in SVG units: polygons scaled to the map's width (metres keep
    their proportions), and zones of scanners alone as tiles in rows below them."""
    drawn = [zone for zone in zones if zone["polygon"]]
    points = [point for zone in drawn for point in zone["polygon"]]
    shapes, height = [], _MAP_MARGIN
    if points:
        min_x, max_x = min(x for x, _ in points), max(x for x, _ in points)
        min_y, max_y = min(y for _, y in points), max(y for _, y in points)
        scale = (_MAP_WIDTH - 2 * _MAP_MARGIN) / max(max_x - min_x, max_y - min_y, 1e-9)
        for zone in drawn:
            scaled = [
                (_MAP_MARGIN + (x - min_x) * scale, _MAP_MARGIN + (y - min_y) * scale)
                for x, y in zone["polygon"]
            ]
            shapes.append(
                {
                    **zone,
                    "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in scaled),
                    "cx": sum(x for x, _ in scaled) / len(scaled),
                    "cy": sum(y for _, y in scaled) / len(scaled),
                }
            )
        height = _MAP_MARGIN * 2 + (max_y - min_y) * scale
    tiles = []
    for index, zone in enumerate(z for z in zones if not z["polygon"]):
        row, column = divmod(index, _TILES_PER_ROW)
        tiles.append(
            {
                **zone,
                "x": _MAP_MARGIN + column * (_TILE_WIDTH + _TILE_GAP),
                "y": height + row * (_TILE_HEIGHT + _TILE_GAP),
                "width": _TILE_WIDTH,
                "height": _TILE_HEIGHT,
            }
        )
    rows = -(-len(tiles) // _TILES_PER_ROW)
    height += rows * (_TILE_HEIGHT + _TILE_GAP) + _MAP_MARGIN
    return {"width": _MAP_WIDTH, "height": round(height, 1), "shapes": shapes, "tiles": tiles}


_CHART_WIDTH, _CHART_HEIGHT = 300.0, 80.0


def charts(series: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each series as an SVG polyline over the last hour, scaled to its own maximum."""
    titles = {"messages_per_s": "Messages per second", "outbox_depth": "Outbox depth"}
    drawn = []
    for key, title in titles.items():
        points = series.get(key, [])
        values = [point["value"] for point in points]
        top = max(values, default=0) or 1
        step = _CHART_WIDTH / max(len(values) - 1, 1)
        line = " ".join(
            f"{index * step:.1f},{_CHART_HEIGHT - value / top * (_CHART_HEIGHT - 4):.1f}"
            for index, value in enumerate(values)
        )
        drawn.append(
            {
                "key": key,
                "title": title,
                "points": line,
                "now": values[-1] if values else None,
                "top": max(values, default=None),
                "samples": len(values),
                "width": _CHART_WIDTH,
                "height": _CHART_HEIGHT,
            }
        )
    return drawn
