"""Redis alone: authorize script calls per second, sequential and pipelined.

No plugin server, no host: the engine's own KEYS/ARGV (`engine.authorize_call`) are sent as
EVALSHA to one Redis, so the figures are what Redis can do with the script, not what a client
can send. Cases:

- one hot wallet, 1 grant, no rate limit (every request charges the same wallet);
- 100k wallets, 1 grant each, requests spread over them at random;
- one wallet with 10 and 100 grants (burn order, expiry sweep);
- 1, 2 and 4 rate-limit windows (second, minute, hour, day) per request;
- one hot wallet on a plan (monthly allowance, mid-period: the renewal check only);
- with `--compare-ref REF`, the first case again with the scripts as they were at git REF, so a
  script change is measured against its baseline in the same run;
- the command floor: a script that runs exactly the Redis commands an admitted authorize runs
  for one plain wallet (TIME, GET, HGETALL, ZRANGE, HGET, HINCRBY, 2 XADD, SET, HSET) and
  none of its logic: what those commands alone cost, so the ceiling on authorizations/s.

Each case: sequential (one blocking redis-py call at a time: a round trip each), pipelined
(RESP packed ahead, sent in batches of --batch on one socket: Redis's own limit), and through
RedisLane, the plugin's asyncio client, with 64 concurrent callers. Redis CPU per call comes
from INFO cpu. Every call is admitted (status 200) or the run fails.

    /work/venv/bin/python load/bench_engine.py            # ~1 min; updates load/RESULTS.md
    /work/venv/bin/python load/bench_engine.py --quick    # prints only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import hiredis
import redis
import uvloop
from measure import RedisSnapshot, describe_machine, write_section

from kong_credits import plans, wallets
from kong_credits.engine import AUTHORIZE, AuthorizeRequest, RateLimit, authorize_call
from kong_credits.redis_lane import RedisLane
from kong_credits.redis_server import EmbeddedRedis
from kong_credits.scripts import LuaScript

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
WINDOWS = [RateLimit(1, 10**9), RateLimit(60, 10**9), RateLimit(3600, 10**9),
           RateLimit(86400, 10**9)]


FLOOR = LuaScript("floor", """
local t = redis.call('TIME')
redis.call('GET', KEYS[12])
redis.call('HGETALL', KEYS[1])
local id = string.sub(redis.call('ZRANGE', KEYS[3], 0, 3)[1], 39)
redis.call('HGET', KEYS[2], id)
redis.call('HINCRBY', KEYS[2], id, -ARGV[2])
redis.call('XADD', KEYS[11], '*', 'event_id', ARGV[1], 'wallet', ARGV[6], 'consumer', ARGV[7],
  'route', ARGV[8], 'service', ARGV[9], 'method', ARGV[10], 'path', ARGV[11], 'cost', ARGV[2],
  'timestamp', t[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', 1000, '*', 'type', 'charge', 'ref', ARGV[1],
  'amount', '-1', 'balance', '999', 'ts', t[1])
redis.call('SET', KEYS[12], '200,1,999,-1,-1,0,0,0,|', 'PX', ARGV[4])
redis.call('HSET', KEYS[1], 'spent_day', '1', 'spent_month', '1', 'burn_current', '1')
return {200}
""")  # the commands of an admitted authorize (1 grant, no limit), none of its logic


_CHARGE_LEDGER = "  ledger_add(own, 'charge', request_id, -from_own, spendable(own))\n"
assert AUTHORIZE.source.count(_CHARGE_LEDGER) == 1
NO_CHARGE_LEDGER = LuaScript("authorize_without_charge_ledger",
                             AUTHORIZE.source.replace(_CHARGE_LEDGER, ""))
"""authorize.lua without the per-charge ledger XADD (issue 15: one record of each charge)."""


@dataclass(frozen=True)
class Case:
    name: str
    wallets: int
    grants: int
    limits: int
    script: LuaScript = AUTHORIZE
    plan: bool = False


CASES = [
    Case("1 hot wallet, 1 grant", 1, 1, 0),
    Case("100k wallets, 1 grant each", 100_000, 1, 0),
    Case("1 wallet, 10 grants", 1, 10, 0),
    Case("1 wallet, 100 grants", 1, 100, 0),
    Case("1 hot wallet on a plan, 1 grant", 1, 1, 0, plan=True),
    Case("1 wallet, 1 rate-limit window", 1, 1, 1),
    Case("1 wallet, 2 rate-limit windows", 1, 1, 2),
    Case("1 wallet, 4 rate-limit windows", 1, 1, 4),
    Case("command floor: 1 hot wallet, no logic", 1, 1, 0, FLOOR),
]
LEDGER_CASES = [
    Case("1 hot wallet, 1 grant", 1, 1, 0),
    Case("1 hot wallet, 1 grant, no per-charge ledger XADD", 1, 1, 0, NO_CHARGE_LEDGER),
    Case("10k wallets, 1 grant each", 10_000, 1, 0),
    Case("10k wallets, 1 grant each, no per-charge ledger XADD", 10_000, 1, 0,
         NO_CHARGE_LEDGER),
]


@dataclass
class Rate:
    calls_per_s: float
    redis_cpu_us: float


class Calls:
    """Endless authorize calls of one case: (keys, args) with fresh request ids."""

    def __init__(self, case: Case, prefix: str) -> None:
        self.case = case
        self.prefix = prefix
        self._ids = itertools.count()
        self._random = random.Random(7)

    def wallet(self, i: int) -> str:
        return f"{self.prefix}-w{i}"

    def __iter__(self) -> Iterator[tuple[list[str], list[str | int]]]:
        limits = WINDOWS[: self.case.limits]
        while True:
            n = next(self._ids)
            wallet = self.wallet(self._random.randrange(self.case.wallets))
            yield authorize_call(AuthorizeRequest(
                request_id=f"{self.prefix}-{n}", wallet=wallet, consumer="bench", cost=1,
                route="route-id", service="service-id", method="GET", path="/bench",
                limits=limits))


def fund(client: redis.Redis, calls: Calls) -> None:
    """Grants for every wallet of the case; far-off expiries so every grant stays live."""
    expiry = "2099-01-01T00:00:00Z"
    for i in range(calls.case.wallets):
        for g in range(calls.case.grants):
            wallets.grant(client, calls.wallet(i), 10**12, grant_id=f"g{g}", priority=g,
                          expires_at=expiry if g else None)
        if calls.case.plan:  # the first call of the period materialises it, not timed
            plans.set_plan(client, calls.wallet(i), allowance=10**12, every="month")
            plans.renew(client, calls.wallet(i))


def scripts_at(ref: str) -> LuaScript:
    """authorize.lua with the shared files it was sent with at git `ref` (a baseline)."""
    def show(name: str) -> str | None:
        done = subprocess.run(["git", "show", f"{ref}:plugins/kong_credits/scripts/{name}"],
                              capture_output=True, text=True, cwd=RESULTS.parent)
        return done.stdout if done.returncode == 0 else None

    parts = [show(name) for name in ("wallet.lua", "plans.lua", "authorize.lua")]
    return LuaScript(f"authorize@{ref}", "\n".join(part for part in parts if part is not None))


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _check(reply: object) -> None:
    if not isinstance(reply, list) or reply[0] != 200:
        raise RuntimeError(f"authorize was not admitted: {reply!r}")


def sequential(client: redis.Redis, calls: Calls, n: int) -> Rate:
    it = iter(calls)
    cpu0, t0 = redis_cpu_s(client), time.perf_counter()
    for keys, args in itertools.islice(it, n):
        _check(client.evalsha(calls.case.script.sha, len(keys), *keys, *args))
    elapsed, cpu = time.perf_counter() - t0, redis_cpu_s(client) - cpu0
    return Rate(n / elapsed, cpu / n * 1e6)


def pipelined(url: str, client: redis.Redis, calls: Calls, n: int, batch: int) -> Rate:
    """Batches packed before the clock starts; then send a batch, read its replies, repeat."""
    it = iter(calls)
    batches = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        batches.append((size, b"".join(
            hiredis.pack_command(("EVALSHA", calls.case.script.sha, len(keys), *keys, *args))
            for keys, args in itertools.islice(it, size))))
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 6379)) as sock:
        reader = hiredis.Reader()
        cpu0, t0 = redis_cpu_s(client), time.perf_counter()
        for size, payload in batches:
            sock.sendall(payload)
            got = 0
            while got < size:
                reader.feed(sock.recv(1 << 20))
                while (reply := reader.gets()) is not False:
                    _check(reply)
                    got += 1
        elapsed, cpu = time.perf_counter() - t0, redis_cpu_s(client) - cpu0
    return Rate(n / elapsed, cpu / n * 1e6)


def through_lane(url: str, client: redis.Redis, calls: Calls, n: int, callers: int = 64) -> Rate:
    """The plugin's client: RedisLane, `callers` tasks sharing one pipelined connection."""
    prepared = list(itertools.islice(iter(calls), n))

    async def run() -> float:
        lane = RedisLane.from_url(url)
        await lane.evalsha(calls.case.script, *prepared[0])  # connect
        queue = iter(prepared[1:])

        async def caller() -> None:
            for keys, args in queue:
                _check(await lane.evalsha(calls.case.script, keys, args))

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - t0
        await lane.close()
        return elapsed

    cpu0 = redis_cpu_s(client)
    elapsed = uvloop.run(run())
    cpu = redis_cpu_s(client) - cpu0
    return Rate((n - 1) / elapsed, cpu / (n - 1) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60_000, help="pipelined calls per case")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="pipelined runs; median shown")
    parser.add_argument("--quick", action="store_true", help="fewer calls, no 100k wallets")
    parser.add_argument("--ledger", action="store_true",
                        help="only authorize with and without the per-charge ledger XADD")
    parser.add_argument("--redis-url", help="default: a throwaway redis-server")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--compare-ref", metavar="REF",
                        help="also run the first case with the scripts of git REF")
    args = parser.parse_args()
    cases = CASES
    if args.quick:
        args.calls, args.rounds = 10_000, 1
        cases = [c for c in CASES if c.wallets == 1]
    if args.ledger:
        cases = LEDGER_CASES
    if args.compare_ref:
        cases = [cases[0], Case(f"{cases[0].name} [scripts at {args.compare_ref}]", 1, 1, 0,
                                scripts_at(args.compare_ref)), *cases[1:]]
    output = args.output or (None if args.quick or args.ledger else RESULTS)
    lines = [
        "| case | sequential calls/s | pipelined calls/s | Redis CPU µs/call pipelined | "
        "commands inside the script per call | RedisLane (64 callers) calls/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(EmbeddedRedis()).url
        client = redis.Redis.from_url(url)
        for script in {case.script for case in cases}:
            client.script_load(script.source)
        info = client.info("server")
        for number, case in enumerate(cases):
            calls = Calls(case, f"b{number}")
            started = time.perf_counter()
            fund(client, calls)
            funded_s = time.perf_counter() - started
            seq = sequential(client, calls, max(2_000, args.calls // 10))
            before = RedisSnapshot.take(client)
            piped = [pipelined(url, client, calls, args.calls, args.batch)
                     for _ in range(args.rounds)]
            inner = before.delta(RedisSnapshot.take(client))
            inside = (sum(inner.values()) - inner["evalsha"]) / (args.calls * args.rounds)
            best = sorted(piped, key=lambda r: r.calls_per_s)[len(piped) // 2]
            lane = through_lane(url, client, calls, args.calls // 2)
            row = (f"| {case.name} | {seq.calls_per_s:,.0f} | {best.calls_per_s:,.0f} | "
                   f"{best.redis_cpu_us:.1f} | {inside:.1f} | {lane.calls_per_s:,.0f} |")
            lines.append(row)
            spread = statistics.pstdev(r.calls_per_s for r in piped) if len(piped) > 1 else 0
            print(f"{row}  (funding {funded_s:.1f} s, pipelined spread ±{spread:,.0f})",
                  flush=True)
        client.close()
    header = [
        f"Run: {time.strftime('%Y-%m-%d %H:%M')} UTC, `python load/bench_engine.py "
        f"{' '.join(sys.argv[1:])}`: pipelined = {args.calls:,} EVALSHA authorize in batches "
        f"of {args.batch} on one connection (median of {args.rounds}); sequential = one "
        "blocking call at a time; every call admitted (cost 1).",
        "",
        *describe_machine(info),
        "",
    ]
    out = header + lines
    print()
    for line in out:
        print(line)
    if output is not None:
        write_section(output, "bench_engine.py", out)
        print(f"\nupdated {output}")


if __name__ == "__main__":
    main()
