"""Where the outside world's payloads live: ``../shared/fixtures`` beside the checkout."""

import json
import os
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(
    os.environ.get(
        "LANTERN_FIXTURES_DIR",
        Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures",
    )
)


def load_json(name: str) -> Any:
    return json.loads((FIXTURES_DIR / name).read_text())


def load_jsonl(name: str) -> list[Any]:
    lines = (FIXTURES_DIR / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
