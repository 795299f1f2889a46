"""The admin API's cost per request: each endpoint against the HTTP floor, in the same run.

    python load/bench_admin.py            # ~1 min; updates its section of RESULTS.md
    python load/bench_admin.py --quick    # fewer requests, prints only

One redis-server, 1,000 wallets with a grant each, one `kong-credits admin` process (uvicorn,
one worker). `--concurrency` asyncio httpx clients in this process send `--requests` of each
scenario. The baseline is `GET /healthz` (HTTP, routing, middleware and one PING): what any
endpoint costs before it does its own work. Per scenario: requests/s, p50/p99 latency, the
admin process's CPU per request (/proc), Redis CPU per request (INFO cpu), and the commands
clients sent Redis per request (MONITOR on a separate 200-request pass: MULTI...EXEC and a
pipeline are one round trip each, their commands counted one by one).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
from measure import (
    CpuClock,
    MonitorCount,
    describe_machine,
    percentile,
    wait_for_quiet,
    write_section,
)

from kong_credits import wallets
from kong_credits.redis_server import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token"
WALLETS = 1000


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCENARIOS: list[tuple[str, Callable[[httpx.AsyncClient, int], object]]] = [
    ("GET /healthz (baseline)", lambda c, i: c.get("/healthz")),
    ("GET /v1/wallets/{wallet}", lambda c, i: c.get(f"/v1/wallets/w{i % WALLETS:04d}")),
    ("GET /v1/wallets/{wallet}/ledger", lambda c, i: c.get(
        f"/v1/wallets/w{i % WALLETS:04d}/ledger")),
    ("POST grants, new", lambda c, i: c.post(
        f"/v1/wallets/w{i % WALLETS:04d}/grants", json={"amount": 1})),
    ("POST grants, Idempotency-Key retry", lambda c, i: c.post(
        "/v1/wallets/w0001/grants", json={"amount": 1}, headers={"Idempotency-Key": "retry"})),
    ("GET /v1/wallets?limit=100", lambda c, i: c.get("/v1/wallets", params={"limit": 100})),
]


async def _drive(url: str, scenario: Callable, requests: int, concurrency: int
                 ) -> list[float]:
    latencies: list[float] = []
    counter = itertools.count()
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {TOKEN}"},
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            while (i := next(counter)) < requests:
                started = time.perf_counter()
                response = await scenario(client, i)
                latencies.append(time.perf_counter() - started)
                if response.status_code >= 300:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    requests = 600 if args.quick else args.requests
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        client = redis.Redis.from_url(server.url)
        for n in range(WALLETS):
            wallets.grant(client, f"w{n:04d}", 1_000_000)
        port = _port()
        env = {**os.environ, "KONG_CREDITS_ADMIN_TOKEN": TOKEN}
        with Path(tmp, "admin.log").open("wb") as log:
            admin = subprocess.Popen(
                [sys.executable, "-c", "from kong_credits.launch import main; main()", "admin",
                 "--listen", f"127.0.0.1:{port}", "--redis-url", server.url, "--log-level",
                 "warning"], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            rows = []
            baseline = None
            for name, scenario in SCENARIOS:
                asyncio.run(_drive(url, scenario, 100, args.concurrency))  # warm-up
                with MonitorCount(server.url) as monitor:
                    asyncio.run(_drive(url, scenario, 200, 1))
                wait_for_quiet()
                clock = CpuClock({"admin": admin.pid}, client)
                clock.start()
                started = time.perf_counter()
                latencies = asyncio.run(_drive(url, scenario, requests, args.concurrency))
                elapsed = time.perf_counter() - started
                cpu = clock.stop()
                rate = requests / elapsed
                baseline = baseline or rate
                mix = ", ".join(f"{cmd} {count / 200:g}"
                                for cmd, count in monitor.commands.most_common())
                rows.append(
                    f"| {name} | {rate:,.0f} | {rate / baseline:.2f} | "
                    f"{percentile(latencies, 0.5) * 1000:.2f} / "
                    f"{percentile(latencies, 0.99) * 1000:.2f} | "
                    f"{cpu['admin'] / requests * 1e6:,.0f} / "
                    f"{cpu['redis'] / requests * 1e6:,.0f} | "
                    f"{monitor.total / 200:g} ({mix}) |")
        finally:
            admin.terminate()
            admin.wait(10)
        lines = [
            f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"`python load/bench_admin.py{' --quick' if args.quick else ''}`: "
            f"{requests:,} requests per scenario, {args.concurrency} concurrent httpx clients, "
            f"one admin process (uvicorn, 1 worker), {WALLETS:,} wallets.",
            "",
            *describe_machine(client.info("server")),
            "",
            "| scenario | req/s | x baseline | ms p50 / p99 | CPU µs/req admin / Redis | "
            "Redis commands per request (MONITOR) |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            *rows,
        ]
        print("\n".join(lines))
        if not args.quick:
            write_section(ROOT / "load" / "RESULTS.md", "bench_admin.py", lines)


if __name__ == "__main__":
    main()
