"""What the credits plugin costs per request, measured through the Kong-protocol host.

Every scenario goes through the same `Host` (kong_credits.host: key-auth, routing, Kong's
phases and PDK), driven with `Host.handle_request` from 32 concurrent asyncio tasks and a static
upstream, so no HTTP is involved; the host starts the real plugin servers as Kong does:

    no-op, kong-pdk -g   stock `kong-python-pluginserver -g` serving load/plugins/stock (1 PDK
                         call): the baseline every other row is divided by, same run
    no-op, ours          `kong-credits pluginserver` serving load/plugins/ours (1 PDK call)
    credits ...          `kong-credits pluginserver` with the credits plugin and a real Redis

For each scenario and round: a warm-up, then a fixed number of requests at saturation
(requests/s, latency), then half as many paced at half that rate (latency at moderate load).
Added latency is the time the host spends in the plugin's phases (HostResponse.plugin_s, log
excluded: it runs after the response). The host's garbage collector is paused during a pass
(it is the test driver, not the product; the plugin servers keep theirs), and each pass waits
for the machine to be quiet first, since other processes on the box skew both numbers.
CPU comes from /proc for the host (this process) and the plugin servers and from INFO cpu
for Redis; Redis round trips from Redis itself (EVALSHA from INFO commandstats; every client
command, once per scenario, from MONITOR). Then a soak: --soak requests mixing admitted
requests and refusals while the plugin server's RSS is sampled.

    /work/venv/bin/python load/bench.py            # ~3 min; updates the table in load/RESULTS.md
    /work/venv/bin/python load/bench.py --quick    # ~30 s; prints only
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
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
import uvloop
from measure import (
    CpuClock,
    MonitorCount,
    RedisSnapshot,
    describe_machine,
    percentile,
    rss_mib,
    wait_for_quiet,
    write_section,
)

from kong_credits import wallets
from kong_credits.host import Host, credits_servers, kong_pdk_server, static_upstream
from kong_credits.host.context import ClientRequest, Headers
from kong_credits.host.runner import HostResponse
from kong_credits.host.supervisor import PluginServerSpec, resolve_command
from kong_credits.redis_server import EmbeddedRedis

LOAD = Path(__file__).resolve().parent
RESULTS = LOAD / "RESULTS.md"
PAYER, BROKE = "bench-payer", "bench-broke"  # wallets: funded, never funded


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    api_key: str
    server: str  # which plugin server serves it: "python" (kong-pdk), "ours" or "credits"
    expect: int  # the status every measured request must get


SCENARIOS = [
    Scenario("no-op, kong-pdk -g (baseline)", "/noop-stock", "payer", "python", 200),
    Scenario("no-op, ours", "/noop-ours", "payer", "ours", 200),
    Scenario("credits admitted", "/paid", "payer", "credits", 200),
    Scenario("credits refused 402", "/paid", "broke", "credits", 402),
    Scenario("credits refused 429", "/limited", "payer", "credits", 429),
    Scenario("credits shadow (would-be 402)", "/shadow", "broke", "credits", 200),
    Scenario("credits-metered (hold + settle)", "/metered", "payer", "credits", 200),
]
SOAK_MIX = ["/paid payer", "/paid broke", "/paid payer", "/limited payer", "/metered payer",
            "/shadow broke"]


def kong_config(redis_url: str) -> dict[str, Any]:
    """One route per scenario, key-auth on all of them (a payer needs a consumer)."""
    routes: list[dict[str, Any]] = []
    plugins: list[dict[str, Any]] = [{"name": "key-auth"}]

    def route(name: str, plugin: str, **config: Any) -> None:
        routes.append({"name": name, "paths": [f"/{name}"]})
        plugins.append({"name": plugin, "route": name, "config": config})

    credits = {"redis_url": redis_url}
    route("noop-stock", "noop_sync")
    route("noop-ours", "noop_async")
    route("paid", "credits", cost=1, **credits)
    route("limited", "credits", cost=1, rate_limit={"day": 1}, **credits)
    route("shadow", "credits", cost=1, mode="shadow", **credits)
    route("metered", "credits-metered", cost=10, cost_header="X-Units-Used", **credits)
    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080", "routes": routes}],
        "consumers": [
            {"username": "payer", "custom_id": PAYER, "keyauth_credentials": [{"key": "payer"}]},
            {"username": "broke", "custom_id": BROKE, "keyauth_credentials": [{"key": "broke"}]},
        ],
        "plugins": plugins,
    }


def plugin_servers(prefix: str) -> list[PluginServerSpec]:
    """Our servers run as one process (`--workers 1`): the host is one nginx worker, whose
    connections one process serves whatever --workers says, and the CPU and RSS read here are
    those of the pid the host started."""
    ours = (f"kong-credits pluginserver -p {prefix} --socket-name noop.socket "
            f"-d {LOAD / 'plugins/ours'} --workers 1")
    return [
        kong_pdk_server(LOAD / "plugins/stock", prefix, gevent=True),
        PluginServerSpec("ours", f"{prefix}/noop.socket", resolve_command(ours),
                         resolve_command(f"kong-credits pluginserver -d {LOAD / 'plugins/ours'} "
                                         "--dump-all-plugins")),
        *(replace(spec, start_cmd=f"{spec.start_cmd} --workers 1") if spec.start_cmd else spec
          for spec in credits_servers(prefix)),
    ]


def client_request(path: str, api_key: str) -> ClientRequest:
    """What Host.handle builds; made once and reused (the host never changes a request)."""
    return ClientRequest(method="GET", path=path, host="localhost", port=8000,
                         headers=Headers([("apikey", api_key), ("Host", "localhost:8000")]))


# -- one pass -----------------------------------------------------------------------------------


@dataclass
class Pass:
    """What one batch of requests saw."""

    requests: int = 0
    elapsed_s: float = 0.0
    plugin_ms: list[float] = field(default_factory=list)  # access (+rewrite/response) phases
    statuses: Counter[int] = field(default_factory=Counter)
    pdk: Counter[str] = field(default_factory=Counter)  # phase -> calls, all requests
    responses: list[HostResponse] = field(default_factory=list)

    def record(self, response: HostResponse) -> None:
        self.statuses[response.status] += 1
        spent = sum(s for phase, s in response.plugin_s.items() if phase != "log")
        self.plugin_ms.append(spent * 1000)
        self.responses.append(response)

    def finish(self) -> None:
        """After host.drain(): count PDK calls (the log phase ran meanwhile), drop responses."""
        for response in self.responses:
            self.pdk.update(response.pdk_calls)
        self.responses.clear()
        self.plugin_ms.sort()

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed_s


Send = Callable[[], Awaitable[HostResponse]]


async def saturate(host: Host, send: Send, requests: int, concurrency: int) -> Pass:
    """`concurrency` tasks send back to back until `requests` were sent."""
    result = Pass(requests=requests)
    left = requests
    gc.disable()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            result.record(await send())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    await host.drain()
    result.finish()
    gc.enable()
    return result


async def paced(host: Host, send: Send, requests: int, rate: float) -> Pass:
    """Open loop: request i starts at i / rate seconds, whether or not earlier ones are done."""
    result = Pass(requests=requests)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    gc.disable()

    async def one() -> None:
        result.record(await send())

    started = loop.time()
    while len(tasks) < requests:
        due = min(requests, int((loop.time() - started) * rate) + 1)
        while len(tasks) < due:
            tasks.append(loop.create_task(one()))
        await asyncio.sleep(max(0.0, started + len(tasks) / rate - loop.time()))
    await asyncio.gather(*tasks)
    result.elapsed_s = loop.time() - started
    await host.drain()
    result.finish()
    gc.enable()
    return result


# -- a scenario, measured -----------------------------------------------------------------------


@dataclass
class Measured:
    scenario: Scenario
    rate: float
    saturated: Pass
    moderate: Pass
    cpu_us: dict[str, float]  # per request: host, plugin server, redis, other
    evalsha: float  # per request, from INFO commandstats
    script_commands: float  # commands the scripts ran inside, per request (commandstats)
    new_connections: int
    ratio: float = 0.0


class Bench:
    def __init__(self, host: Host, admin: redis.Redis, redis_url: str, concurrency: int) -> None:
        self.host = host
        self.admin = admin
        self.redis_url = redis_url
        self.concurrency = concurrency
        self.round_trips: dict[str, tuple[float, Counter[str]]] = {}

    def sender(self, scenario: Scenario) -> Send:
        request = client_request(scenario.path, scenario.api_key)
        return lambda: self.host.handle_request(request)

    async def measure(self, scenario: Scenario, requests: int) -> Measured:
        send = self.sender(scenario)
        await saturate(self.host, send, min(500, requests), self.concurrency)  # warm-up
        if scenario.name not in self.round_trips:
            self.round_trips[scenario.name] = await self.count_round_trips(send)
        server_pid = self.host.processes[scenario.server].pid
        assert server_pid is not None
        clock = CpuClock({"host": os.getpid(), "server": server_pid}, self.admin)
        gc.collect()
        await asyncio.to_thread(wait_for_quiet)
        before = RedisSnapshot.take(self.admin)
        clock.start()
        saturated = await saturate(self.host, send, requests, self.concurrency)
        cpu = clock.stop()
        after = RedisSnapshot.take(self.admin)
        gc.collect()
        await asyncio.to_thread(wait_for_quiet)
        moderate = await paced(self.host, send, requests // 2, saturated.rate / 2)
        for seen in (saturated, moderate):
            wrong = {s: n for s, n in seen.statuses.items() if s != scenario.expect}
            if wrong:
                raise RuntimeError(f"{scenario.name}: expected {scenario.expect}, got {wrong}")
        calls = before.delta(after)
        scripts = calls["evalsha"] + calls["eval"]
        return Measured(
            scenario=scenario, rate=saturated.rate, saturated=saturated, moderate=moderate,
            cpu_us={k: v / requests * 1e6 for k, v in cpu.items()},
            evalsha=calls["evalsha"] / requests,
            script_commands=(sum(calls.values()) - scripts) / requests,
            new_connections=after.connections_received - before.connections_received,
        )

    async def count_round_trips(self, send: Send, requests: int = 200) -> tuple[float, Counter]:
        """Client commands per request, from Redis's MONITOR (scripts' own calls left out)."""
        monitor = MonitorCount(self.redis_url)
        await asyncio.to_thread(monitor.__enter__)
        try:
            await saturate(self.host, send, requests, 8)
        finally:
            await asyncio.to_thread(monitor.__exit__, None, None, None)
        return monitor.total / requests, monitor.commands

    async def soak(self, requests: int, sample_s: float = 0.5) -> list[tuple[int, float]]:
        """Mixed traffic; (requests done, RSS MiB of the credits server) every sample_s."""
        pid = self.host.processes["credits"].pid
        assert pid is not None
        mix = [client_request(*entry.split()) for entry in SOAK_MIX]
        done = 0
        samples = [(0, rss_mib(pid))]

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while done < requests:
                done += 1
                await self.host.handle_request(mix[i % len(mix)])
                i += 1

        async def sampler() -> None:
            while True:
                await asyncio.sleep(sample_s)
                samples.append((done, rss_mib(pid)))

        sampling = asyncio.get_running_loop().create_task(sampler())
        await asyncio.gather(*(worker(i) for i in range(self.concurrency)))
        await self.host.drain()
        sampling.cancel()
        samples.append((done, rss_mib(pid)))
        return samples


# -- reporting ----------------------------------------------------------------------------------


def median_run(runs: Sequence[Measured]) -> Measured:
    """The round with the median throughput (its latencies and CPU go with it)."""
    ordered = sorted(runs, key=lambda m: m.rate)
    chosen = ordered[len(ordered) // 2]
    chosen.ratio = statistics.median(m.ratio for m in runs)
    return chosen


def _ms(values: Sequence[float]) -> str:
    return f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f}"


def table(results: list[Measured], round_trips: dict[str, tuple[float, Counter]]) -> list[str]:
    lines = [
        "| scenario | req/s | x baseline | plugin ms p50 / p99, saturated | "
        "p50 / p99 at half load | PDK calls access + log | Redis round trips (EVALSHA) | "
        "commands run inside scripts | CPU µs/req host / plugin server / Redis | "
        "other CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in results:
        n = m.saturated.requests
        pdk = f"{m.saturated.pdk['access'] / n:.2f} + {m.saturated.pdk['log'] / n:.2f}"
        trips = round_trips[m.scenario.name][0]
        cpu = m.cpu_us
        lines.append(
            f"| {m.scenario.name} | {m.rate:,.0f} | {m.ratio:.2f} | {_ms(m.saturated.plugin_ms)} "
            f"| {_ms(m.moderate.plugin_ms)} | {pdk} | {trips:.2f} ({m.evalsha:.2f}) | "
            f"{m.script_commands:.1f} | "
            f"{cpu['host']:.0f} / {cpu['server']:.0f} / {cpu['redis']:.0f} | {cpu['other']:.0f} |"
        )
    return lines


def soak_lines(samples: list[tuple[int, float]]) -> list[str]:
    total = samples[-1][0]
    warm = next((mib for done, mib in samples if done >= total * 0.1), samples[0][1])
    half = next((mib for done, mib in samples if done >= total * 0.5), samples[-1][1])
    peak = max(mib for _, mib in samples)
    return [
        f"Soak: {total:,} requests ({', '.join(SOAK_MIX)} in turn), credits plugin server RSS "
        f"sampled every 0.5 s: start {samples[0][1]:.1f} MiB, after 10% {warm:.1f}, "
        f"after 50% {half:.1f}, end {samples[-1][1]:.1f}, peak {peak:.1f} MiB "
        f"(growth after warm-up: {samples[-1][1] - warm:+.1f} MiB).",
    ]


def progress(m: Measured) -> str:
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in m.cpu_us.items())
    return (f"{m.scenario.name:32} {m.rate:8,.0f} req/s x{m.ratio:.2f}  plugin ms p99 "
            f"{percentile(m.saturated.plugin_ms, .99):.2f} (half load "
            f"{percentile(m.moderate.plugin_ms, .99):.2f})  CPU us/req {cpu}")


def print_table(lines: list[str]) -> None:
    for line in lines:
        print(line, flush=True)


# -- main ---------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, redis_url: str, redis_info: dict[str, Any]) -> list[str]:
    admin = redis.Redis.from_url(redis_url)
    wallets.grant(admin, PAYER, 10**12)
    prefix = tempfile.mkdtemp(prefix="kcbench", dir="/tmp")  # unix socket paths are short
    host = Host(kong_config(redis_url), plugin_servers(prefix),
                upstream=static_upstream(headers={"X-Units-Used": "3"}))
    scenarios = [s for s in SCENARIOS if not args.only or any(o in s.name for o in args.only)]
    if SCENARIOS[0] not in scenarios:
        scenarios.insert(0, SCENARIOS[0])
    await host.start()
    try:
        bench = Bench(host, admin, redis_url, args.concurrency)
        runs: dict[str, list[Measured]] = {s.name: [] for s in scenarios}
        for round_no in range(1, args.rounds + 1):
            baseline = None
            for scenario in scenarios:
                measured = await bench.measure(scenario, args.requests)
                baseline = baseline or measured.rate
                measured.ratio = measured.rate / baseline
                runs[scenario.name].append(measured)
                print(f"round {round_no}: {progress(measured)}", flush=True)
        results = [median_run(runs[s.name]) for s in scenarios]
        lines = table(results, bench.round_trips)
        if args.soak:
            lines += ["", *soak_lines(await bench.soak(args.soak))]
    finally:
        await host.stop()
        admin.close()
        shutil.rmtree(prefix, ignore_errors=True)
    commands = {name: dict(c) for name, (_, c) in bench.round_trips.items()}
    header = [
        f"Run: {time.strftime('%Y-%m-%d %H:%M')} UTC, `python load/bench.py "
        f"{' '.join(sys.argv[1:])}`: {args.rounds} round(s) of {args.requests:,} requests per "
        f"scenario at {args.concurrency} concurrent, then {args.requests // 2:,} paced at half "
        "the measured rate. req/s, latencies and CPU are those of the round with the median "
        "throughput; x baseline is the median of the per-round ratios (baseline: the first "
        "row, measured in the same round).",
        "",
        *describe_machine(redis_info),
        "",
    ]
    footer = ["", f"Client commands Redis saw per scenario (MONITOR, 200 requests): {commands}"]
    return header + lines + footer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=15_000, help="per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--soak", type=int, default=None,
                        help="soak requests (default 200,000; --quick 20,000); 0 skips")
    parser.add_argument("--only", action="append", help="scenarios whose name contains this")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 3,000, soak 20,000; print only")
    parser.add_argument("--redis-url", help="default: a throwaway redis-server")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"markdown file to update (default {RESULTS.name} unless --quick)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 3_000, 1
    if args.soak is None:
        args.soak = 20_000 if args.quick else 200_000
    output = args.output or (None if args.quick or args.only else RESULTS)
    with EmbeddedRedis() if not args.redis_url else _External(args.redis_url) as server:
        url = server.url
        info = redis.Redis.from_url(url).info("server")
        lines = uvloop.run(run(args, url, info))
    print()
    print_table(lines)
    if output is not None:
        write_section(output, "bench.py", lines)
        print(f"\nupdated {output}")


class _External:
    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> _External:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


if __name__ == "__main__":
    main()
