"""Redis memory per wallet, per request and per event kept: the figures the README's sizing
table multiplies.

    python load/bench_memory.py                    # 1,000,000 wallets, ~3 min; updates RESULTS.md
    python load/bench_memory.py --wallets 100000   # prints only

One redis-server (no persistence), filled through the real scripts, pipelined (batches of
`--batch` calls): every wallet gets one grant (grant.lua, with the arguments wallets.grant
sends), then one admitted request each (authorize.lua, the arguments the plugin's prepared
call sends, a per-minute rate limit). `INFO memory`'s used_memory is read after each phase;
what the requests left is then split by `MEMORY USAGE` (every key sampled whole): the event
streams (per event kept until the forwarder trims it), the stored answers (per request
within their TTL: 2 x redis_timeout_ms + 10 s) and the rate-limit windows (per consumer and
period, for the period). The rest is what a wallet grows by once it has been charged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis
from measure import describe_machine, write_section

from kong_credits import wallets
from kong_credits.engine import AUTHORIZE, PreparedAuthorize, RateLimit
from kong_credits.keys import SHARDS, WalletKeys, event_streams
from kong_credits.money import MAX_BALANCE
from kong_credits.redis_server import EmbeddedRedis

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ANSWER_TTL_MS = 3_600_000  # kept for the measurement; the plugin keeps them ~10 s


def used(client: redis.Redis) -> int:
    client.execute_command("MEMORY", "PURGE")
    return int(client.info("memory")["used_memory"])


def names(count: int) -> list[str]:
    return [f"customer-{n:07d}" for n in range(count)]


def grant_all(client: redis.Redis, wallet_names: list[str], batch: int) -> None:
    """What `wallets.grant(client, wallet, 1_000_000)` writes, pipelined."""
    client.script_load(wallets.GRANT.source)
    record = json.dumps({"amount": 1_000_000, "priority": wallets.DEFAULT_PRIORITY,
                         "expires_at_ms": None, "created_at_ms": int(time.time() * 1000)},
                        separators=(",", ":"))
    for start in range(0, len(wallet_names), batch):
        pipe = client.pipeline(transaction=False)
        for wallet in wallet_names[start:start + batch]:
            keys = WalletKeys(wallet)
            pipe.evalsha(wallets.GRANT.sha, 6, *keys.wallet_keys, keys.grants,
                         f"g_{wallet}", 1_000_000, wallets.DEFAULT_PRIORITY, 0, 0, record,
                         MAX_BALANCE)
        pipe.execute()


def charge_all(client: redis.Redis, wallet_names: list[str], batch: int) -> None:
    """One admitted request per wallet, its consumer named after it, as the plugin sends it."""
    client.script_load(AUTHORIZE.source)
    prepared = PreparedAuthorize(cost=1, route="route-1", service="service-1",
                                 limits=[RateLimit(60, 1000)], answer_ttl_ms=ANSWER_TTL_MS)
    for start in range(0, len(wallet_names), batch):
        pipe = client.pipeline(transaction=False)
        for n, wallet in enumerate(wallet_names[start:start + batch], start):
            keys, args = prepared.call(f"r{n:012d}-abcdefghijkl", wallet, wallet, "GET",
                                       "/v1/things")
            pipe.evalsha(AUTHORIZE.sha, len(keys), *keys, *args)
        for reply in pipe.execute():
            assert reply[0] == 200, reply  # admitted


def usage(client: redis.Redis, keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", 0)
    return sum(int(n or 0) for n in pipe.execute())


def sampled(client: redis.Redis, pattern: str, limit: int = 2000) -> tuple[int, float]:
    """How many keys match `pattern` (SCAN), and their mean MEMORY USAGE over `limit`."""
    found = [key for key in client.scan_iter(match=pattern, count=10_000)]
    sample = found[:limit]
    return len(found), usage(client, sample) / max(1, len(sample))


def measure(count: int, batch: int, node_bytes: int) -> dict[str, Any]:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.config_set("stream-node-max-bytes", node_bytes)
        wallet_names = names(count)
        empty = used(client)
        started = time.monotonic()
        grant_all(client, wallet_names, batch)
        granted = used(client)
        charge_all(client, wallet_names, batch)
        charged = used(client)
        elapsed = time.monotonic() - started
        streams = list(event_streams())
        events = sum(client.xlen(s) for s in streams)
        event_bytes = usage(client, streams)
        answers, answer_mean = sampled(client, "kc:*:w:*:req:*")
        windows, window_mean = sampled(client, "kc:*:rl:*")
        info = client.info("server")
        keys_total = client.dbsize()
    answer_bytes, window_bytes = answers * answer_mean, windows * window_mean
    return {
        "wallets": count, "node_bytes": node_bytes, "elapsed_s": elapsed, "keys": keys_total,
        "redis": info["redis_version"],
        "empty_mib": empty / 2**20, "granted_mib": granted / 2**20, "charged_mib": charged / 2**20,
        "per_funded_wallet": (granted - empty) / count,
        "events": events, "per_event": event_bytes / max(1, events),
        "answers": answers, "per_answer": answer_mean,
        "windows": windows, "per_window": window_mean,
        "per_charged_wallet_growth": (charged - granted - event_bytes - answer_bytes
                                      - window_bytes) / count,
    }


def table(results: list[dict[str, Any]]) -> list[str]:
    """One column of used_memory and bytes each per `stream-node-max-bytes` measured."""
    first = results[0]
    elapsed = " and ".join(f"{r['elapsed_s']:.0f}" for r in results)
    settings = " | ".join(f"stream-node-max-bytes {r['node_bytes']}" for r in results)
    align = " | ".join("---:" for _ in results)

    def row(what: str, count: object, cell: str) -> str:
        return f"| {what} | {count} | " + " | ".join(cell.format(**r) for r in results) + " |"

    return [
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"`python load/bench_memory.py --wallets {first['wallets']}`: Redis {first['redis']}, "
        f"{SHARDS} shards, one grant then one admitted request per wallet "
        f"({elapsed} s; "
        f"{first['keys']:,} keys at the end).",
        "",
        *describe_machine(),
        "",
        f"| what | count | {settings} |",
        f"| --- | ---: | {align} |",
        row("empty Redis, used_memory", "", "{empty_mib:.1f} MiB"),
        row("funded wallets (one grant: state, grants, remaining, burn order, ledger), "
            "used_memory", f"{first['wallets']:,}", "{granted_mib:.1f} MiB"),
        row("bytes per funded wallet", "", "{per_funded_wallet:.0f}"),
        row("after one admitted request each, used_memory", "", "{charged_mib:.1f} MiB"),
        row("bytes per event in the streams (MEMORY USAGE)", f"{first['events']:,}",
            "{per_event:.0f}"),
        row("bytes per stored answer (kept 2 x redis_timeout_ms + 10 s)",
            f"{first['answers']:,}", "{per_answer:.0f}"),
        row("bytes per rate-limit window (per consumer and period, for the period)",
            f"{first['windows']:,}", "{per_window:.0f}"),
        row("bytes a wallet grows by once charged (counters, ledger entry)",
            f"{first['wallets']:,}", "{per_charged_wallet_growth:.0f}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wallets", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2_000, help="script calls per pipeline")
    parser.add_argument("--stream-node-max-bytes", default="4096,1024",
                        help="Redis settings to measure, comma-separated (4096: the default)")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the table here (default RESULTS.md at 1,000,000 wallets)")
    args = parser.parse_args()
    lines = table([measure(args.wallets, args.batch, int(node_bytes))
                   for node_bytes in args.stream_node_max_bytes.split(",")])
    print("\n".join(lines))
    output = args.output or (RESULTS if args.wallets == 1_000_000 else None)
    if output is not None:
        write_section(output, "bench_memory.py", lines)
        print(f"written to {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
