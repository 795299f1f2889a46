"""The usage store's tables, as versioned migrations applied in order on start.

One template per step, written once for both databases: `{text}` becomes `TEXT` on SQLite and
`TEXT COLLATE "C"` on PostgreSQL (byte order, as SQLite compares, so the `team/` prefix
range of `--members` means the same on both), `{int}` becomes `INTEGER` / `BIGINT`, and
`{clustered}` stores a SQLite rollup table in its primary key's order (WITHOUT ROWID): a
wallet's series is then one range of one b-tree, not an index range plus a row lookup per
bucket (PostgreSQL keeps rows in a heap either way). A store
records the last step applied in `usage_schema_version`; a store written by a newer version
is refused, an older one is upgraded, never dropped.

Tables (all integers, UTC):
- `usage_events`: one row per rated event, keyed by event id: the exactly-once guard and the
  drill-down; `ts_ms` is the charge time, `ingested_ms` when the store wrote it.
- `usage_minute`, `usage_hour`, `usage_day`: requests, credits charged and credits reserved
  (settled requests) per (wallet, start, consumer, route, service, method); `start` is the
  bucket's first second since the epoch. Day rows carry the start of their calendar month.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "ROLLUP_TABLES", "SCHEMA_VERSION", "TYPES"]

TYPES = {
    "sqlite": {"text": "TEXT", "int": "INTEGER", "clustered": " WITHOUT ROWID"},
    "postgresql": {"text": 'TEXT COLLATE "C"', "int": "BIGINT", "clustered": ""},
}

ROLLUP_TABLES = {"minute": "usage_minute", "hour": "usage_hour", "day": "usage_day"}


def _rollup(table: str, extra: str = "") -> list[str]:
    return [
        f"""CREATE TABLE {table} (
            wallet {{text}} NOT NULL,
            start {{int}} NOT NULL,
            consumer {{text}} NOT NULL,
            route {{text}} NOT NULL,
            service {{text}} NOT NULL,
            method {{text}} NOT NULL,{extra}
            requests {{int}} NOT NULL,
            credits {{int}} NOT NULL,
            reserved {{int}} NOT NULL,
            PRIMARY KEY (wallet, start, consumer, route, service, method)){{clustered}}""",
        f"CREATE INDEX {table}_start ON {table} (start)",
    ]


MIGRATIONS: list[list[str]] = [
    # 1: raw events and the three rollup levels
    [
        """CREATE TABLE usage_events (
            event_id {text} PRIMARY KEY,
            ts_ms {int} NOT NULL,
            wallet {text} NOT NULL,
            consumer {text} NOT NULL,
            route {text} NOT NULL,
            service {text} NOT NULL,
            method {text} NOT NULL,
            path {text} NOT NULL,
            cost {int} NOT NULL,
            reserved {int},
            status {int},
            ingested_ms {int} NOT NULL)""",
        "CREATE INDEX usage_events_wallet_ts ON usage_events (wallet, ts_ms)",
        # pruning walks events in the order they were written: a backfill of old events is
        # not rescanned on every pass until its rows are old enough to go
        "CREATE INDEX usage_events_ingested ON usage_events (ingested_ms)",
        *_rollup("usage_minute"),
        *_rollup("usage_hour"),
        *_rollup("usage_day", "\n            month {int} NOT NULL,"),
    ],
]
"""Step i (1-based) upgrades a store at version i-1. Append; never edit a released step."""

SCHEMA_VERSION = len(MIGRATIONS)
