"""The usage store: ingest from the streams, queries on a month of data, size per level.

    python load/bench_usage.py [--events 5000000] [--ingest-events 200000] [--quick]

Ingest, end to end: rated events are written to the Redis event streams (1,000 wallets,
20 routes, as authorize.lua writes them), then one forwarder drains them with `--sink usage`
into a SQLite file and into PostgreSQL (a local server this script starts, fsync on);
baseline in the same run: the same forwarder into a sink that drops every batch, so the
ratio shows what the store costs on top of the forwarder's own Redis reads and XACKs.

Queries: `--events` events over 30 days for 1,000 wallets are generated straight into each
store through the sink's own write path (Store.ingest, batches of 2,000), which is what the
forwarder calls but without the streams: going through Redis would only add time to the
setup. Then, with the store's own query layer (usage_report): a wallet's 30-day hourly
series by route (50 wallets at random), and the top 10 routes of all wallets for one day
(20 days at random); p50 and p95. Then the size of each level per million events (SQLite
dbstat; PostgreSQL pg_total_relation_size, indexes included).

Figures are printed (and with --write, stored in load/RESULTS.md), never asserted.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_server import LocalPostgres

from kong_credits.forwarder import Forwarder, ForwarderOptions
from kong_credits.forwarder.consumer_group import ConsumerGroup
from kong_credits.forwarder.loop import GC_THRESHOLDS, tune_gc
from kong_credits.keys import SHARDS, event_stream
from kong_credits.rated_event import RatedEvent
from kong_credits.redis_server import EmbeddedRedis
from kong_credits.sinks.base import Delivery, Sink, SinkConfig
from kong_credits.sinks.usage import UsageSink
from kong_credits.usage import Store, open_store, usage_report

WALLETS = 1000
ROUTES = [f"route-{n:02d}" for n in range(20)]
METHODS = ["GET", "POST", "GET", "PUT", "DELETE"]
DAY = timedelta(days=1)


class DropSink(Sink):
    """The baseline: every batch counts as delivered at once."""

    name = "drop"
    max_batch = 10_000

    def __init__(self) -> None:  # no backend, no client
        pass

    def send(self, events: Sequence[RatedEvent]) -> Delivery:
        return Delivery.of(events)


def event_fields(i: int, rng: random.Random, ts_ms: int) -> dict[str, str]:
    wallet = rng.randrange(WALLETS)
    route = min(int(rng.expovariate(0.25)), len(ROUTES) - 1)  # a few routes dominate
    return {"event_id": f"bench-{i}", "wallet": f"wallet-{wallet:04d}",
            "consumer": f"consumer-{wallet:04d}-{rng.randrange(2)}", "route": ROUTES[route],
            "service": "api", "method": METHODS[route % len(METHODS)],
            "path": f"/{ROUTES[route]}/{i % 1000}", "cost": str(rng.randrange(1, 20)),
            "timestamp": str(ts_ms)}


_filled = itertools.count()


def fill_streams(client: redis.Redis, count: int) -> None:
    """`count` new events (ids never used before in this run: a store fed twice the same
    ids would only find duplicates) over the last `count` ms."""
    rng = random.Random(1)
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        n = next(_filled)
        pipe.xadd(event_stream(n % SHARDS), event_fields(n, rng, now_ms - (count - i)))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid` and its children (the
    PostgreSQL server: postmaster and backends), from /proc; 0 without a pid."""
    if pid is None:
        return 0.0
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def drain(redis_url: str, sink: Sink, count: int, batch_size: int,
          server_pid: int | None = None) -> tuple[float, float, float]:
    """Draining `count` fresh events from the streams with one forwarder: events/s (wall),
    and µs of CPU per event of this process (forwarder + sink + SQLite) and of the store's
    server (PostgreSQL). On a shared machine the wall rate follows the load; CPU does not."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    fill_streams(client, count)
    group = ConsumerGroup(client, "bench-usage", "bench")
    forwarder = Forwarder(group, sink, ForwarderOptions(batch_size=batch_size, drain=True,
                                                        retain_ms=None))
    started, cpu, server = time.perf_counter(), time.process_time(), tree_cpu_s(server_pid)
    assert forwarder.run() == 0
    elapsed = time.perf_counter() - started
    cpu_us = (time.process_time() - cpu) / count * 1e6
    server_us = (tree_cpu_s(server_pid) - server) / count * 1e6
    assert forwarder.metrics.tally.delivered == count, forwarder.metrics.tally
    client.close()
    return count / elapsed, cpu_us, server_us


GC_SETTINGS = {"default": (700, 10, 10), "tuned": GC_THRESHOLDS}
"""Python's own thresholds, and what `kong-credits forwarder` sets (forwarder/loop.py)."""


def ingest_bench(redis_url: str, stores: dict[str, Callable[[], str]], count: int,
                 server_pid: int, rounds: int, configs: Sequence[tuple[str, int]]) -> list[str]:
    """Per round and configuration (GC thresholds, batch size): the baseline, then each
    store, interleaved, so that the other sessions' load falls on all of them alike. Each
    configuration fills a store of its own (`stores` makes a new one), so all grow alike
    from round to round."""
    urls = {(kind, config): new_store() for kind, new_store in stores.items()
            for config in configs}
    lines = ["| sink | GC | batch | events | events/s (wall) | x baseline | forwarder process "
             "CPU µs/event | PostgreSQL CPU µs/event | events per CPU-second |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    print("\n".join(lines), flush=True)
    for _ in range(rounds):
        for config in configs:
            gc_name, batch = config
            gc.set_threshold(*GC_SETTINGS[gc_name])
            head = f"{gc_name} | {batch:,} | {count:,}"
            rate, cpu_us, _ = drain(redis_url, DropSink(), count, batch)
            lines.append(f"| drop (baseline) | {head} | {rate:,.0f} | 1.00 | {cpu_us:.1f} | - | "
                         f"{1e6 / cpu_us:,.0f} |")
            print(lines[-1], flush=True)
            baseline = rate
            for kind in stores:
                with httpx.Client() as client:
                    sink = UsageSink(client, SinkConfig(store=urls[kind, config]))
                    try:
                        pid = server_pid if kind == "PostgreSQL" else None
                        rate, cpu_us, server_us = drain(redis_url, sink, count, batch, pid)
                    finally:
                        sink.close()
                lines.append(f"| usage, {kind} | {head} | {rate:,.0f} | {rate / baseline:.2f} "
                             f"| {cpu_us:.1f} | {server_us:.1f} | "
                             f"{1e6 / (cpu_us + server_us):,.0f} |")
                print(lines[-1], flush=True)
        gc.set_threshold(*GC_THRESHOLDS)
    return lines


def generate(store: Store, count: int, end: datetime) -> float:
    """`count` events spread evenly over the 30 days before `end`, in time order, through
    Store.ingest; returns events/s."""
    rng = random.Random(2)
    start_ms = int((end - 30 * DAY).timestamp() * 1000)
    step = 30 * 86_400_000 / count
    started = time.perf_counter()
    batch: list[RatedEvent] = []
    for i in range(count):
        batch.append(RatedEvent.from_fields(event_fields(i, rng, int(start_ms + i * step))))
        if len(batch) == 2000:
            store.ingest(batch)
            batch = []
            if i % 500_000 < 2000:
                print(f"  {i:,} events, {i / (time.perf_counter() - started):,.0f}/s",
                      flush=True)
    store.ingest(batch)
    return count / (time.perf_counter() - started)


def timed(call: object, runs: list[object]) -> tuple[float, float, int]:
    times, rows = [], 0
    for args in runs:
        started = time.perf_counter()
        report = call(args)  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
        rows = max(rows, len(report["rows"]))
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], rows


def query_bench(store: Store, end: datetime) -> list[str]:
    rng = random.Random(3)
    wallets = [f"wallet-{rng.randrange(WALLETS):04d}" for _ in range(50)]
    series = timed(lambda wallet: usage_report(
        store, wallet=wallet, by=["route"], bucket="hour", since=end - 30 * DAY, until=end),
        wallets)
    days = [end - rng.randint(1, 29) * DAY for _ in range(20)]
    top = timed(lambda day: usage_report(
        store, by=["route"], bucket="day", since=day.replace(hour=0, minute=0, second=0,
                                                             microsecond=0),
        until=day.replace(hour=0, minute=0, second=0, microsecond=0) + DAY, limit=10), days)
    return [f"| a wallet's 30-day hourly series by route (50 wallets) | {series[0]:.1f} | "
            f"{series[1]:.1f} | {series[2]:,} |",
            f"| top 10 routes of all wallets for a day (20 days) | {top[0]:.1f} | "
            f"{top[1]:.1f} | {top[2]} |"]


def sizes(store: Store, events: int) -> list[str]:
    tables = {"raw events": "usage_events", "minute": "usage_minute", "hour": "usage_hour",
              "day": "usage_day"}
    lines = []
    for level, table in tables.items():
        rows = int(store.rows(f"SELECT COUNT(*) FROM {table}")[0][0])
        if store.dialect == "sqlite":
            [(size,)] = store.rows(  # the table and its indexes
                "SELECT SUM(d.pgsize) FROM dbstat d JOIN sqlite_schema s ON s.name = d.name "
                "WHERE s.tbl_name = ?", [table])
        else:
            [(size,)] = store.rows("SELECT pg_total_relation_size(?)", [table])
        per_million = int(size) / (events / 1_000_000) / 2**20
        lines.append(f"| {level} | {rows:,} | {int(size) / 2**20:,.0f} | {per_million:,.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000,
                        help="events over 30 days for the query benchmark")
    parser.add_argument("--ingest-events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2, help="ingest rounds")
    parser.add_argument("--configs", default=f"default/1000,tuned/1000,"
                        f"tuned/{UsageSink.default_batch}",
                        help="GC thresholds (default: Python's; tuned: the forwarder CLI's) "
                        "and batch size of each ingest run, compared in every round")
    parser.add_argument("--stores", default="SQLite,PostgreSQL",
                        help="which stores the query benchmark fills")
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    configs = [(name, int(batch)) for name, batch in
               (config.split("/") for config in args.configs.split(","))]
    tune_gc()  # as `kong-credits forwarder` does (for the query benchmark too)
    workdir = Path(tempfile.mkdtemp(prefix="bench-usage-"))
    postgres = LocalPostgres(fsync=True).start()
    try:
        with EmbeddedRedis() as server:
            if not args.skip_ingest:
                print("## ingest, end to end from the streams", flush=True)
                files = itertools.count()
                stores: dict[str, Callable[[], str]] = {
                    "SQLite": lambda: f"sqlite:///{workdir}/ingest-{next(files)}.db",
                    "PostgreSQL": postgres.new_database}
                stores = {k: v for k, v in stores.items() if k in args.stores.split(",")}
                ingest_bench(server.url, stores, args.ingest_events,
                             postgres._process.pid,  # type: ignore[union-attr]
                             args.rounds, configs)
        if args.skip_queries:
            return
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        for kind, url in (("SQLite", f"sqlite:///{workdir}/month.db"),
                          ("PostgreSQL", postgres.new_database())):
            if kind not in args.stores.split(","):
                continue
            with open_store(url, create=True) as store:
                print(f"## {kind}: {args.events:,} events over 30 days, 1,000 wallets",
                      flush=True)
                rate = generate(store, args.events, end)
                print(f"generated at {rate:,.0f} events/s (Store.ingest, batches of 2,000)")
                if store.dialect == "postgresql":
                    store.connection.execute("VACUUM ANALYZE")
                print("| query | p50 ms | p95 ms | rows |\n| --- | ---: | ---: | ---: |")
                print("\n".join(query_bench(store, end)), flush=True)
                print("| level | rows | MiB | MiB per million events |\n"
                      "| --- | ---: | ---: | ---: |")
                print("\n".join(sizes(store, args.events)), flush=True)
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the 5M-event SQLite file is ~2.3 GB


if __name__ == "__main__":
    main()
