"""What `on_redis_error: spool` costs (issue 14): the spooled path against the normal one,
live traffic while the background replay runs against live traffic alone, and replay rates.

Through the Kong-protocol host and the real plugin server (`--workers 1`, so the CPU read is
one process's), on a throwaway redis-server:
- per request, saturating (--concurrency) for --requests: `live` (Redis answers: the normal
  path, the baseline), `spooled` (its Redis refuses connections: written to the spool, fsync
  once a second), `spooled-fsync` (`spool_fsync: always`), `allow` (the same dead Redis,
  `on_redis_error: allow`: passed unmetered, the floor). Plugin-server CPU per request, rate,
  p50/p99 of the access phase; ratios against `live` of the same round.
- replay under load: 0.3 s into a saturating `live` pass, --spooled requests appear in the
  live Redis's spool (a sealed segment, as a crashed server leaves it, written beforehand
  and moved in); the plugin server adopts and replays it in the background; that pass
  against a `live` pass with nothing to replay (alternating order, per-round ratios,
  medians), the background replay rate, and the replay's own CPU once traffic stops.
- the rate of `kong-credits spool replay` (full speed, no live traffic).

    python load/bench_spool.py                  # updates load/RESULTS.md
    python load/bench_spool.py --quick          # 1 round, print only
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis
import uvloop
from bench import Pass, client_request, saturate
from measure import CpuClock, describe_machine, percentile, wait_for_quiet, write_section

from kong_credits import wallets
from kong_credits.engine import AUTHORIZE, Decision, run_script
from kong_credits.host import Host, credits_servers, static_upstream
from kong_credits.keys import WalletKeys
from kong_credits.redis_server import EmbeddedRedis
from kong_credits.spool import FsyncPolicy, Spool, SpooledRequest
from kong_credits.spool.replay import replay_directory
from kong_credits.spool.segments import prepare_directory, segment_paths, spool_directory

LOAD = Path(__file__).resolve().parent
RESULTS = LOAD / "RESULTS.md"
PAYER = "bench-spool-payer"
REPLAYED = "bench-spool-replayed"  # the spooled requests' wallet
REPLAY_FUNDS = 10**12
DEAD = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once


def kong_config(redis_url: str) -> dict[str, Any]:
    def route(name: str, url: str, **config: Any) -> dict[str, Any]:
        return {"name": name, "paths": [f"/{name}"], "plugins": [
            {"name": "key-auth"},
            {"name": "credits", "config": {"redis_url": url, "cost": 1,
                                           "on_redis_error": "spool", **config}}]}

    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080", "routes": [
            route("live", redis_url), route("spooled", DEAD),
            route("spooled-fsync", DEAD, spool_fsync="always"),
            route("allow", DEAD, on_redis_error="allow"),
        ]}],
        "consumers": [{"username": PAYER, "custom_id": PAYER,
                       "keyauth_credentials": [{"key": "bench-key"}]}],
    }


@dataclass
class Measured:
    name: str
    rate: float
    server_us: float
    p50_ms: float
    p99_ms: float


async def measure(host: Host, path: str, requests: int, concurrency: int,
                  started: asyncio.Event | None = None) -> Measured:
    """A saturating pass; `started` is set once the machine is quiet and the pass begins."""
    request = client_request(path, "bench-key")
    send = lambda: host.handle_request(request)  # noqa: E731
    pid = host.processes["credits"].pid
    assert pid is not None
    gc.collect()
    await asyncio.to_thread(wait_for_quiet)
    clock = CpuClock({"server": pid})
    clock.start()
    if started is not None:
        started.set()
    seen: Pass = await saturate(host, send, requests, concurrency)
    cpu = clock.stop()
    if set(seen.statuses) != {200}:
        raise RuntimeError(f"{path}: {dict(seen.statuses)}")
    return Measured(path.strip("/"), seen.rate, cpu["server"] / requests * 1e6,
                    percentile(seen.plugin_ms, 0.5), percentile(seen.plugin_ms, 0.99))


def write_spool(prefix: str, redis_url: str, count: int) -> None:
    """`count` spooled requests in a sealed segment, as a crashed plugin server leaves them."""
    spool = Spool(spool_directory(prefix, redis_url), redis_url)
    at_ms = time.time_ns() // 1_000_000
    for n in range(count):
        spool.append(SpooledRequest(f"bench-{at_ms}-{n}", REPLAYED, "bench-consumer", 1,
                                    at_ms),
                     max_bytes=1 << 40, fsync=FsyncPolicy.NEVER)
    spool.seal()


def replayed(admin: redis.Redis) -> int:
    """Spooled requests charged so far: each costs its wallet 1 credit (one HGET)."""
    return REPLAY_FUNDS - int(admin.hget(WalletKeys(REPLAYED).state, "balance") or 0)


async def replay_under_load(host: Host, admin: redis.Redis, prefix: str, redis_url: str,
                            args: argparse.Namespace) -> tuple[Measured, float, bool, float]:
    """A live pass during which --spooled requests (of their own wallet) appear in the live
    Redis's spool, as a sealed segment a crashed server leaves, 0.3 s into the pass: (the live
    pass, background replay rate from the first replayed request to the pass's end, whether
    the replay still ran then, plugin-server CPU µs per request replayed with no live
    traffic, measured while the rest of the spool drains)."""
    directory = spool_directory(prefix, redis_url)
    staging = Path(prefix) / "staging"
    write_spool(str(staging), redis_url, args.spooled)  # before the pass: no work during it
    [segment] = segment_paths(spool_directory(staging, redis_url))
    started = asyncio.Event()
    live_pass = asyncio.get_running_loop().create_task(
        measure(host, "/live", args.requests, args.concurrency, started))
    await started.wait()
    await asyncio.sleep(0.3)
    base = await asyncio.to_thread(replayed, admin)
    prepare_directory(directory, redis_url)
    segment.rename(directory / segment.name)  # appears at once, as a crashed server's
    first_at = None
    while not live_pass.done():  # polled off the driver's event loop, 10 times a second
        await asyncio.sleep(0.1)
        count = await asyncio.to_thread(replayed, admin)
        if first_at is None and count > base:
            first_at = (time.monotonic(), count)
    live = await live_pass
    rate = 0.0
    if first_at is not None:
        rate = ((await asyncio.to_thread(replayed, admin)) - first_at[1]) / max(
            time.monotonic() - first_at[0], 1e-3)
    still_running = bool(segment_paths(directory))
    pid = host.processes["credits"].pid
    assert pid is not None
    clock, idle_start = CpuClock({"server": pid}), replayed(admin)
    clock.start()
    while segment_paths(directory):  # drains with no live traffic before the next pass
        await asyncio.sleep(0.2)
    idle_cpu, idle_replayed = clock.stop()["server"], replayed(admin) - idle_start
    return (live, rate, still_running,
            idle_cpu / idle_replayed * 1e6 if idle_replayed else float("nan"))


async def cli_replay_rate(redis_url: str, count: int) -> float:
    """`kong-credits spool replay`'s loop (full speed, blocking client, one process)."""
    with tempfile.TemporaryDirectory(prefix="kcspool") as prefix:
        write_spool(prefix, redis_url, count)
        client = redis.Redis.from_url(redis_url)

        async def charge(keys: Sequence[str], args: Sequence[Any]) -> Decision:
            return Decision.from_reply(run_script(client, AUTHORIZE, keys, args))

        started = time.monotonic()
        outcome = await replay_directory(spool_directory(prefix, redis_url), charge)
        elapsed = time.monotonic() - started
        client.close()
        assert outcome.replayed == count, outcome
        return count / elapsed


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


async def run(args: argparse.Namespace, redis_url: str) -> list[str]:
    admin = redis.Redis.from_url(redis_url)
    wallets.grant(admin, PAYER, 10**12)
    wallets.grant(admin, REPLAYED, REPLAY_FUNDS)
    prefix = tempfile.mkdtemp(prefix="kcspool", dir="/tmp")
    servers = [replace(s, start_cmd=f"{s.start_cmd} --workers 1") if s.start_cmd else s
               for s in credits_servers(prefix)]
    host = Host(kong_config(redis_url), servers, upstream=static_upstream())
    await host.start()
    paths = ["/live", "/spooled", "/spooled-fsync", "/allow"]
    per_path: dict[str, list[Measured]] = {p: [] for p in paths}
    ratios: dict[str, list[float]] = {p: [] for p in paths}
    quiet: list[Measured] = []
    loaded: list[Measured] = []
    load_ratios: list[float] = []
    cpu_ratios: list[float] = []
    background: list[float] = []
    idle_cpu: list[float] = []
    unfinished = 0
    try:
        for path in paths:  # warm-up: instances, connections, spool files
            await saturate(host, lambda p=path: host.handle_request(  # type: ignore[misc]
                client_request(p, "bench-key")), 300, args.concurrency)
        for round_no in range(args.rounds):
            order = paths if round_no % 2 == 0 else [paths[0], *reversed(paths[1:])]
            results = {p: await measure(host, p, args.requests, args.concurrency)
                       for p in order}
            for path in paths:
                per_path[path].append(results[path])
                ratios[path].append(results[path].server_us / results["/live"].server_us)
            if round_no % 2 == 0:
                alone = await measure(host, "/live", args.requests, args.concurrency)
            with_replay, rate, running, replay_cpu = await replay_under_load(
                host, admin, prefix, redis_url, args)
            if round_no % 2 == 1:
                alone = await measure(host, "/live", args.requests, args.concurrency)
            unfinished += running
            idle_cpu.append(replay_cpu)
            quiet.append(alone)
            loaded.append(with_replay)
            load_ratios.append(with_replay.rate / alone.rate)
            cpu_ratios.append(with_replay.server_us / alone.server_us)
            background.append(rate)
            print(f"round {round_no + 1}: " + ", ".join(
                f"{p} {results[p].rate:,.0f}/s {results[p].server_us:.0f} µs" for p in paths)
                + f"; live with replay {with_replay.rate / alone.rate:.2f}x rate, "
                  f"{with_replay.server_us / alone.server_us:.2f}x CPU "
                  f"(replay {rate:,.0f}/s, still running: {running})", flush=True)
        spool_dir = spool_directory(prefix, DEAD)
        for path in segment_paths(spool_dir):  # the dead Redis's spool: not for replay
            path.unlink()
    finally:
        await host.stop()
        admin.close()
        shutil.rmtree(prefix, ignore_errors=True)
    cli_rate = await cli_replay_rate(redis_url, args.spooled)

    def row(name: str, runs: list[Measured], ratio: list[float]) -> str:
        chosen = sorted(runs, key=lambda m: m.rate)[len(runs) // 2]
        return (f"| {name} | {chosen.rate:,.0f} | {chosen.server_us:.0f} | "
                f"{_median(ratio):.2f}x | {chosen.p50_ms:.2f} | {chosen.p99_ms:.2f} |")

    lines = [
        f"Run: {time.strftime('%Y-%m-%d %H:%M')} UTC, `python load/bench_spool.py "
        f"{' '.join(sys.argv[1:])}`: {args.rounds} round(s) of {args.requests:,} requests "
        f"per pass at {args.concurrency} concurrent through the host, plugin server "
        f"`--workers 1`; {args.spooled:,} requests spooled for each replay pass. Rows: the "
        "round with the median rate; ratios: medians of per-round ratios.",
        "",
        *describe_machine(admin_info(redis_url)),
        "",
        "| path | req/s | server CPU µs/req | CPU x live | access p50 ms | access p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(row(p.strip("/"), per_path[p], ratios[p]) for p in paths),
        "",
        "| live traffic | req/s | server CPU µs/req | rate x alone | CPU x alone | "
        "access p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        _live_row("alone", quiet, [1.0] * len(quiet), [1.0] * len(quiet)),
        _live_row("while replaying", loaded, load_ratios, cpu_ratios),
        "",
        f"Background replay rate while live traffic saturates: median "
        f"{_median(background):,.0f} requests/s (replay still running at the end of "
        f"{unfinished} of {args.rounds} live pass(es)). With no live traffic, the background "
        f"replay spends a median {_median(idle_cpu):.0f} µs of plugin-server CPU per request "
        f"replayed. `kong-credits spool replay` (full speed, one blocking connection): "
        f"{cli_rate:,.0f} requests/s.",
    ]
    return lines


def _live_row(name: str, runs: list[Measured], rate_ratio: list[float],
              cpu_ratio: list[float]) -> str:
    chosen = sorted(runs, key=lambda m: m.rate)[len(runs) // 2]
    return (f"| {name} | {chosen.rate:,.0f} | {chosen.server_us:.0f} | "
            f"{_median(rate_ratio):.2f}x | {_median(cpu_ratio):.2f}x | {chosen.p99_ms:.2f} |")


def admin_info(redis_url: str) -> dict[str, Any]:
    with redis.Redis.from_url(redis_url) as client:
        return client.info("server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000,
                        help="per pass: long enough (~3 s here) for the replay's 1 s rounds")
    parser.add_argument("--spooled", type=int, default=3_000,
                        help="per replay pass: enough to outlast the live pass")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 round; print only")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    output = args.output or (None if args.quick else RESULTS)
    os.environ.setdefault("KONG_CREDITS_REDIS_URL", DEAD)
    with EmbeddedRedis() as server:
        lines = uvloop.run(run(args, server.url))
    print("\n".join(lines))
    if output is not None:
        write_section(output, "bench_spool.py", lines)
        print(f"\nupdated {output}")


if __name__ == "__main__":
    main()
