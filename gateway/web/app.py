"""The console's FastAPI application: the API (typed, in /openapi.json), the Meraki receiver,
the probes and /metrics. The pages are added by gateway/web/pages.py.

Every route reads the gateway through StatusView and nothing else; the Meraki receiver hands
its posts to ``accept``, which returns once they are committed. Routes that take a body read
it themselves, after the role check, so that no request is parsed before it is authenticated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from devices.wifi import validate_secret
from gateway.backtest import backtest
from gateway.batch import Inbound
from gateway.clock import Clock
from gateway.config import WebSettings
from gateway.status import StatusView
from gateway.web.auth import Guard, Sessions
from gateway.web.diagnostics import RecentLogs, diagnostics_zip
from gateway.web.history import History
from gateway.web.metrics import metrics_text
from gateway.web.models import (
    BacktestRequest,
    BacktestResult,
    DeadLetter,
    Device,
    Problem,
    Problems,
    Ready,
    RuleInfo,
    StatusDocument,
    Trace,
    Woken,
)
from lantern.errors import OutboxFull, RecordingError, RulesInvalid

__all__ = ["MERAKI_PATH", "AcceptPost", "Console", "create_app"]

MERAKI_PATH = "/meraki"
STATIC = Path(__file__).parent / "static"
AcceptPost = Callable[[Inbound], Awaitable[None]]  # returns once the message is committed
_BACKTEST_MAX_LINES = 5_000  # of events, actions and traces; the summaries always come
_RULE_ID = r"^[a-z0-9][a-z0-9._-]{0,199}$"  # as rules/model.py's, so a file name stays one
# Documents the bearer scheme in /openapi.json (module level: FastAPI resolves the routes'
# annotations here); the Guard does the checking.
_BEARER = HTTPBearer(auto_error=False, description="a token from lantern token new")
_YAML_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string"}}},
    }
}


@dataclass
class Console:
    """What the console's routes work with."""

    status: StatusView
    settings: WebSettings
    accept: AcceptPost
    clock: Clock
    guard: Guard
    history: History
    logs: RecentLogs
    closing: asyncio.Event  # set when the server stops: live streams end
    backtest_lock: asyncio.Lock

    @classmethod
    def of(
        cls, status: StatusView, settings: WebSettings, accept: AcceptPost, clock: Clock
    ) -> Console:
        sessions = Sessions(settings.session_hours * 3_600, clock)
        return cls(
            status,
            settings,
            accept,
            clock,
            Guard(settings, sessions),
            History(),
            RecentLogs(),
            asyncio.Event(),
            asyncio.Lock(),
        )

    @property
    def recordings_dir(self) -> Path:
        return self.settings.recordings_dir or self.status.settings.data_dir / "recordings"


def create_app(console: Console) -> FastAPI:
    status, guard = console.status, console.guard

    def role(need: str | None) -> Any:
        check = guard.require(need)

        async def dependency(request: Request, _: Annotated[Any, Depends(_BEARER)]) -> None:
            await check(request)

        return Depends(dependency)

    technician, marketer, anyone = role("technician"), role("marketer"), role(None)
    app = FastAPI(
        title="Lantern store console",
        version=version("lantern-gateway"),
        description="The store box's own API: status, devices, dead letters, sinks, rules.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    swagger = files("fastapi_offline") / "static"
    app.mount("/static/docs", StaticFiles(directory=str(swagger)), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[anyone])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    # --- probes and monitoring -----------------------------------------------------------

    @app.get("/healthz", tags=["monitoring"], response_model=dict[str, str])
    async def healthz() -> dict[str, str]:
        """200 while the process is alive."""
        return {"status": "alive"}

    @app.get(
        "/readyz",
        tags=["monitoring"],
        response_model=Ready,
        responses={503: {"model": Ready, "description": "not ready, and why"}},
    )
    async def readyz() -> JSONResponse:
        """200 when the broker is connected and the outbox writable; else 503 with why."""
        reasons = status.readiness()
        return JSONResponse(
            Ready(ready=not reasons, reasons=reasons).model_dump(), 503 if reasons else 200
        )

    metrics_role = [] if console.settings.metrics_public else [technician]

    @app.get(
        "/metrics",
        tags=["monitoring"],
        dependencies=metrics_role,
        response_class=PlainTextResponse,
    )
    async def metrics() -> Response:
        """Prometheus text: messages by family, events, dead letters, outbox, sinks, rules,
        presence."""
        return Response(await metrics_text(status), media_type="text/plain; version=0.0.4")

    # --- technicians ---------------------------------------------------------------------

    @app.get(
        "/api/status", tags=["technician"], dependencies=[technician], response_model=StatusDocument
    )
    async def status_document() -> dict[str, Any]:
        """What the technicians' page shows."""
        return await status.document()

    @app.get(
        "/api/devices", tags=["technician"], dependencies=[technician], response_model=list[Device]
    )
    async def devices() -> list[dict[str, Any]]:
        """Every device, those in trouble first: last seen, silent since, online and why not,
        battery, health."""
        return status.device_rows()

    @app.get(
        "/api/dead-letters",
        tags=["technician"],
        dependencies=[technician],
        response_model=list[DeadLetter],
    )
    async def dead_letters(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """The latest dead letters, newest first, with their reason and a safe preview."""
        return await status.recent_dead_letters(limit)

    @app.post(
        "/api/sinks/{name}/wake",
        tags=["technician"],
        dependencies=[technician],
        response_model=Woken,
        responses={404: {"description": "no sink of that name that can be woken"}},
    )
    async def wake(name: Annotated[str, PathParam(max_length=200)]) -> Woken:
        """Retry a sink now instead of at the end of its backoff."""
        if not status.wake_sink(name):
            raise HTTPException(404, f"no sink {name!r} that can be woken")
        return Woken(sink=name, woken=True)

    @app.get(
        "/api/diagnostics",
        tags=["technician"],
        dependencies=[technician],
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}}},
    )
    async def diagnostics() -> Response:
        """A zip for support: redacted config, status, recent logs, dead letters, versions."""
        now = console.clock.now()
        body = diagnostics_zip(
            status.settings,
            await status.document(),
            await status.recent_dead_letters(200),
            console.logs.lines(),
            now,
        )
        name = f"lantern-{status.settings.store_id}-{now:%Y%m%dT%H%M%S}.zip"
        return Response(
            body,
            media_type="application/zip",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    # --- marketers -----------------------------------------------------------------------

    @app.get(
        "/api/rules", tags=["marketer"], dependencies=[marketer], response_model=list[RuleInfo]
    )
    async def rules() -> list[RuleInfo]:
        """The running rules with their outcome counts and their files' YAML."""
        return rule_infos(status)

    @app.put(
        "/api/rules/{rule_id}",
        tags=["marketer"],
        dependencies=[marketer],
        response_model=Problems,
        responses={422: {"model": Problems, "description": "refused; the running set kept"}},
        openapi_extra=_YAML_BODY,
    )
    async def replace_rule(
        rule_id: Annotated[str, PathParam(pattern=_RULE_ID)], request: Request
    ) -> JSONResponse:
        """Replace (or add) one rule, validated as ``lantern rules check --config`` does;
        refused with file, field and reason, the running set kept."""
        text = await _text_body(request)
        try:
            rules = await status.replace_rule(rule_id, text)
        except RulesInvalid as exc:
            return _refused(exc)
        return JSONResponse(Problems(ok=True, problems=[], rules=len(rules)).model_dump())

    @app.post(
        "/api/rules/{rule_id}/check",
        tags=["marketer"],
        dependencies=[marketer],
        response_model=Problems,
        openapi_extra=_YAML_BODY,
    )
    async def check_rule(
        rule_id: Annotated[str, PathParam(pattern=_RULE_ID)], request: Request
    ) -> Problems:
        """What PUT would say of this YAML, without changing anything (the editor asks as
        the marketer types)."""
        text = await _text_body(request)
        try:
            rules = await status.check_rule(rule_id, text)
        except RulesInvalid as exc:
            return Problems(ok=False, problems=_problems(exc))
        return Problems(ok=True, problems=[], rules=len(rules))

    @app.get(
        "/api/recordings", tags=["marketer"], dependencies=[marketer], response_model=list[str]
    )
    async def recordings() -> list[str]:
        """The recordings a backtest can replay (lantern record --out into this folder)."""
        return recording_names(console.recordings_dir)

    @app.post(
        "/api/rules/backtest",
        tags=["marketer"],
        dependencies=[marketer],
        response_model=BacktestResult,
        responses={
            404: {"description": "no such recording"},
            409: {"description": "another backtest is running"},
            422: {"model": Problems, "description": "the draft is refused"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BacktestRequest.model_json_schema()}},
            }
        },
    )
    async def run_backtest(request: Request) -> JSONResponse:
        """The rules (running, or with a draft rule) over a recording: what ``lantern rules
        test`` prints, as a list."""
        try:
            asked = BacktestRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, _validation_message(exc)) from None
        if asked.recording not in recording_names(console.recordings_dir):
            raise HTTPException(404, f"no recording {asked.recording!r}")
        try:
            rules = (
                await status.check_rule(asked.draft.id, asked.draft.text)
                if asked.draft is not None
                else status.running_rules()
            )
        except RulesInvalid as exc:
            return _refused(exc)
        explain = asked.explain or (asked.draft.id if asked.draft is not None else None)
        if explain is not None and explain not in rules.ids():
            raise HTTPException(422, f"explain: no rule {explain!r} in the set")
        if console.backtest_lock.locked():
            raise HTTPException(409, "another backtest is running; try again when it is done")
        async with console.backtest_lock:
            path = console.recordings_dir / asked.recording
            try:
                result = await asyncio.to_thread(_backtest, status, rules, path, explain)
            except (RecordingError, OSError, UnicodeDecodeError) as exc:
                raise HTTPException(422, f"{asked.recording}: {exc}") from None
        return JSONResponse(result.model_dump(mode="json"))

    @app.get(
        "/api/rules/traces", tags=["marketer"], dependencies=[marketer], response_model=list[Trace]
    )
    async def traces(
        rule: Annotated[str | None, Query(max_length=200)] = None,
        visitor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[Trace]:
        """Why a rule did or did not fire, per visitor, newest first."""
        return status.traces(rule=rule, visitor=visitor, limit=limit)

    # --- the Meraki Scanning API ---------------------------------------------------------

    @app.get(MERAKI_PATH, tags=["meraki"], response_class=PlainTextResponse)
    async def meraki_validator() -> PlainTextResponse:
        """The validator string Meraki checks before it posts."""
        if console.settings.meraki_validator is None:
            raise HTTPException(404, "the Meraki receiver is not configured")
        return PlainTextResponse(console.settings.meraki_validator)

    @app.post(MERAKI_PATH, tags=["meraki"], response_model=dict[str, bool])
    async def meraki_post(request: Request) -> dict[str, bool]:
        """Observations with the shared secret; answered once committed, so Meraki's own
        retry covers a failure. The secret is removed before anything keeps the post."""
        expected = console.settings.meraki_secret
        if expected is None:
            raise HTTPException(404, "the Meraki receiver is not configured")
        try:
            document = json.loads(await request.body())
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
            raise HTTPException(400, "not JSON") from None
        if not isinstance(document, dict) or not validate_secret(
            document, expected.get_secret_value()
        ):
            raise HTTPException(403, "wrong or missing secret")
        del document["secret"]  # the shared secret is not an event's business
        topic = f"lantern/{status.settings.store_id}/wifi/meraki"
        payload = json.dumps(document, separators=(",", ":")).encode()
        try:
            await console.accept(Inbound.local(topic, payload, console.clock.now()))
        except OutboxFull as exc:  # stopped while the outbox had no room: Meraki posts again
            raise HTTPException(503, str(exc), headers={"Retry-After": "60"}) from None
        return {"accepted": True}

    return app


def rule_infos(status: StatusView) -> list[RuleInfo]:
    summary = status.rules()["summary"]
    counts = {row["rule"]: {k: v for k, v in row.items() if k != "rule"} for row in summary}
    by_file = status.rule_sources()
    return [
        RuleInfo(
            id=rule.id,
            file=by_file.get(rule.id, (None, None))[0],
            description=rule.description,
            enabled=rule.enabled,
            event=rule.when.event,
            outcomes=counts.get(rule.id, {}),
            source=by_file.get(rule.id, (None, None))[1],
        )
        for rule in status.running_rules()
    ]


def recording_names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(path.name for path in directory.glob("*.jsonl") if path.is_file())


def _backtest(status: StatusView, rules: Any, path: Path, explain: str | None) -> BacktestResult:
    lines: list[dict[str, Any]] = []
    truncated = False
    with path.open(encoding="utf-8") as recording:
        for line in backtest(status.settings, rules, recording, explain):
            if line.get("kind") == "summary" or len(lines) < _BACKTEST_MAX_LINES:
                lines.append(line)
            else:
                truncated = True
    return BacktestResult(lines=lines, truncated=truncated)


async def _text_body(request: Request) -> str:
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(422, "the body is not UTF-8 text") from None


def _problems(exc: RulesInvalid) -> list[Problem]:
    return [Problem(file=p.file, field=p.field, message=p.message) for p in exc.problems]


def _refused(exc: RulesInvalid) -> JSONResponse:
    return JSONResponse(Problems(ok=False, problems=_problems(exc)).model_dump(), 422)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )
