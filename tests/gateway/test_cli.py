"""The command line's own surface: the version, and help when nothing is asked."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from gateway.cli import app

runner = CliRunner()


def test_version_names_the_installed_distribution() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"lantern {version('lantern-gateway')}\n"


def test_no_command_lists_the_commands() -> None:
    result = runner.invoke(app, [])
    for command in ("run", "demo", "decode", "record", "rules"):
        assert command in result.output
