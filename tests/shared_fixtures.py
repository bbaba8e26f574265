"""Where the outside world's payloads live: ``../shared/fixtures`` beside the checkout.

A clone made elsewhere (``git clone . /tmp/x`` to try a clean checkout) looks beside the
local repository it was cloned from; ``LANTERN_FIXTURES_DIR`` overrides both.
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

_CHECKOUT = Path(__file__).resolve().parent.parent


def _beside(checkout: Path) -> Path:
    return checkout.parent / "shared" / "fixtures"


def _origin() -> Path | None:
    """The local repository this checkout was cloned from, if it was cloned from one."""
    try:
        url = subprocess.run(
            ["git", "-C", str(_CHECKOUT), "remote", "get-url", "origin"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(url.removeprefix("file://"))
    return path if path.is_absolute() and path.is_dir() else None


def _fixtures_dir() -> Path:
    if override := os.environ.get("LANTERN_FIXTURES_DIR"):
        return Path(override)
    candidates = [_beside(_CHECKOUT)]
    if not candidates[0].is_dir() and (origin := _origin()) is not None:
        candidates.append(_beside(origin))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "the shared fixtures are not at "
        + " nor ".join(str(candidate) for candidate in candidates)
        + ": check out beside ../shared, or set LANTERN_FIXTURES_DIR"
    )


FIXTURES_DIR = _fixtures_dir()


def load_json(name: str) -> Any:
    return json.loads((FIXTURES_DIR / name).read_text())


def load_jsonl(name: str) -> list[Any]:
    lines = (FIXTURES_DIR / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
