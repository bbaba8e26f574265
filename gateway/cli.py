"""The ``lantern`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from gateway.config import Settings, load_settings
from lantern.errors import (
    BrokerUnreachable,
    ConfigError,
    DecodeError,
    OutboxError,
    StartupError,
)

if TYPE_CHECKING:
    from rules.model import RuleSet

_PROGRESS_INTERVAL_S = 2.0  # a long backtest says how far it got, on stderr, this often

app = typer.Typer(
    help="Lantern: the store's IoT edge gateway.", no_args_is_help=True, add_completion=False
)


class DemoSink(StrEnum):
    """Where ``lantern demo`` forwards: the sink standing in for the central record."""

    http = "http"
    nats = "nats"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="store.yaml (default: $LANTERN_CONFIG, else built-in defaults)"
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lantern {version('lantern-gateway')}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Lantern: ingest, normalise, apply location rules, forward without losing an event."""


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(message: str, status: int) -> NoReturn:
    """The one line a user reads, and the exit status."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


def settings_or_exit(config: Path | None) -> Settings:
    """The validated settings, or every problem on its own line and exit status 2."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"config error: {problem}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the gateway until SIGTERM or SIGINT, then drain and exit 0."""
    from gateway.app import Gateway

    settings = settings_or_exit(config)
    setup_logging()

    if settings.rules.dir is not None:
        _rules_or_exit(
            settings.rules.dir, settings
        )  # refuse to start on a bad folder, naming each problem

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Gateway(settings).run(stop)

    try:
        asyncio.run(serve())
    except StartupError as exc:
        _fail(str(exc), 1)
    except ExceptionGroup as group:
        # The one part whose failure ends the gateway: systemd restarts it on exit 1.
        outbox = group.subgroup(OutboxError)
        if outbox is None:
            raise
        cause: BaseException = outbox
        while isinstance(cause, BaseExceptionGroup):
            cause = cause.exceptions[0]
        _fail(f"{cause}; stopping, as nothing else can guarantee that nothing is lost", 1)


@app.command()
def check(config: ConfigOption = None) -> None:
    """Check this box before running it: config, data folder, rules, broker; exit 0 or 1.

    One line per check, 'ok: ...' or 'error: <key or thing to fix>: ...'.
    """
    from gateway.check import check_box

    failed = False
    for finding in check_box(config):
        typer.echo(finding.line())
        failed = failed or not finding.ok
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    seconds: Annotated[
        float, typer.Option(help="Stop by itself after this long (default: until Ctrl-C).")
    ] = 0.0,
    rate: Annotated[float, typer.Option(help="Simulated sightings per second.")] = 50.0,
    sink: Annotated[
        DemoSink,
        typer.Option(help="The central record: an HTTP receiver, or a local nats-server -js."),
    ] = DemoSink.http,
) -> None:
    """A whole simulated store on this machine: broker, devices, gateway, central record."""
    from gateway.demo import run_demo
    from gateway.sinks.localnats import NatsServer

    if sink is DemoSink.nats and NatsServer.binary() is None:
        _fail("--sink nats needs nats-server installed (Debian: apt-get install nats-server)", 2)
    setup_logging(logging.WARNING)
    try:
        asyncio.run(run_demo(seconds=seconds or None, sightings_per_s=rate, sink=sink.value))
    except StartupError as exc:
        _fail(str(exc), 1)


@app.command()
def decode(
    topic: Annotated[
        str | None, typer.Option(help="Decode one payload as if it arrived on this topic.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="The payload (default: standard input).")
    ] = None,
    adv: Annotated[
        str | None, typer.Option(help="Decode a raw BLE advertisement given as hex.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Decode a payload as the gateway would; print its CloudEvents as JSON lines.

    On a decode error: 'error: <reason>' on stderr, exit status 2. MAC addresses are
    pseudonymised with this box's secret when the data folder has one (else a throw-away key).
    """
    from gateway.decode import decode_advertisement, decode_payload

    settings = settings_or_exit(config)
    setup_logging(logging.ERROR)  # the error line says what a dead letter's log line would
    if (topic is None) == (adv is None):
        _fail("give exactly one of --topic or --adv", 2)
    now = datetime.now(UTC)
    try:
        if adv is not None:
            lines = decode_advertisement(settings, adv, now)
        else:
            payload = file.read_bytes() if file is not None else sys.stdin.buffer.read()
            lines = decode_payload(settings, topic or "", payload, now)
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}", 2)
    except DecodeError as exc:
        _fail(exc.reason, 2)
    for line in lines:
        typer.echo(line)


@app.command("record")
def record_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="The recording to write (appended).")],
    seconds: Annotated[
        float, typer.Option(help="Stop after this long (default: until Ctrl-C).")
    ] = 0.0,
    config: ConfigOption = None,
) -> None:
    """Record live traffic on every configured source topic, for the rule backtest."""
    from gateway.record import record

    settings = settings_or_exit(config)
    setup_logging()

    async def recording() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if seconds:
            loop.call_later(seconds, stop.set)
        return await record(settings, out, stop)

    try:
        lines = asyncio.run(recording())
    except BrokerUnreachable as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"{out}: {exc.strerror}", 1)
    typer.echo(f"recorded {lines} messages to {out}", err=True)


rules_app = typer.Typer(help="The marketers' rules: check a folder, backtest it on a recording.")
app.add_typer(rules_app, name="rules")


def _rules_or_exit(directory: Path, settings: Settings | None = None) -> RuleSet:
    """The folder's rules (checked against the store when given its settings), or each
    problem as 'error: file: field: what' and exit status 1."""
    from gateway.rulesdir import read_rules, store_catalog
    from lantern.errors import RulesInvalid

    try:
        return read_rules(directory, store_catalog(settings) if settings is not None else None)
    except RulesInvalid as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1) from None


@rules_app.command("check")
def rules_check(
    directory: Annotated[Path, typer.Argument(help="The rules folder (one YAML file a rule).")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="store.yaml: also refuse zones, segments, devices and fields it does not have",
        ),
    ] = None,
) -> None:
    """Validate every rule file as the gateway would; exit 0 if all are valid, else 1."""
    rules = _rules_or_exit(directory, settings_or_exit(config) if config is not None else None)
    typer.echo(f"ok: {len(rules)} rules in {directory}")


@rules_app.command("test")
def rules_test(
    rules_dir: Annotated[Path, typer.Option("--rules", help="The rules folder.")],
    recording: Annotated[
        Path, typer.Option(help="A recording (lantern record, or a simulator's).")
    ],
    explain: Annotated[
        str | None, typer.Option(help="Also print why this rule did or did not fire, each time.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Replay a recording through the decoders, presence and rules; print what they make.

    One JSON object a line: derived events, actions, traces (with --explain), then a summary
    per rule. The same recording always gives the same output.
    """
    from gateway.backtest import backtest
    from lantern.errors import RecordingError

    settings = settings_or_exit(config)
    rules = _rules_or_exit(rules_dir, settings)
    if explain is not None and explain not in rules.ids():
        typer.echo(f"error: --explain {explain}: no such rule in {rules_dir}", err=True)
        raise typer.Exit(2)
    last_report = time.monotonic()

    def progress(line: int, at: datetime) -> None:
        nonlocal last_report
        if time.monotonic() - last_report >= _PROGRESS_INTERVAL_S:
            last_report = time.monotonic()
            typer.echo(f"backtest: line {line:,}, recording time {at.isoformat()}", err=True)

    try:
        with recording.open(encoding="utf-8") as lines:
            for output in backtest(settings, rules, lines, explain, progress):
                typer.echo(json.dumps(output, ensure_ascii=False))
    except OSError as exc:
        typer.echo(f"error: {recording}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    except RecordingError as exc:
        typer.echo(f"error: {recording}: {exc}", err=True)
        raise typer.Exit(2) from None


token_app = typer.Typer(help="Tokens for the store console (web.tokens in store.yaml).")
app.add_typer(token_app, name="token")


@token_app.command("new")
def token_new(
    name: Annotated[str, typer.Option(help="Whose token: a person or a script, e.g. anna.")],
    role: Annotated[str, typer.Option(help="technician, marketer or admin (both).")],
) -> None:
    """Print a new token once, and the line to paste under web: tokens: in store.yaml."""
    from pydantic import ValidationError

    from gateway.config import WebToken
    from gateway.web.tokens import new_token, token_digest

    token = new_token()
    try:
        entry = WebToken(name=name, role=role, sha256=token_digest(token))
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ").replace("Input should", "must")
        _fail(f"--{error['loc'][0]}: {message}", 2)
    typer.echo(f"token for {entry.name} ({entry.role}), shown only now: {token}")
    typer.echo("paste this under web: tokens: in store.yaml, then restart lantern:")
    typer.echo(f"  - {{name: {entry.name}, role: {entry.role}, sha256: {entry.sha256}}}")
