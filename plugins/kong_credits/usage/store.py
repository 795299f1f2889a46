"""Where usage is kept: open a store by URL, migrate it, write events once, prune by age.

    sqlite:///relative/usage.db     SQLite file relative to the working directory
    sqlite:////absolute/usage.db    SQLite file by absolute path (SQLAlchemy's convention)
    postgresql://user:pass@host:port/db   PostgreSQL (psycopg 3); several writers and readers

Both have the same schema (schema.py) and answer the same queries (query.py); what differs is
stated in the two small subclasses below: how a write transaction starts, the placeholder
style, and how a batch of rows goes in (SQLite: multi-row VALUES; PostgreSQL: COPY into a
temporary twin of the table, then the same INSERT ... ON CONFLICT from it).

Exactly once: `ingest` inserts raw events with `ON CONFLICT (event_id) DO NOTHING RETURNING
event_id` and adds to the rollups only the events that insert returned, in the same
transaction; an event delivered twice (a forwarder killed before XACK, two
forwarders, a replayed dead letter) returns nothing the second time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import InvalidInput
from ..rated_event import RatedEvent
from .retention import LEVELS, Retention
from .schema import MIGRATIONS, ROLLUP_TABLES, SCHEMA_VERSION, TYPES
from .times import month_start_s

__all__ = ["DEFAULT_USAGE_URL", "USAGE_URL_ENV", "Store", "StoreError", "mask_url",
           "open_store", "store_url"]

USAGE_URL_ENV = "KONG_CREDITS_USAGE_URL"
DEFAULT_USAGE_URL = "sqlite:///kong-credits-usage.db"
_ROWS_PER_STATEMENT = 500
"""At most 12 x 500 placeholders per statement: below SQLite's 32,766 and PostgreSQL's 65,535."""
_DIMS = ("consumer", "route", "service", "method")
_ROLLUP_KEY = "wallet, start, " + ", ".join(_DIMS)
_LEVEL_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_EVENT_COLUMNS = ("event_id", "ts_ms", "wallet", "consumer", "route", "service", "method",
                  "path", "cost", "reserved", "status", "ingested_ms")
_SQLITE_CACHE_KIB = 262_144
"""Page cache per connection (256 MiB at most, allocated as used): the rollups' primary keys
start with the wallet, so a batch touches pages all over them."""
_SQLITE_CHECKPOINT_PAGES = 10_000
"""WAL pages (4 KiB) before a checkpoint copies them into the database: at the default 1,000
a busy sink checkpoints every few batches; this saves ~15% of its CPU for a WAL of ~40 MiB."""
_MIGRATION_LOCK = 7_415_626_531
"""PostgreSQL advisory lock id: two processes starting at once migrate one after the other."""


class StoreError(InvalidInput):
    """The store cannot be opened or used: bad URL, missing file, server unreachable, a schema
    newer than this version. The message never holds a password."""


def store_url(url: str | None = None) -> str:
    """The URL given, else `$KONG_CREDITS_USAGE_URL`, else the SQLite file in the working
    directory."""
    return url or os.environ.get(USAGE_URL_ENV) or DEFAULT_USAGE_URL


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparsable URL>"


def _chunks(items: Sequence[Any], size: int = _ROWS_PER_STATEMENT) -> Iterator[Sequence[Any]]:
    for index in range(0, len(items), size):
        yield items[index:index + size]


def _values(rows: int, columns: int) -> str:
    row = "(" + ",".join("?" * columns) + ")"
    return ",".join([row] * rows)


class Store:
    """One connection to a usage store. Thread-safe by a lock: the sink writes from the
    forwarder's thread, an API may read from others."""

    dialect: str

    def __init__(self, connection: Any, masked_url: str) -> None:
        self.connection = connection
        self.masked_url = masked_url
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        """The store as one canonical string without secrets (an absolute file path; user,
        host, port and database): two URLs of the same store give the same identity."""
        raise NotImplementedError

    # -- dialect hooks -------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        raise NotImplementedError

    def _lock_for_migration(self, cursor: Any) -> None:
        """Serialize concurrent migrations (SQLite: the write transaction already does)."""

    def _errors(self) -> tuple[type[Exception], ...]:
        raise NotImplementedError

    # -- plumbing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """One operation at a time; driver errors become StoreError naming the store."""
        with self._lock:
            try:
                yield
            except self._errors() as exc:
                raise StoreError(f"usage store {self.masked_url}: {exc}") from exc

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read query (`?` placeholders) and return its rows."""
        with self._guard():
            return self._read(self._sql(sql), params)

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cursor = self.connection.execute(sql, params)
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply the migrations this store lacks, in one transaction; return its version."""
        types = TYPES[self.dialect]
        with self._guard(), self._write() as cursor:
            self._lock_for_migration(cursor)
            cursor.execute(self._sql(
                "CREATE TABLE IF NOT EXISTS usage_schema_version (version {int} NOT NULL)"
                .format(**types)))
            cursor.execute("SELECT version FROM usage_schema_version")
            found = cursor.fetchall()
            version = found[0][0] if found else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"usage store {self.masked_url} has schema version "
                                 f"{version}, newer than this kong-credits ({SCHEMA_VERSION}):"
                                 " upgrade kong-credits")
            for step in MIGRATIONS[version:]:
                for statement in step:
                    cursor.execute(statement.format(**types))
            if not found:
                cursor.execute(self._sql("INSERT INTO usage_schema_version VALUES (?)"),
                               (SCHEMA_VERSION,))
            elif version < SCHEMA_VERSION:
                cursor.execute(self._sql("UPDATE usage_schema_version SET version = ?"),
                               (SCHEMA_VERSION,))
        return SCHEMA_VERSION

    def schema_version(self) -> int:
        return int(self.rows("SELECT version FROM usage_schema_version")[0][0])

    # -- writing -----------------------------------------------------------------------------
    def ingest(self, events: Sequence[RatedEvent], *, now_ms: int | None = None) -> int:
        """Write each event not already in the store, and add it to its minute, hour and day
        rollups, in one transaction. Returns how many were new; a repeated event id (in this
        batch or an earlier one) changes nothing."""
        unique = list({event.event_id: event for event in reversed(events)}.values())
        if not unique:
            return 0
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._guard(), self._write() as cursor:
            by_id = {event.event_id: event for event in unique}
            inserted = self._insert(
                cursor, "usage_events", _EVENT_COLUMNS,
                [_event_row(event, now_ms) for event in unique],
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id")
            fresh = [by_id[row[0]] for row in inserted]
            for level, totals in _rollups(fresh).items():
                self._add_to_rollup(cursor, ROLLUP_TABLES[level], totals,
                                    with_month=level == "day")
        return len(fresh)

    def _add_to_rollup(self, cursor: Any, table: str,
                       totals: dict[tuple[Any, ...], list[int]], *, with_month: bool) -> None:
        """Upsert per key, in key order (concurrent PostgreSQL writers lock rows in the same
        order, so they wait for each other instead of deadlocking)."""
        columns = ["wallet", "start", *_DIMS, *(["month"] if with_month else []),
                   "requests", "credits", "reserved"]
        rows = [(*key, *([month_start_s(key[1])] if with_month else []), *totals[key])
                for key in sorted(totals)]
        self._insert(cursor, table, columns, rows,
                     f"ON CONFLICT (wallet, start, {','.join(_DIMS)}) DO UPDATE SET "
                     f"requests = {table}.requests + excluded.requests, "
                     f"credits = {table}.credits + excluded.credits, "
                     f"reserved = {table}.reserved + excluded.reserved")

    def _insert(self, cursor: Any, table: str, columns: Sequence[str],
                rows: Sequence[tuple[Any, ...]], conflict: str) -> list[tuple[Any, ...]]:
        """INSERT `rows` with the `conflict` clause (and RETURNING); rows returned. SQLite:
        multi-row VALUES, 500 rows per statement."""
        returned: list[tuple[Any, ...]] = []
        for chunk in _chunks(rows):
            cursor.execute(
                f"INSERT INTO {table} ({','.join(columns)}) VALUES "
                f"{_values(len(chunk), len(columns))} {conflict}",
                [value for row in chunk for value in row])
            if "RETURNING" in conflict:
                returned.extend(cursor.fetchall())
        return returned

    # -- retention ---------------------------------------------------------------------------
    def prune(self, retention: Retention, *, now_ms: int, batch_rows: int = 1000
              ) -> dict[str, int]:
        """Delete at most `batch_rows` expired rows per level, each level in its own short
        transaction, so a writer waits at most one small delete. Returns rows deleted per
        level; call again while any level deleted a full batch."""
        deleted: dict[str, int] = {}
        for level in LEVELS:
            keep_ms = retention.of(level)
            if keep_ms is None:
                continue
            cutoff_ms = now_ms - keep_ms
            if level == "raw":
                table, key, where = "usage_events", "event_id", "ingested_ms < ? AND ts_ms < ?"
                params: list[Any] = [cutoff_ms, cutoff_ms]
            else:
                table, key, where = ROLLUP_TABLES[level], _ROLLUP_KEY, "start < ?"
                # a bucket goes once all of it is older than the cutoff
                params = [cutoff_ms // 1000 - _LEVEL_SECONDS[level] + 1]
            with self._guard(), self._write() as cursor:
                cursor.execute(self._sql(
                    f"DELETE FROM {table} WHERE ({key}) IN "
                    f"(SELECT {key} FROM {table} WHERE {where} LIMIT ?)"), [*params, batch_rows])
                deleted[level] = max(cursor.rowcount, 0)
        return deleted


def _event_row(event: RatedEvent, now_ms: int) -> tuple[Any, ...]:
    return (event.event_id, event.timestamp_ms, event.wallet, event.consumer, event.route,
            event.service, event.method, event.path, event.cost, event.reserved,
            event.status, now_ms)


def _rollups(events: Sequence[RatedEvent]) -> dict[str, dict[tuple[Any, ...], list[int]]]:
    """Per level (minute, hour, day): (wallet, bucket start, consumer, route, service,
    method) -> [requests, credits, reserved], one upserted row per key and batch however many
    events share it; one pass over the events for the three levels."""
    by_level: dict[str, dict[tuple[Any, ...], list[int]]] = {level: {} for level in
                                                            _LEVEL_SECONDS}
    levels = [(by_level[level], size_s) for level, size_s in _LEVEL_SECONDS.items()]
    for event in events:
        seconds = event.timestamp_ms // 1000
        wallet, consumer, route = event.wallet, event.consumer, event.route
        service, method, cost = event.service, event.method, event.cost
        reserved = event.reserved or 0
        for totals, size_s in levels:
            key = (wallet, seconds - seconds % size_s, consumer, route, service, method)
            row = totals.get(key)
            if row is None:
                totals[key] = [1, cost, reserved]
            else:
                row[0] += 1
                row[1] += cost
                row[2] += reserved
    return by_level


class SQLiteStore(Store):
    """A SQLite file in WAL mode: readers never wait for the writer; each commit is synced
    (synchronous=FULL), so an event acknowledged to Redis is on disk."""

    dialect = "sqlite"

    def __init__(self, path: str, masked_url: str) -> None:
        self.path = os.path.abspath(path)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                     timeout=30)
        _switch_to_wal(connection)
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
        connection.execute(f"PRAGMA wal_autocheckpoint={_SQLITE_CHECKPOINT_PAGES}")
        super().__init__(connection, masked_url)

    @property
    def identity(self) -> str:
        return f"sqlite:///{self.path}"

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
        cursor.close()

    def _errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error,)


def _switch_to_wal(connection: sqlite3.Connection, within_s: float = 30.0) -> None:
    """PRAGMA journal_mode=WAL, retried: two processes switching a new file at once can
    deadlock on its locks, and SQLite then answers one "database is locked" at once,
    without waiting (its busy timeout does not apply)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class PostgresStore(Store):
    """PostgreSQL through psycopg 3, in autocommit mode with explicit write transactions, so
    a reader never leaves a transaction open."""

    dialect = "postgresql"

    def __init__(self, url: str, masked_url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._url = url
        self._staging: set[str] = set()
        """Temporary tables of this connection (see _insert)."""
        super().__init__(self._connect(masked_url), masked_url)

    def _connect(self, masked_url: str) -> Any:
        try:
            return self._psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot open usage store {masked_url}: "
                             f"{_without(str(exc), self._url)}") from None

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """As Store's, on a live connection: one lost with the server (a restart, a
        failover, an idle timeout) failed the call that found it lost; the next reconnects."""
        with super()._guard():
            if self.connection.closed:
                self.connection = self._connect(self.masked_url)
                self._staging = set()
            yield

    @property
    def identity(self) -> str:
        info = self.connection.info
        return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """A transaction; the staging tables it created are known to exist once it commits."""
        self._staging_pending: set[str] = set()
        with self.connection.transaction(), self.connection.cursor() as cursor:
            yield cursor
        self._staging |= self._staging_pending

    def _lock_for_migration(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    def _insert(self, cursor: Any, table: str, columns: Sequence[str],
                rows: Sequence[tuple[Any, ...]], conflict: str) -> list[tuple[Any, ...]]:
        """COPY the rows into a temporary twin of `table` (emptied at each commit), then one
        INSERT ... SELECT with the conflict clause, in primary key order. COPY is the fast
        way in: a VALUES list of thousands of placeholders, or arrays of them, costs more to
        build on the client than the insert costs the server."""
        if not rows:
            return []
        staging, names = f"incoming_{table}", ",".join(columns)
        if staging not in self._staging:
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} "
                           f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            self._staging_pending.add(staging)
        with cursor.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        order = "event_id" if table == "usage_events" else _ROLLUP_KEY
        cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} "
                       f"ORDER BY {order} {conflict}")
        return list(cursor.fetchall()) if "RETURNING" in conflict else []

    def _errors(self) -> tuple[type[Exception], ...]:
        return (self._psycopg.Error,)


def _without(message: str, url: str) -> str:
    password = urlsplit(url).password
    return message.replace(password, "***") if password else message


def open_store(url: str | None = None, *, create: bool = False) -> Store:
    """Open (with `create`, make) the store at `url` (default: store_url()) and bring its
    schema up to date. Raises StoreError for a bad URL, a missing SQLite file without
    `create`, an unreachable server or a schema newer than this version."""
    url = store_url(url)
    masked = mask_url(url)
    store: Store
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path or "?" in path or "#" in path:
            raise StoreError(f"usage store URL must be sqlite:///relative/path.db or "
                             f"sqlite:////absolute/path.db, not {masked!r}")
        if not create and not Path(path).is_file():
            raise StoreError(f"no usage store at {path}: run `kong-credits forwarder --sink "
                             "usage` first, or give --store")
        try:
            store = SQLiteStore(path, masked)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open usage store {masked}: {exc}") from None
    elif url.split("://", 1)[0] in ("postgresql", "postgres"):
        store = PostgresStore(url, masked)
    else:
        raise StoreError(f"usage store URL must start with sqlite:/// or postgresql://, "
                         f"not {masked!r}")
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
