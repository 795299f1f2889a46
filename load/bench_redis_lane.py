"""EVALSHA calls/s with 32 concurrent asyncio callers: redis.asyncio (hiredis) vs RedisLane.

    python load/bench_redis_lane.py [--url redis://127.0.0.1:6379/0] [--seconds 3] [--asyncio]

Without --url it starts a throwaway redis-server. Both clients run in the same process and loop
(uvloop when importable, unless --asyncio), one after the other: redis.asyncio with its default
pool (a connection per concurrent caller: 32), RedisLane pipelining every caller on one
connection. Client CPU per call is this process's CPU time over the calls made: the server runs
in its own process, so on a 2-core machine calls/s may be capped by Redis, CPU/call is not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import redis.asyncio

from kong_credits.redis_lane import RedisLane, Script
from kong_credits.redis_server import EmbeddedRedis

SOURCE = "return tonumber(ARGV[1]) + 1"
CALLERS = 32


class Rate(NamedTuple):
    calls_per_s: float
    cpu_us_per_call: float


async def _measure(call: Callable[[int], Awaitable[object]], seconds: float) -> Rate:
    """CALLERS tasks call `call` back to back for `seconds`, after a 0.3 s warm-up."""
    stop_at = 0.0
    count = 0

    async def caller(worker: int) -> None:
        nonlocal count
        while time.perf_counter() < stop_at:
            await call(worker)
            count += 1

    stop_at = time.perf_counter() + 0.3
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    count = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    stop_at = started + seconds
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    cpu_s = time.process_time() - cpu_started
    return Rate(count / (time.perf_counter() - started), cpu_s * 1e6 / count)


async def bench(url: str, seconds: float) -> tuple[Rate, Rate]:
    client = redis.asyncio.Redis.from_url(url)
    script = client.register_script(SOURCE)
    redis_py = await _measure(lambda i: script(keys=["bench"], args=[i]), seconds)
    await client.aclose()

    lane = RedisLane.from_url(url)
    lane_script = Script(SOURCE)
    ours = await _measure(lambda i: lane.evalsha(lane_script, ["bench"], [i]), seconds)
    await lane.close()
    return redis_py, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Redis to use; default: start a throwaway redis-server")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--asyncio", action="store_true", help="the default loop, not uvloop")
    options = parser.parse_args()
    runner, loop_name = asyncio.run, "asyncio"
    if not options.asyncio:
        with contextlib.suppress(ImportError):
            import uvloop

            runner, loop_name = uvloop.run, "uvloop"
    with contextlib.ExitStack() as stack:
        url = options.url or stack.enter_context(EmbeddedRedis()).url
        redis_py, ours = runner(bench(url, options.seconds))
    print(f"loop={loop_name} callers={CALLERS} seconds={options.seconds}")
    for name, rate in (("redis.asyncio (hiredis)", redis_py), ("RedisLane", ours)):
        print(f"{name:24} {rate.calls_per_s:9,.0f} calls/s {rate.cpu_us_per_call:6.1f} us CPU/call")
    print(f"{'RedisLane / redis.asyncio':24} {ours.calls_per_s / redis_py.calls_per_s:9.2f}x "
          f"throughput, {redis_py.cpu_us_per_call / ours.cpu_us_per_call:.2f}x less CPU per call")


if __name__ == "__main__":
    main()
