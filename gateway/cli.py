"""The ``lantern`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.config import Settings, load_settings
from lantern.errors import ConfigError

if TYPE_CHECKING:
    from rules.model import RuleSet

_PROGRESS_INTERVAL_S = 2.0  # a long backtest says how far it got, on stderr, this often

app = typer.Typer(
    help="Lantern: the store's IoT edge gateway.", no_args_is_help=True, add_completion=False
)

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
        _rules_or_exit(settings.rules.dir)  # refuse to start on a bad folder, naming each problem

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Gateway(settings).run(stop)

    asyncio.run(serve())


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
) -> None:
    """A whole simulated store on this machine: broker, devices, gateway, central record."""
    from gateway.demo import run_demo

    setup_logging(logging.WARNING)
    asyncio.run(run_demo(seconds=seconds or None, sightings_per_s=rate))


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
    pseudonymised with this gateway's secret, as everywhere else.
    """
    from gateway.decode import decode_advertisement, decode_payload

    settings = settings_or_exit(config)
    if (topic is None) == (adv is None):
        typer.echo("error: give exactly one of --topic or --adv", err=True)
        raise typer.Exit(2)
    try:
        if adv is not None:
            lines = decode_advertisement(settings, adv)
        else:
            payload = file.read_bytes() if file is not None else sys.stdin.buffer.read()
            lines = decode_payload(settings, topic or "", payload)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
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

    lines = asyncio.run(recording())
    typer.echo(f"recorded {lines} messages to {out}", err=True)


rules_app = typer.Typer(help="The marketers' rules: check a folder, backtest it on a recording.")
app.add_typer(rules_app, name="rules")


def _rules_or_exit(directory: Path) -> RuleSet:
    """The folder's rules, or each problem as 'error: file: field: what' and exit status 1."""
    from gateway.rulesdir import read_rules
    from lantern.errors import RulesInvalid

    try:
        return read_rules(directory)
    except RulesInvalid as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1) from None


@rules_app.command("check")
def rules_check(
    directory: Annotated[Path, typer.Argument(help="The rules folder (one YAML file a rule).")],
) -> None:
    """Validate every rule file as the gateway would; exit 0 if all are valid, else 1."""
    rules = _rules_or_exit(directory)
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
    rules = _rules_or_exit(rules_dir)
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
