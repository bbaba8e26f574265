"""Plain sqlite3 against sqlite-utils for the outbox's one hot write, side by side in one run.

    .venv/bin/python -m tests.benchmarks.outbox_writes [--batches 100] [--rows 1000]

Each writes the same event rows, in batches of ``--rows`` (one transaction each, WAL,
``synchronous=FULL`` as the outbox commits), into a fresh file: with ``executemany`` inside an
explicit ``BEGIN IMMEDIATE`` (what gateway/outbox.py does), and with sqlite-utils'
``Table.insert_all``. Figures only; the architecture doc cites them.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

_SCHEMA = (
    "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,"
    " type TEXT NOT NULL, created_at REAL NOT NULL, body TEXT NOT NULL)"
)


def _rows(count: int) -> list[tuple[str, str, float, str]]:
    body = json.dumps({"specversion": "1.0", "type": "lantern.scan.read", "data": {"x": 1}})
    return [(f"id-{n}", "lantern.scan.read", 0.0, body) for n in range(count)]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_SCHEMA)
    return conn


def plain(path: Path, batches: int, rows: list[tuple[str, str, float, str]]) -> None:
    conn = _connect(path)
    for _ in range(batches):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (id, type, created_at, body) VALUES (?, ?, ?, ?)", rows
        )
        conn.execute("COMMIT")
    conn.close()


def with_sqlite_utils(path: Path, batches: int, rows: list[tuple[str, str, float, str]]) -> None:
    conn = _connect(path)
    db = sqlite_utils.Database(conn)
    table = db.table("events")
    records = [{"id": i, "type": t, "created_at": c, "body": b} for i, t, c, b in rows]
    for _ in range(batches):
        with db.conn:
            table.insert_all(records, batch_size=len(records))  # type: ignore[union-attr]
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    rows = _rows(args.rows)
    writers: dict[str, Callable[[Path, int, list[tuple[str, str, float, str]]], None]] = {
        "sqlite3 executemany": plain,
        "sqlite-utils insert_all": with_sqlite_utils,
    }
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, write in writers.items():
            path = Path(folder) / f"{name.split()[0]}.sqlite"
            started = time.perf_counter()
            write(path, args.batches, rows)
            results[name] = args.batches * args.rows / (time.perf_counter() - started)
            print(f"{name:<26} {results[name]:>12,.0f} rows/s")
    ratio = results["sqlite-utils insert_all"] / results["sqlite3 executemany"]
    print(f"sqlite-utils / sqlite3: {ratio:.2f}")


if __name__ == "__main__":
    main()
