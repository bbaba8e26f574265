"""The console's commands: ``lantern token new`` prints a token once with the line to paste,
and ``lantern rules check --config`` refuses what the store does not have."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from gateway.cli import app
from gateway.config import load_settings
from gateway.web.tokens import find_token

EXAMPLES = Path(__file__).parents[2] / "gateway" / "examples"
runner = CliRunner()


def test_token_new_prints_the_token_once_and_the_entry_that_lets_it_in(tmp_path: Path) -> None:
    result = runner.invoke(app, ["token", "new", "--name", "anna", "--role", "technician"])
    assert result.exit_code == 0, result.output
    (token,) = re.findall(r"lt_[A-Za-z0-9_-]{40,}", result.stdout)
    entry = result.stdout.splitlines()[-1].strip().removeprefix("- ")
    store = tmp_path / "store.yaml"
    store.write_text(yaml.safe_dump({"web": {"tokens": [yaml.safe_load(entry)]}}))
    settings = load_settings(store, environ={})
    principal = find_token(token, settings.web.tokens)
    assert principal is not None and (principal.name, principal.role) == ("anna", "technician")
    assert token not in store.read_text()  # store.yaml keeps the digest only


def test_token_new_refuses_an_unknown_role_in_one_line() -> None:
    result = runner.invoke(app, ["token", "new", "--name", "anna", "--role", "boss"])
    assert result.exit_code == 2
    assert result.output == "error: --role: must be 'technician', 'marketer' or 'admin'\n"


def test_rules_check_with_the_store_names_the_file_field_and_reason(tmp_path: Path) -> None:
    good = runner.invoke(
        app, ["rules", "check", "--config", str(EXAMPLES / "store.yaml"), str(EXAMPLES / "rules")]
    )
    assert (good.exit_code, good.stdout) == (0, f"ok: 4 rules in {EXAMPLES / 'rules'}\n")
    folder = tmp_path / "rules"
    folder.mkdir()
    offer = (EXAMPLES / "rules" / "coffee-pods-offer.yaml").read_text()
    (folder / "offer.yaml").write_text(
        offer.replace("zone: coffee-aisle", "zone: coffee").replace("segment ==", "segmnt ==")
    )
    bad = runner.invoke(app, ["rules", "check", "-c", str(EXAMPLES / "store.yaml"), str(folder)])
    assert bad.exit_code == 1
    assert bad.output.splitlines() == [
        "error: offer.yaml: when.zone: 'coffee' is not a zone in zones: of store.yaml;"
        " did you mean 'coffee-aisle'?",
        "error: offer.yaml: if: visitor.segmnt: visitor has no field 'segmnt' (it has id,"
        " segment, zone, dwell_s); did you mean 'segment'?",
    ]
    alone = runner.invoke(app, ["rules", "check", str(folder)])
    assert alone.exit_code == 0  # without the store only the syntax is checked
