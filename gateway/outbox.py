"""The outbox: every event, dead letter and dedup digest, committed before anything is acked.

One SQLite file in WAL mode (``synchronous=FULL`` by default: a commit survives power loss),
opened through sqlite-utils and owned by ONE writer thread. Every database operation, the
batch commits of the ingest loop and the sinks' reads and cursor moves alike, is a job on that
thread's queue; the asyncio loop only awaits the job's future, so it never blocks on disk.

Each sink has its own cursor (the ``seq`` of the last event it delivered); ``seq`` is
AUTOINCREMENT so it never goes back, even after retention empties the table. Delivered events
are kept for the configured retention, then deleted.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import sqlite_utils

from gateway.config import OutboxSettings
from lantern.errors import OutboxError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SIGHTING_TYPE = "lantern.presence.sighted"
# A rule's local publish, kept in the outbox like any event so it survives a crash; the MQTT
# action sink publishes it, and the HTTP sink leaves it out.
ACTION_PUBLISH_TYPE = "lantern.action.publish"
_PRUNE_CHUNK_ROWS = 20_000  # one DELETE at a time, so a prune never holds the writer long

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    digest BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS parked (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    parked_at REAL NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(slots=True)
class EventRow:
    id: str
    type: str
    body: str  # the structured CloudEvent as JSON


@dataclass(slots=True)
class DeadLetter:
    received_at: str
    topic: str
    payload: bytes
    kind: str
    reason: str


@dataclass(slots=True)
class Batch:
    """What one commit writes, all or nothing."""

    events: list[EventRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)  # key -> JSON, e.g. reorder trackers


class PendingRow(NamedTuple):
    """One event a sink has yet to deliver."""

    seq: int
    id: str
    type: str
    body: str  # the structured CloudEvent as JSON


@dataclass(frozen=True, slots=True)
class Page:
    """Events a sink has yet to deliver, in order, and the cursor after them."""

    rows: list[PendingRow]
    upto: int


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a sink has yet to deliver: how many events, and when the oldest was committed."""

    count: int
    oldest_created_at: float | None


class Outbox:
    """The outbox database, as an async context manager whose jobs run on the writer thread."""

    def __init__(self, path: Path, settings: OutboxSettings) -> None:
        self._path = path
        self._settings = settings
        self._jobs: queue.SimpleQueue[
            tuple[Callable[..., Any], tuple[Any, ...], Future[Any]] | None
        ]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._committed = asyncio.Event()  # pulsed after every commit, for waiting sinks
        self.events_committed = 0
        self.dead_letters_committed = 0
        self.last_seq = 0

    async def __aenter__(self) -> Outbox:
        opened: Future[int] = Future()
        self._thread = threading.Thread(
            target=self._work, args=(opened,), name="outbox-writer", daemon=True
        )
        self._thread.start()
        try:
            self.last_seq = await asyncio.wrap_future(opened)
        except BaseException:
            self._thread = None
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._thread is None:
            return
        closed: Future[None] = Future()
        self._jobs.put((_close, (), closed))
        self._jobs.put(None)
        await asyncio.wrap_future(closed)
        self._thread = None

    def _work(self, opened: Future[int]) -> None:
        """The writer thread: open the database, then run jobs in order until told to stop."""
        try:
            conn = _open(self._path, self._settings.synchronous)
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(_last_seq(conn))
        while (job := self._jobs.get()) is not None:
            function, args, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(conn, *args))
            except BaseException as exc:
                future.set_exception(exc)

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        future: Future[_T] = Future()
        self._jobs.put((function, args, future))
        return await asyncio.wrap_future(future)

    # The jobs.

    async def commit(self, batch: Batch) -> None:
        """Write the batch in one transaction; returns once it is durable."""
        await self.begin_commit(batch)

    def begin_commit(self, batch: Batch) -> Awaitable[None]:
        """Queue the batch for the writer thread now; await the result for its durability.

        The loop can prepare the next batch meanwhile. Batches commit in the order begun; the
        result must be awaited (in that order) for the counters to follow.
        """
        job: Future[int] | None = None
        if batch.events or batch.dead_letters or batch.digests or batch.state:
            job = Future()
            self._jobs.put((_commit, (batch,), job))
        return self._durable(job, batch)

    async def _durable(self, job: Future[int] | None, batch: Batch) -> None:
        if job is None:  # nothing to write
            return
        self.last_seq = await asyncio.wrap_future(job)
        self.events_committed += len(batch.events)
        self.dead_letters_committed += len(batch.dead_letters)
        self._committed.set()
        self._committed.clear()

    async def wait_for_commit(self, timeout_s: float) -> None:
        """Return after the next commit, or after the timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._committed.wait()
        except TimeoutError:
            pass

    async def recent_digests(self) -> list[bytes]:
        """The dedup window's digests, oldest first, to rebuild the in-memory set at start."""
        return await self._call(_recent_digests, self._settings.dedup_window_messages)

    async def read_pending(
        self, sink: str, types: TypeFilter, limit: int, after: int | None = None
    ) -> Page:
        """The next events for ``sink``: after its stored cursor, or after ``after``, which a
        sink that keeps its cursor in memory between writes gives."""
        return await self._call(_read_pending, sink, types, limit, after)

    async def cursor(self, sink: str) -> int:
        return await self._call(_cursor, sink)

    async def advance(self, sink: str, upto: int) -> None:
        await self._call(_advance, sink, upto)

    async def park(self, sink: str, page: Page, status: int | None, reason: str) -> None:
        await self._call(_park, sink, page, status, reason)

    async def pending_count(self, sink: str, types: TypeFilter) -> int:
        return (await self.backlog(sink, types)).count

    async def backlog(self, sink: str, types: TypeFilter) -> Backlog:
        return await self._call(_backlog, sink, types)

    async def load_state(self, key: str) -> str | None:
        return await self._call(_load_state, key)

    async def prune(self, sinks: Sequence[str], now: float) -> int:
        """Delete what retention allows; returns the number of rows deleted."""
        return await self._call(_prune, tuple(sinks), self._settings, now)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read-only query on the writer's connection, for the status page and tests."""
        return await self._call(_query, sql, tuple(params))


def _open(path: Path, synchronous: str) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db = sqlite_utils.Database(conn)
        db.enable_wal()  # type: ignore[no-untyped-call]
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.conn.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc
    return conn


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


def _last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0


def _commit(conn: sqlite3.Connection, batch: Batch) -> int:
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if batch.events:
            conn.executemany(
                "INSERT INTO events (id, type, created_at, body) VALUES (?, ?, ?, ?)",
                [(event.id, event.type, now, event.body) for event in batch.events],
            )
        if batch.dead_letters:
            conn.executemany(
                "INSERT INTO dead_letters (received_at, topic, payload, kind, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (d.received_at, d.topic, d.payload, d.kind, d.reason, now)
                    for d in batch.dead_letters
                ],
            )
        if batch.digests:
            conn.executemany("INSERT INTO dedup (digest) VALUES (?)", [(d,) for d in batch.digests])
        if batch.state:
            conn.executemany(
                "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", batch.state.items()
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return _last_seq(conn)


def _recent_digests(conn: sqlite3.Connection, window: int) -> list[bytes]:
    rows = conn.execute(
        "SELECT digest FROM dedup WHERE seq > (SELECT coalesce(max(seq), 0) FROM dedup) - ?"
        " ORDER BY seq",
        (window,),
    ).fetchall()
    return [bytes(row[0]) for row in rows]


def _cursor(conn: sqlite3.Connection, sink: str) -> int:
    row = conn.execute("SELECT seq FROM cursors WHERE sink = ?", (sink,)).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """Which event types a sink takes: those in ``include`` (all when empty), less ``exclude``."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def sql(self) -> tuple[str, tuple[str, ...]]:
        clause = ""
        if self.include:
            clause += f" AND type IN ({','.join('?' * len(self.include))})"
        if self.exclude:
            clause += f" AND type NOT IN ({','.join('?' * len(self.exclude))})"
        return clause, (*self.include, *self.exclude)


def _read_pending(
    conn: sqlite3.Connection, sink: str, types: TypeFilter, limit: int, after: int | None
) -> Page:
    cursor = _cursor(conn, sink) if after is None else after
    newest = _last_seq(conn)
    clause, params = types.sql()
    rows = [
        PendingRow(*row)
        for row in conn.execute(
            "SELECT seq, id, type, body FROM events WHERE seq > ? AND seq <= ?"
            + clause
            + " ORDER BY seq LIMIT ?",
            (cursor, newest, *params, limit),
        )
    ]
    # A short page means nothing else up to `newest` is for this sink: skip past it all, so
    # that excluded events do not hold back retention.
    upto = rows[-1].seq if len(rows) == limit else newest
    return Page(rows=rows, upto=upto)


def _advance(conn: sqlite3.Connection, sink: str, upto: int) -> None:
    conn.execute(
        "INSERT INTO cursors (sink, seq) VALUES (?, ?)"
        " ON CONFLICT (sink) DO UPDATE SET seq = max(seq, excluded.seq)",
        (sink, upto),
    )


def _park(conn: sqlite3.Connection, sink: str, page: Page, status: int | None, reason: str) -> None:
    body = "[" + ",".join(row.body for row in page.rows) + "]"
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO parked (sink, parked_at, first_seq, last_seq, status, reason, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (sink, time.time(), page.rows[0].seq, page.rows[-1].seq, status, reason, body),
    )
    _advance(conn, sink, page.upto)
    conn.execute("COMMIT")


def _backlog(conn: sqlite3.Connection, sink: str, types: TypeFilter) -> Backlog:
    clause, params = types.sql()
    count, oldest = conn.execute(
        "SELECT count(*), min(created_at) FROM events WHERE seq > ?" + clause,
        (_cursor(conn, sink), *params),
    ).fetchone()
    return Backlog(int(count), oldest)


def _load_state(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else None


def _prune(
    conn: sqlite3.Connection, sinks: tuple[str, ...], settings: OutboxSettings, now: float
) -> int:
    delivered = min((_cursor(conn, sink) for sink in sinks), default=_last_seq(conn))
    deleted = 0
    for sql, params in (
        (
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ?"
            " AND created_at < ? LIMIT ?)",
            (delivered, now - settings.retention_s, _PRUNE_CHUNK_ROWS),
        ),
        (
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ?"
            " AND type = ? AND created_at < ? LIMIT ?)",
            (delivered, SIGHTING_TYPE, now - settings.sighting_retention_s, _PRUNE_CHUNK_ROWS),
        ),
        (
            "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters"
            " WHERE created_at < ? LIMIT ?)",
            (now - settings.dead_letter_retention_s, _PRUNE_CHUNK_ROWS),
        ),
        (
            "DELETE FROM dedup WHERE seq <= (SELECT max(seq) FROM dedup) - ?",
            (settings.dedup_window_messages,),
        ),
    ):
        while True:
            count = conn.execute(sql, params).rowcount
            deleted += count
            if count < _PRUNE_CHUNK_ROWS:
                break
    return deleted


def _query(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sql, params).fetchall()]
