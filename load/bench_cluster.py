"""The credits plugin on a 3-master Redis Cluster against one Redis node, in the same run.

    python load/bench_cluster.py                 # ~4 min; updates its section of RESULTS.md
    python load/bench_cluster.py --quick         # 2 rounds of 5,000, prints only

One Kong-protocol host (kong_credits.host, as load/bench.py drives it: `Host.handle_request`
from `--concurrency` asyncio tasks, static upstream, no HTTP) and one credits plugin server
(`--workers 1`: its pid's CPU is the server's), with two routes that differ only in
`redis_url`: /single to one redis-server, /cluster to a `redis+cluster://` of 3 masters made
by `redis-cli --cluster create` (no replicas: they cost the masters, not the plugin). 16
consumers, one wallet per shard, spread the cluster's requests over its masters; a third
pass sends /cluster only the wallets of one master, which is the cluster lane's own cost
without the fan-out. Every request is admitted. Each round measures the three passes in a
rotating order, each after a warm-up and a wait for a quiet machine: requests/s at
saturation, p50/p99 of the time the host spends in the plugin's access phase, plugin-server
CPU per request (/proc), Redis CPU per request (INFO cpu, summed over the masters), EVALSHA
per request (INFO commandstats over every node), then the same at a fixed `--paced-rate`.
Medians over rounds. Then the clients alone, in this process: RedisLane against ClusterLane,
32 callers, CPU per EVALSHA. The issue's target: the cluster path at most 1.10x the
single-node path's plugin-server CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis
import uvloop
from measure import CpuClock, describe_machine, percentile, wait_for_quiet, write_section

from kong_credits import wallets
from kong_credits.host import Host, credits_servers, static_upstream
from kong_credits.host.context import ClientRequest, Headers
from kong_credits.keys import SHARDS, WalletKeys, shard_of
from kong_credits.redis_lane import Script
from kong_credits.redis_routing import Lane, lane_from_url, slot_of
from kong_credits.redis_server import EmbeddedRedis

LOAD = Path(__file__).resolve().parent
sys.path.insert(0, str(LOAD.parent / "tests"))  # the test suite's cluster, reused
from redis_cluster import LocalCluster  # noqa: E402

RESULTS = LOAD / "RESULTS.md"
PATHS = ("single", "cluster", "cluster, one master")
ROUTES = {"single": "single", "cluster": "cluster", "cluster, one master": "cluster"}
LABELS = {"single": "one node", "cluster": "3-master cluster",
          "cluster, one master": "3-master cluster, one master's wallets"}


def wallet_names() -> list[str]:
    """One wallet per shard (16 by default), each paid by its own consumer."""
    names: dict[int, str] = {}
    n = 0
    while len(names) < SHARDS:
        names.setdefault(shard_of(f"bench-{n}"), f"bench-{n}")
        n += 1
    return list(names.values())


def kong_config(urls: dict[str, str], names: list[str]) -> dict[str, Any]:
    routes = [{"name": route, "paths": [f"/{route}"]} for route in urls]
    plugins = [{"name": "key-auth"}, *({"name": "credits", "route": route,
                                        "config": {"redis_url": url, "cost": 1}}
                                       for route, url in urls.items())]
    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080", "routes": routes}],
        "consumers": [{"username": name, "custom_id": name, "keyauth_credentials": [
            {"key": name}]} for name in names],
        "plugins": plugins,
    }


def requests_for(route: str, names: list[str]) -> list[ClientRequest]:
    return [ClientRequest(method="GET", path=f"/{route}", host="localhost", port=8000,
                          headers=Headers([("apikey", name), ("Host", "localhost:8000")]))
            for name in names]


@dataclass
class Pass:
    path: str
    rate: float
    p50_ms: float
    p99_ms: float
    server_us: float  # plugin-server CPU per request
    redis_us: float  # Redis CPU per request, all masters
    evalsha: float  # per request, all nodes
    paced_p50_ms: float = 0.0  # the same, at a rate both paths sustain
    paced_p99_ms: float = 0.0
    paced_server_us: float = 0.0


class Redises:
    """The Redis nodes behind one path: CPU and EVALSHA counts summed over them."""

    def __init__(self, ports: list[int]) -> None:
        self.nodes = [redis.Redis(port=port) for port in ports]

    def cpu_s(self) -> float:
        total = 0.0
        for node in self.nodes:
            info = node.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total

    def evalsha(self) -> int:
        return sum(int(node.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
                   for node in self.nodes)


async def saturate(host: Host, batch: list[ClientRequest], requests: int,
                   concurrency: int) -> tuple[float, list[float]]:
    """`concurrency` tasks send back to back until `requests` were sent: (seconds, access ms
    of each request, sorted)."""
    left = requests
    spent_ms: list[float] = []

    async def worker(offset: int) -> None:
        nonlocal left
        i = offset
        while left > 0:
            left -= 1
            response = await host.handle_request(batch[i % len(batch)])
            if response.status != 200:
                raise RuntimeError(f"expected 200, got {response.status}: {response.body!r}")
            spent_ms.append(1000 * sum(s for phase, s in response.plugin_s.items()
                                       if phase != "log"))
            i += 1

    gc.disable()
    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    gc.enable()
    await host.drain()
    return elapsed, sorted(spent_ms)


async def paced(host: Host, batch: list[ClientRequest], requests: int,
                rate: float) -> list[float]:
    """Open loop: request i starts at i / rate s, whether or not earlier ones are done."""
    loop = asyncio.get_running_loop()
    spent_ms: list[float] = []

    async def one(request: ClientRequest) -> None:
        response = await host.handle_request(request)
        spent_ms.append(1000 * sum(s for phase, s in response.plugin_s.items()
                                   if phase != "log"))

    tasks: list[asyncio.Task[None]] = []
    gc.disable()
    started = loop.time()
    while len(tasks) < requests:
        due = min(requests, int((loop.time() - started) * rate) + 1)
        while len(tasks) < due:
            tasks.append(loop.create_task(one(batch[len(tasks) % len(batch)])))
        await asyncio.sleep(max(0.0, started + len(tasks) / rate - loop.time()))
    await asyncio.gather(*tasks)
    gc.enable()
    await host.drain()
    return sorted(spent_ms)


async def measure(host: Host, path: str, batch: list[ClientRequest], redises: Redises,
                  args: argparse.Namespace) -> Pass:
    await saturate(host, batch, 500, args.concurrency)  # warm-up: connections, slot map
    gc.collect()
    await asyncio.to_thread(wait_for_quiet)
    pid = host.processes["credits"].pid
    assert pid is not None
    clock = CpuClock({"server": pid})
    redis_cpu, calls = redises.cpu_s(), redises.evalsha()
    clock.start()
    elapsed, spent = await saturate(host, batch, args.requests, args.concurrency)
    server_s = clock.stop()["server"]
    n = args.requests
    measured = Pass(path, n / elapsed, percentile(spent, 0.5), percentile(spent, 0.99),
                    server_s / n * 1e6, (redises.cpu_s() - redis_cpu) / n * 1e6,
                    (redises.evalsha() - calls) / n)
    await asyncio.to_thread(wait_for_quiet)
    clock.start()
    spent = await paced(host, batch, n // 2, args.paced_rate)
    measured.paced_server_us = clock.stop()["server"] / (n // 2) * 1e6
    measured.paced_p50_ms, measured.paced_p99_ms = percentile(spent, 0.5), percentile(spent, 0.99)
    return measured


def median(passes: list[Pass]) -> Pass:
    def mid(field: str) -> float:
        return statistics.median(getattr(p, field) for p in passes)

    return Pass(passes[0].path, mid("rate"), mid("p50_ms"), mid("p99_ms"), mid("server_us"),
                mid("redis_us"), mid("evalsha"), mid("paced_p50_ms"), mid("paced_p99_ms"),
                mid("paced_server_us"))


async def run(args: argparse.Namespace, single: EmbeddedRedis,
              cluster: LocalCluster) -> dict[str, list[Pass]]:
    names = wallet_names()
    for client in (redis.Redis.from_url(single.url), cluster.client()):
        for name in names:
            wallets.grant(client, name, 10**12)
        client.close()
    prefix = tempfile.mkdtemp(prefix="kcbench", dir="/tmp")  # unix socket paths are short
    servers = [replace(spec, start_cmd=f"{spec.start_cmd} --workers 1") if spec.start_cmd
               else spec for spec in credits_servers(prefix)]
    host = Host(kong_config({"single": single.url, "cluster": cluster.url}, names), servers,
                upstream=static_upstream())
    masters = cluster.masters()
    redises = {"single": Redises([single.port]), "cluster": Redises(masters),
               "cluster, one master": Redises(masters)}
    on_one = [name for name in names
              if cluster.owner(slot_of(WalletKeys(name).state)) == masters[0]]
    batches = {path: requests_for(ROUTES[path], on_one if "one" in path else names)
               for path in PATHS}
    runs: dict[str, list[Pass]] = {path: [] for path in PATHS}
    await host.start()
    try:
        for round_no in range(args.rounds):
            shift = round_no % len(PATHS)
            for path in PATHS[shift:] + PATHS[:shift]:
                measured = await measure(host, path, batches[path], redises[path], args)
                runs[path].append(measured)
                print(f"round {round_no + 1} {path:20} {measured.rate:6,.0f} req/s  p99 "
                      f"{measured.p99_ms:5.2f} ms  server {measured.server_us:5.1f} µs/req  "
                      f"redis {measured.redis_us:5.1f} µs/req  evalsha {measured.evalsha:.2f}  "
                      f"paced: p99 {measured.paced_p99_ms:5.2f} ms server "
                      f"{measured.paced_server_us:5.1f} µs/req", flush=True)
    finally:
        await host.stop()
    return runs


ECHO = Script("return 1")


async def lanes_alone(urls: dict[str, str], rounds: int, calls: int) -> dict[str, float]:
    """CPU µs of this process per EVALSHA through each client, 32 callers, keys of every
    shard: the cluster lane's own cost (slot, routing, a connection per master)."""
    keys = [WalletKeys(name).state for name in wallet_names()]
    spent: dict[str, list[float]] = {name: [] for name in urls}

    async def one(lane: Lane) -> float:
        for key in keys:  # connect, load the map and the script
            await lane.evalsha(ECHO, [key], ["x"])
        left = calls

        async def caller(i: int) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await lane.evalsha(ECHO, [keys[i % len(keys)]], ["x", "y", "z"])
                i += 1

        gc.collect()
        gc.disable()
        started = time.process_time()
        await asyncio.gather(*(caller(i) for i in range(32)))
        gc.enable()
        return (time.process_time() - started) / calls * 1e6

    for _ in range(rounds):
        for name, url in urls.items():
            lane = lane_from_url(url)
            spent[name].append(await one(lane))
            await lane.close()
    return {name: statistics.median(values) for name, values in spent.items()}


def ratio(runs: dict[str, list[Pass]], path: str, field: str) -> str:
    """The median over rounds of `path`'s `field` over the single node's, and each round's."""
    each = [getattr(c, field) / getattr(s, field)
            for s, c in zip(runs["single"], runs[path], strict=True)]
    return f"{statistics.median(each):.3f} ({', '.join(f'{r:.2f}' for r in each)})"


def table(args: argparse.Namespace, runs: dict[str, list[Pass]], lanes: dict[str, float],
          redis_info: dict[str, Any]) -> list[str]:
    lines = [
        f"Run: {time.strftime('%Y-%m-%d %H:%M')} UTC, `python load/bench_cluster.py "
        f"{' '.join(sys.argv[1:])}`: {args.rounds} rounds of {args.requests:,} admitted "
        f"requests per path at {args.concurrency} concurrent, medians over the rounds.",
        "",
        *describe_machine(redis_info),
        "",
        "| Redis | req/s | plugin ms p50 / p99 | plugin-server CPU µs/req | Redis CPU µs/req "
        f"| EVALSHA/req | at {args.paced_rate:,.0f} req/s: plugin ms p50 / p99, server µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in PATHS:
        p = median(runs[path])
        lines.append(f"| {LABELS[path]} | {p.rate:,.0f} | {p.p50_ms:.2f} / {p.p99_ms:.2f} | "
                     f"{p.server_us:.1f} | {p.redis_us:.1f} | {p.evalsha:.2f} | "
                     f"{p.paced_p50_ms:.2f} / {p.paced_p99_ms:.2f}, {p.paced_server_us:.1f} |")
    lines += [
        "",
        "Plugin-server CPU per request over the single node's, median (and per round):",
        "",
        *(f"- {LABELS[path]}: {ratio(runs, path, 'server_us')} at saturation, "
          f"{ratio(runs, path, 'paced_server_us')} at {args.paced_rate:,.0f} req/s"
          for path in PATHS[1:]),
        "",
        f"The clients alone (this process, 32 callers, {args.lane_calls:,} EVALSHA each, "
        f"median of {args.rounds} rounds): RedisLane {lanes['single']:.2f} µs of CPU per "
        f"call, ClusterLane over 3 masters {lanes['cluster']:.2f} µs.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per path and round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lane-calls", type=int, default=100_000,
                        help="calls per client and round of the clients-alone pass")
    parser.add_argument("--paced-rate", type=float, default=2_000,
                        help="req/s of the paced passes (half as many requests)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5,000; print only")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"markdown file to update (default {RESULTS.name} unless --quick)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds, args.lane_calls = 5_000, 2, 20_000
    output = args.output or (None if args.quick else RESULTS)
    cluster = LocalCluster(masters=3, replicas_per_master=0).start()
    try:
        with EmbeddedRedis() as single:
            info = redis.Redis.from_url(single.url).info("server")
            runs = uvloop.run(run(args, single, cluster))
            urls = {"single": single.url, "cluster": cluster.url}
            lanes = uvloop.run(lanes_alone(urls, args.rounds, args.lane_calls))
            lines = table(args, runs, lanes, info)
    finally:
        cluster.stop()
    print()
    print("\n".join(lines))
    if output is not None:
        write_section(output, "bench_cluster.py", lines)
        print(f"\nupdated {output}")


if __name__ == "__main__":
    main()
