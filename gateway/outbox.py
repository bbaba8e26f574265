"""The outbox: every event, dead letter and dedup digest, committed before anything is acked.

One SQLite file in WAL mode (``synchronous=FULL`` by default: a commit survives power loss),
opened with the standard library's sqlite3 and owned by ONE writer thread. Every database
operation, the batch commits of the ingest loop and the sinks' reads and cursor moves alike, is
a job on that thread's queue; the asyncio loop only awaits the job's future, so it never blocks
on disk.

Each sink has its own cursor (the ``seq`` of the last event it delivered); ``seq`` is
AUTOINCREMENT so it never goes back, even after retention empties the table. Delivered events
are kept for the configured retention, then deleted.

The database keeps to a budget (``outbox.max_bytes``). A commit that would pass it first makes
room, in this order: events every sink has delivered, then the oldest undelivered sightings,
then the oldest dead letters (both counted, per sink for sightings, in the ``drops`` table).
Scans, reorders, zone and emitted events are never dropped: with no room left, and likewise
when the disk is full, the commit raises :class:`OutboxFull` having written nothing, and the
committer retries it while the broker keeps the unacknowledged messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache, partial
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from gateway.batch import Batch
from gateway.config import OutboxSettings
from gateway.events import SIGHTING_TYPE
from lantern.errors import OutboxError, OutboxFull

__all__ = ["FAILPOINT_MAX_PAGE_COUNT_ENV", "Outbox", "Page", "Pressure", "TypeFilter"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_PRUNE_CHUNK_ROWS = 20_000  # one DELETE at a time, so a prune never holds the writer long
_SHED_CHUNK_ROWS = 1_000  # rows dropped at a time to make room: a little more than needed
_ROW_OVERHEAD_BYTES = 64  # a row's keys, seq and B-tree cell beside its text, about
# Bound values in one statement: SQLite's limit before 3.32 (later ones allow 32,766).
_MAX_VARIABLES = 999
_BUDGET = "within the budget (outbox.max_bytes)"
DROPPED_DEAD_LETTERS = "dead letters"  # the drops table's row for dead letters
# Fault injection for the tests only: cap the database at this many pages, so that a commit
# meets SQLITE_FULL as on a full disk, without filling one.
FAILPOINT_MAX_PAGE_COUNT_ENV = "LANTERN_FAILPOINT_MAX_PAGE_COUNT"

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
CREATE TABLE IF NOT EXISTS drops (
    what TEXT PRIMARY KEY,  -- a sink's name (its undelivered sightings), or 'dead letters'
    count INTEGER NOT NULL
);
"""


@dataclass(slots=True)
class _Readers:
    """The sinks that read the outbox: what each takes (set before the first commit, replaced
    whole), and how far each has read, which only jobs on the writer thread touch: the pages a
    sink has read and not yet delivered are spared when room is made."""

    sinks: tuple[tuple[str, TypeFilter], ...] = ()
    read_upto: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pressure:
    """How full the outbox is, what it dropped to keep to its budget, and why commits wait
    (``full``, while they do)."""

    used_bytes: int
    max_bytes: int
    dropped: dict[str, int]
    full: str | None


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
        self._readers = _Readers()
        self.full: str | None = None  # why the last commit found no room, until one does
        self.events_committed = 0
        self.transactions = 0  # fsync'd writes: batch commits, cursor moves, parked batches
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

    @property
    def running(self) -> bool:
        """Whether the writer thread is there to take commits."""
        return self._thread is not None and self._thread.is_alive()

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
            except sqlite3.Error as exc:
                future.set_exception(_translated(exc))
            except BaseException as exc:
                future.set_exception(exc)

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        future: Future[_T] = Future()
        self._jobs.put((function, args, future))
        return await asyncio.wrap_future(future)

    def register_sinks(self, sinks: Sequence[tuple[str, TypeFilter]]) -> None:
        """The sinks that read the outbox, with the types each takes: who loses a dropped
        sighting, and up to where every sink has delivered."""
        self._readers.sinks = tuple(sinks)

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
        if batch:
            job = Future()
            self._jobs.put((_commit, (batch, self._settings.max_bytes, self._readers), job))
        return self._durable(job, batch)

    async def _durable(self, job: Future[int] | None, batch: Batch) -> None:
        if job is None:  # nothing to write
            return
        try:
            self.last_seq = await asyncio.wrap_future(job)
        except OutboxFull as exc:
            self.full = str(exc)
            raise
        self.full = None
        self.transactions += 1
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
        return await self._call(_read_pending, sink, types, limit, after, self._readers)

    async def cursor(self, sink: str) -> int:
        return await self._call(_cursor, sink)

    async def advance(self, sink: str, upto: int) -> None:
        await self._call(_advance, sink, upto)
        self.transactions += 1

    async def park(self, sink: str, page: Page, status: int | None, reason: str) -> None:
        await self._call(_park, sink, page, status, reason)
        self.transactions += 1

    async def backlog(self, sink: str, types: TypeFilter) -> Backlog:
        return await self._call(_backlog, sink, types)

    async def load_state(self, key: str) -> str | None:
        return await self._call(_load_state, key)

    async def prune(self, sinks: Sequence[str], now: float) -> int:
        """Delete what retention allows; returns the number of rows deleted."""
        return await self._call(_prune, tuple(sinks), self._settings, now)

    async def pressure(self) -> Pressure:
        used, dropped = await self._call(_pressure)
        return Pressure(used, self._settings.max_bytes, dropped, self.full)

    async def integrity(self) -> str:
        """SQLite's own check of the whole file: ``ok``, or what is wrong."""
        return await self._call(_integrity)

    async def recent_dead_letters(self, limit: int, head_bytes: int = 0) -> list[dict[str, Any]]:
        """The latest dead letters, newest first: when, where, what kind and why, and with
        ``head_bytes`` the payload's first bytes (``head``) and its ``size``."""
        return await self._call(_recent_dead_letters, limit, head_bytes)


def _open(path: Path, synchronous: str) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if pages := os.environ.get(FAILPOINT_MAX_PAGE_COUNT_ENV):
            conn.execute(f"PRAGMA max_page_count={int(pages)}")
        conn.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc
    return conn


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


def _last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0


def _translated(error: sqlite3.Error) -> OutboxError:
    """SQLite's error as the outbox's: no room is OutboxFull (retried), anything else an
    OutboxError (the one failure that stops the gateway when it meets the committer)."""
    if _no_room(error):
        return OutboxFull(f"the disk is full: the outbox cannot grow ({error})")
    return OutboxError(f"the outbox cannot be written: {error}")


def _commit(
    conn: sqlite3.Connection,
    batch: Batch,
    max_bytes: int,
    readers: _Readers,
) -> int:
    """Write the batch in one transaction, within the budget. A full disk is met like a full
    budget, down from what the file holds now: room is made, and the write tried once more."""
    try:
        return _write(conn, batch, max_bytes, readers)
    except sqlite3.Error as exc:
        if not _no_room(exc):
            raise
    needed = _size_bytes(batch)
    used = _used_bytes(conn)
    _in_transaction(conn, partial(_make_room, conn, needed, used, readers, "on the disk"))
    return _write(conn, batch, max_bytes, readers)


def _write(
    conn: sqlite3.Connection,
    batch: Batch,
    max_bytes: int,
    readers: _Readers,
) -> int:
    now = time.time()

    def write() -> None:
        _make_room(conn, _size_bytes(batch), max_bytes, readers, _BUDGET)
        # An event row's values are the EventRow itself, flattened: nothing made per event.
        _insert(conn, "events (created_at, id, type, body)", 3, _flat(batch.events), now)
        _insert(
            conn,
            "dead_letters (created_at, received_at, topic, payload, kind, reason)",
            5,
            _flat(
                (letter.received_at, letter.topic, letter.payload, letter.kind, letter.reason)
                for letter in batch.dead_letters
            ),
            now,
        )
        _insert(conn, "dedup (digest)", 1, batch.digests)
        if batch.state:
            conn.executemany(
                "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", batch.state.items()
            )

    _in_transaction(conn, write)
    return _last_seq(conn)


def _flat(rows: Iterable[tuple[object, ...]]) -> list[object]:
    return list(chain.from_iterable(rows))


def _insert(
    conn: sqlite3.Connection,
    into: str,
    columns: int,
    values: Sequence[object],
    *shared: object,
) -> None:
    """Insert rows of ``columns`` values each, given one after the other in ``values``, in
    order, as few statements of many rows each. ``shared``: the values of the columns every
    row has alike (named first in ``into``), bound once per statement.

    Not ``executemany``: it steps once per row, and each step lets go of the GIL; when the
    event loop is busy, taking it back can wait out the interpreter's switch interval (5 ms),
    so a batch's 2,000 rows could hold the commit for seconds (measured: 5.6 s for 1,000 rows
    against a busy thread, 74 ms in statements of 249 rows).
    """
    start = 0
    most = (_MAX_VARIABLES - len(shared)) // columns
    for count in _statement_sizes(len(values) // columns, most):
        end = start + count * columns
        conn.execute(_insert_sql(into, len(shared), columns, count), [*shared, *values[start:end]])
        start = end


def _statement_sizes(rows: int, most: int) -> Iterator[int]:
    """Statements of ``most`` rows, then the rest in powers of two: each distinct length is a
    statement SQLite prepares and caches (249 of them took 13 MiB), so only a few may exist."""
    full, rest = divmod(rows, most)
    yield from [most] * full
    bit = 1 << rest.bit_length()
    while bit:
        if rest & bit:
            yield bit
        bit >>= 1


@cache
def _insert_sql(into: str, shared: int, columns: int, rows: int) -> str:
    """``?1`` to ``?<shared>`` in every row, then each row's own parameters, numbered on."""
    alike = [f"?{number}" for number in range(1, shared + 1)]
    numbers = iter(range(shared + 1, shared + columns * rows + 1))
    return f"INSERT INTO {into} VALUES " + ", ".join(
        "(" + ", ".join(alike + [f"?{next(numbers)}" for _ in range(columns)]) + ")"
        for _ in range(rows)
    )


def _in_transaction(conn: sqlite3.Connection, work: Callable[[], None]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        work()
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk does): a second ROLLBACK would
        # raise and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _no_room(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _size_bytes(batch: Batch) -> int:
    """About what the batch adds to the database."""
    return (
        sum(map(len, chain.from_iterable(batch.events)))  # each event's id, type and body
        + sum(len(d.payload) + len(d.topic) + len(d.reason) for d in batch.dead_letters)
        + sum(map(len, batch.digests))
        + sum(len(value) for value in batch.state.values())
        + _ROW_OVERHEAD_BYTES
        * (len(batch.events) + len(batch.dead_letters) + len(batch.digests) + len(batch.state))
    )


def _used_bytes(conn: sqlite3.Connection) -> int:
    """The pages in use (the file keeps freed pages for reuse, so it does not shrink); one
    statement, read on every commit (``_insert`` says why fewer statements matter)."""
    (used,) = conn.execute(
        "SELECT (p.page_count - f.freelist_count) * s.page_size"
        " FROM pragma_page_count() AS p, pragma_freelist_count() AS f, pragma_page_size() AS s"
    ).fetchone()
    return int(used)


def _make_room(
    conn: sqlite3.Connection,
    needed_bytes: int,
    max_bytes: int,
    readers: _Readers,
    limited_by: str,
) -> None:
    """Drop what may be dropped, oldest first, until ``needed_bytes`` fit in ``max_bytes``;
    OutboxFull (inside the caller's transaction, so nothing is dropped) if they cannot."""
    limit = max_bytes - needed_bytes
    if _used_bytes(conn) <= limit:
        return
    droppers: tuple[Callable[[], bool], ...] = (
        partial(_drop_delivered, conn, readers),
        partial(_drop_sightings, conn, readers),
        partial(_drop_dead_letters, conn),
    )
    for drop in droppers:
        while _used_bytes(conn) > limit and drop():
            pass
        if _used_bytes(conn) <= limit:
            return
    raise OutboxFull(
        f"no room {limited_by} for {needed_bytes:,} more bytes: the outbox holds"
        f" {_used_bytes(conn):,} bytes of events that are never dropped (scans, reorders, zone"
        " and emitted events) until a sink delivers them"
    )


def _drop_rows(
    conn: sqlite3.Connection, select: str, params: tuple[Any, ...], table: str, key: str
) -> list[int]:
    """Delete the rows ``select`` names (by ``key``); the keys deleted."""
    keys = [int(row[0]) for row in conn.execute(select, params).fetchall()]
    if keys:
        conn.execute(f"DELETE FROM {table} WHERE {key} IN ({','.join('?' * len(keys))})", keys)
    return keys


def _drop_delivered(conn: sqlite3.Connection, readers: _Readers) -> bool:
    """The oldest events that every sink taking their type has delivered, whatever their
    retention (a sink's cursor may lag behind what it skips: it writes a skip lazily)."""
    conditions, params = [], []
    for name, types in readers.sinks:
        takes, takes_params = types.sql()
        conditions.append(f"(NOT (1{takes}) OR seq <= ?)")
        params += [*takes_params, _cursor(conn, name)]
    if not readers.sinks:
        conditions.append("seq <= ?")
        params.append(_last_seq(conn))
    return bool(
        _drop_rows(
            conn,
            f"SELECT seq FROM events WHERE {' AND '.join(conditions)} ORDER BY seq LIMIT ?",
            (*params, _SHED_CHUNK_ROWS),
            "events",
            "seq",
        )
    )


def _drop_sightings(conn: sqlite3.Connection, readers: _Readers) -> bool:
    """The oldest undelivered sightings, counted against each sink that would have taken them.

    What a sink has read and not yet delivered is spared: it may be on its way, and dropped it
    would be neither lost nor delivered for sure. So every drop is a loss, and counted exact.
    """
    spared: list[int] = []
    for name, types in readers.sinks:
        cursor = _cursor(conn, name)
        if types.takes(SIGHTING_TYPE) and readers.read_upto.get(name, 0) > cursor:
            spared += [cursor + 1, readers.read_upto[name]]
    seqs = _drop_rows(
        conn,
        "SELECT seq FROM events WHERE type = ?"
        + " AND seq NOT BETWEEN ? AND ?" * (len(spared) // 2)
        + " ORDER BY seq LIMIT ?",
        (SIGHTING_TYPE, *spared, _SHED_CHUNK_ROWS),
        "events",
        "seq",
    )
    for name, types in readers.sinks:
        if types.takes(SIGHTING_TYPE):
            cursor = _cursor(conn, name)
            _count_drops(conn, name, sum(1 for seq in seqs if seq > cursor))
    return bool(seqs)


def _drop_dead_letters(conn: sqlite3.Connection) -> bool:
    ids = _drop_rows(
        conn,
        "SELECT id FROM dead_letters ORDER BY id LIMIT ?",
        (_SHED_CHUNK_ROWS,),
        "dead_letters",
        "id",
    )
    _count_drops(conn, DROPPED_DEAD_LETTERS, len(ids))
    return bool(ids)


def _count_drops(conn: sqlite3.Connection, what: str, count: int) -> None:
    if count:
        conn.execute(
            "INSERT INTO drops (what, count) VALUES (?, ?)"
            " ON CONFLICT (what) DO UPDATE SET count = count + excluded.count",
            (what, count),
        )


def _pressure(conn: sqlite3.Connection) -> tuple[int, dict[str, int]]:
    dropped = {str(what): int(count) for what, count in conn.execute("SELECT * FROM drops")}
    return _used_bytes(conn), dropped


def _integrity(conn: sqlite3.Connection) -> str:
    return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))


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

    def takes(self, event_type: str) -> bool:
        return (not self.include or event_type in self.include) and (event_type not in self.exclude)

    def sql(self) -> tuple[str, tuple[str, ...]]:
        clause = ""
        if self.include:
            clause += f" AND type IN ({','.join('?' * len(self.include))})"
        if self.exclude:
            clause += f" AND type NOT IN ({','.join('?' * len(self.exclude))})"
        return clause, (*self.include, *self.exclude)


def _read_pending(
    conn: sqlite3.Connection,
    sink: str,
    types: TypeFilter,
    limit: int,
    after: int | None,
    readers: _Readers,
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
    readers.read_upto[sink] = upto
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


def _recent_dead_letters(
    conn: sqlite3.Connection, limit: int, head_bytes: int
) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT received_at, topic, kind, reason, substr(payload, 1, ?), length(payload)"
        " FROM dead_letters ORDER BY id DESC LIMIT ?",
        (head_bytes, limit),
    ).fetchall()
    return [
        {"received_at": at, "topic": topic, "kind": kind, "reason": reason}
        | ({"head": bytes(head), "size": size} if head_bytes else {})
        for at, topic, kind, reason, head, size in rows
    ]
