"""Events per second through a plugin server: ours (asyncio) against stock kong-pdk.

Each of --connections connections plays one Kong worker connection in a loop, answering
PDK calls with canned values (no routing, no key-auth, no upstream: the cheapest Kong-side
driver there is, so the servers' own cost shows):
- no-op: HandleEvent(access) -> the plugin's one PDK call -> Step -> "ret". Two RPC round
  trips per event. Both servers get the same no-op plugin as in bench.py (load/plugins:
  async for ours, sync kong-pdk style for stock) and the same client.
- credits admitted (ours, real Redis): HandleEvent(access) -> get_consumer -> Step ->
  set_headers -> Step -> "ret": the 3 RPCs of an admitted request (no log phase).
- credits refused 402 / 429 (--refusals): HandleEvent -> get_consumer -> Step ->
  kong.response.exit, after which Kong sends nothing more for the event: 2 RPCs.
The connections are shared by --drivers processes, each one nginx worker (its own pid,
msgid counter and instance). Ours runs once per --workers value (`pluginserver --workers
N`) and per --tree (a source tree's `plugins` directory put first on PYTHONPATH, to A/B a
change); server CPU counts all its processes. Every round runs every pass, the stock no-op
included, in ABBA order (every other round reversed); the summary gives, per scenario, the
median of the per-round ratios against the stock no-op (server CPU per event and events/s)
and against the first variant of ours.

    python load/bench_pluginserver.py --rounds 5 --refusals     # the issue-12 figures
    python load/bench_pluginserver.py --tree /tmp/a --tree /tmp/b --rounds 6 --only-credits
    python load/bench_pluginserver.py --workers 1,2 --drivers 2 --rounds 3 --only-credits
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import redis
import uvloop
from measure import machine_busy_s, wait_for_quiet

from kong_credits import wallets
from kong_credits.redis_server import EmbeddedRedis

PLUGINS = Path(__file__).resolve().parent / "plugins"  # the no-ops bench.py serves too


def noop(name: str) -> dict:
    return {"name": name, "phases": ["access"], "answers": {"kong.request.get_method": "GET"}}


def credits(consumer: str) -> dict:
    return {"name": "credits", "phases": ["access"],
            "answers": {"kong.client.get_consumer": {"id": f"c-{consumer}", "username": consumer,
                                                     "custom_id": consumer},
                        "kong.nginx.get_var": "GET /paid HTTP/1.1",  # with record_request
                        "kong.response.set_headers": None}}


TERMINAL = ("kong.response.exit", "kong.response.error")  # Kong sends no Step after these


class Connection:
    """Kong's side of one connection, with msgids from a shared counter."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ids) -> None:
        self.reader, self.writer, self.ids = reader, writer, ids
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    async def call(self, method: str, arg):
        msgid = next(self.ids)
        self.writer.write(msgpack.packb([0, msgid, method, [arg]], use_bin_type=True))
        while True:
            for _, got, error, result in self.unpacker:
                if got != msgid or error is not None:
                    raise RuntimeError(f"bad answer to {method}: {got} {error!r}")
                return result
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.unpacker.feed(data)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a server and its child processes (`--workers N` forks them)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(child)) for child in children)


def driver_process(path: str, connections: int, args: argparse.Namespace, plugin: dict,
                   config: dict, barrier: Any, results: Any) -> None:
    """One nginx worker: its share of the connections, in a process of its own."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results.put(runner.run(drive(path, connections, args, plugin, config, barrier)))


async def drive(path: str, connections: int, args: argparse.Namespace, plugin: dict,
                config: dict, barrier: Any) -> dict:
    """Load from warm-up to the end of the window that starts when `barrier` lets all the
    drivers and the measuring parent through; counts of that window."""
    ids = iter(range(1, 1 << 62))
    conns = []
    for _ in range(connections):
        reader, writer = await asyncio.open_unix_connection(path)
        conns.append(Connection(reader, writer, ids))
    started = await conns[0].call("plugin.StartInstance",
                                  {"Name": plugin["name"], "Config": json.dumps(config)})
    instance_id = started["Id"]
    measuring = False
    stop = False
    latencies: list[float] = []
    rpcs = 0

    async def worker(conn: Connection) -> None:
        nonlocal rpcs
        while not stop:
            t0 = time.perf_counter()
            for phase in plugin["phases"]:
                answer = await conn.call("plugin.HandleEvent",
                                         {"InstanceId": instance_id, "EventName": phase})
                rpcs += 1
                while answer["Data"] != "ret":
                    method = answer["Data"]["Method"]
                    if method in TERMINAL:
                        break
                    data = plugin["answers"][method]
                    step = {"EventId": answer["EventId"]}
                    if data is not None:
                        step["Data"] = data
                    answer = await conn.call("plugin.Step", step)
                    rpcs += 1
            if measuring:
                latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(worker(c)) for c in conns]
    await asyncio.sleep(args.warmup)
    await asyncio.to_thread(barrier.wait)
    measuring = True
    t0, rpcs0, driver0 = time.perf_counter(), rpcs, time.process_time()
    await asyncio.sleep(args.seconds)
    measuring = False
    elapsed = time.perf_counter() - t0
    driver, rpcs_measured = time.process_time() - driver0, rpcs - rpcs0
    stop = True
    await asyncio.gather(*tasks)
    for conn in conns:
        conn.writer.close()
    return {"latencies": latencies, "rpcs": rpcs_measured, "elapsed": elapsed,
            "driver_cpu": driver}


def redis_cpu_seconds(admin: redis.Redis | None) -> float:
    if admin is None:
        return 0.0
    info = admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(path: str, pid: int, args: argparse.Namespace, plugin: dict,
            config: dict) -> dict:
    """Run --drivers driver processes against the server at `path` (pid `pid`); merge.

    CPU per event: the server (all its processes), the drivers, Redis (INFO cpu) and
    `other`: what the machine spent beyond those (other sessions' processes: noise).
    """
    admin = redis.Redis.from_url(config["redis_url"]) if "redis_url" in config else None
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(args.drivers + 1), spawn.Queue()
    shares = [args.connections // args.drivers + (i < args.connections % args.drivers)
              for i in range(args.drivers)]
    procs = [spawn.Process(target=driver_process,
                           args=(path, share, args, plugin, config, barrier, results))
             for share in shares]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=60)
    t0, cpu0, redis0, busy0 = (time.perf_counter(), tree_cpu_seconds(pid),
                               redis_cpu_seconds(admin), machine_busy_s())
    time.sleep(args.seconds)
    elapsed, cpu = time.perf_counter() - t0, tree_cpu_seconds(pid) - cpu0
    redis_cpu, busy = redis_cpu_seconds(admin) - redis0, machine_busy_s() - busy0
    parts = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(10)
    latencies = sorted(x for part in parts for x in part["latencies"])
    n = len(latencies)
    drivers = sum(p["driver_cpu"] for p in parts)
    return {
        "events": n,
        "events_per_s": round(sum(len(p["latencies"]) / p["elapsed"] for p in parts)),
        "rpc_per_event": round(sum(p["rpcs"] for p in parts) / n, 2),
        "p50_ms": round(latencies[n // 2] * 1000, 3),
        "p99_ms": round(latencies[int(n * 0.99)] * 1000, 3),
        "server_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "server_cpu_share": round(cpu / elapsed, 2),
        "driver_cpu_us_per_event": round(drivers / n * 1e6, 1),
        "redis_cpu_us_per_event": round(redis_cpu / n * 1e6, 1),
        "other_cpu_share": round(max(0.0, busy - cpu - drivers - redis_cpu) / elapsed, 2),
    }


def wait_for_socket(path: str, proc: subprocess.Popen, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(path)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.05)
    raise RuntimeError(f"no socket at {path}")


def bench(name: str, cmd: list[str], path: str, args: argparse.Namespace,
          plugin: dict, config: dict | None = None, tree: str | None = None) -> dict:
    wait_for_quiet()
    env = None
    if tree:  # that tree's plugins first: `import kong_credits` finds its copy
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(tree) / "plugins"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for_socket(path, proc)
        result = measure(path, proc.pid, args, plugin, config or {})
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"server": name, **result}


def ours(tmp: str, socket_name: str, workers: int, *plugins: str) -> list[str]:
    return [sys.executable, "-m", "kong_credits.pluginserver", "-p", tmp,
            "--socket-name", socket_name, "--workers", str(workers), *plugins]


@dataclass(frozen=True)
class Pass:
    scenario: str
    variant: str  # "stock", or ours: "--workers N" and the tree's name
    cmd: list[str]
    socket: str
    plugin: dict
    config: dict | None = None
    tree: str | None = None


def passes(args: argparse.Namespace, tmp: str, redis_url: str) -> list[Pass]:
    """One round's passes, in order: the stock no-op, then per variant of ours its no-op and
    the credits scenarios."""
    out = []
    if args.stock_mode != "none":
        stock = shutil.which("kong-python-pluginserver") or str(
            Path(sys.executable).with_name("kong-python-pluginserver"))
        flags = ["-g"] if args.stock_mode == "gevent" else []
        out.append(Pass("no-op", f"kong-pdk {' '.join(flags) or '(threads)'}",
                        [stock, *flags, "-d", str(PLUGINS / "stock"), "-p", tmp,
                         "--socket-name", "stock.sock"],
                        os.path.join(tmp, "stock.sock"), noop("noop_sync")))
    trees = args.tree or [None]
    for n in (int(w) for w in args.workers.split(",")):
        for tree in trees:
            variant = f"ours --workers {n}" + (f" {Path(tree).name}" if tree else "")
            if not args.only_credits:
                out.append(Pass("no-op", variant,
                                ours(tmp, "ours.socket", n, "-d", str(PLUGINS / "ours")),
                                os.path.join(tmp, "ours.socket"), noop("noop_async"),
                                tree=tree))
            scenarios = [("credits admitted", "payer", {})]
            if args.refusals:
                scenarios += [("credits refused 402", "broke", {}),
                              ("credits refused 429", "payer", {"rate_limit": {"day": 1}})]
            for scenario, consumer, extra in scenarios:
                out.append(Pass(scenario, variant, ours(tmp, "credits.socket", n),
                                os.path.join(tmp, "credits.socket"), credits(consumer),
                                {"cost": 1, "redis_url": redis_url, **extra}, tree))
    return out


def summary(results: dict[tuple[str, str], list[dict]]) -> list[str]:
    """Medians per pass, then per-round ratios against the stock no-op and the first
    variant of ours (each ratio from passes of the same round)."""
    lines = ["| scenario | server | events/s | server CPU µs/event | driver CPU µs/event | "
             "Redis CPU µs/event | p50 / p99 ms | server CPU share |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (scenario, variant), runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in (
            "events_per_s", "server_cpu_us_per_event", "driver_cpu_us_per_event",
            "redis_cpu_us_per_event", "p50_ms", "p99_ms", "server_cpu_share")}
        lines.append(
            f"| {scenario} | {variant} | {med['events_per_s']:,.0f} | "
            f"{med['server_cpu_us_per_event']:.1f} | {med['driver_cpu_us_per_event']:.1f} | "
            f"{med['redis_cpu_us_per_event']:.1f} | {med['p50_ms']:.2f} / {med['p99_ms']:.2f} | "
            f"{med['server_cpu_share']:.2f} |")
    lines.append("")

    def ratios(a: list[dict], b: list[dict], key: str) -> str:
        per_round = [x[key] / y[key] for x, y in zip(a, b, strict=True)]
        return (f"{statistics.median(per_round):.2f}x (per round "
                f"{', '.join(f'{r:.2f}' for r in per_round)})")

    stock = next((runs for (s, v), runs in results.items() if v.startswith("kong-pdk")), None)
    first = next((v for (s, v) in results if not v.startswith("kong-pdk")), None)
    for (scenario, variant), runs in results.items():
        if variant.startswith("kong-pdk"):
            continue
        if stock:
            lines.append(f"- {scenario}, {variant} / stock no-op: server CPU per event "
                         f"{ratios(runs, stock, 'server_cpu_us_per_event')}; events/s "
                         f"{ratios(runs, stock, 'events_per_s')}")
        if variant != first and (scenario, first) in results:
            base = results[(scenario, first)]
            lines.append(f"- {scenario}, {variant} / {first}: server CPU per event "
                         f"{ratios(runs, base, 'server_cpu_us_per_event')}; events/s "
                         f"{ratios(runs, base, 'events_per_s')}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--stock-mode",
        choices=["gevent", "threads", "none"],
        default="gevent",
        help="kong-python-pluginserver mode to compare with (none: skip it)",
    )
    parser.add_argument("--workers", default="1",
                        help="comma-separated `pluginserver --workers` values to run ours with")
    parser.add_argument("--tree", action="append",
                        help="run ours from this source tree (its plugins/ first on "
                             "PYTHONPATH); repeat to A/B trees")
    parser.add_argument("--drivers", type=int, default=1,
                        help="driver processes (nginx workers) sharing the connections")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of every pass, interleaved (ABBA)")
    parser.add_argument("--only-credits", action="store_true", help="skip the no-ops of ours")
    parser.add_argument("--refusals", action="store_true",
                        help="also credits refused 402 and 429 (2 RPCs: the exit ends it)")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench", dir="/tmp")
    try:
        print(
            f"{args.connections} connections from {args.drivers} driver process(es), "
            f"{args.seconds}s after {args.warmup}s warmup, {os.cpu_count()} CPUs, "
            f"{args.rounds} round(s)",
            flush=True,
        )
        results: dict[tuple[str, str], list[dict]] = {}
        with EmbeddedRedis() as server:
            admin = redis.Redis.from_url(server.url)
            wallets.grant(admin, "payer", 10**12)
            round_passes = passes(args, tmp, server.url)
            for p in round_passes:
                results[(p.scenario, p.variant)] = []
            for round_ in range(args.rounds):
                # Every other round in reverse (ABBA): drift over the run (Redis's streams
                # grow with every request) does not favour whichever runs first.
                for p in round_passes if round_ % 2 == 0 else round_passes[::-1]:
                    result = bench(f"{p.variant}, {p.scenario}", p.cmd, p.socket, args,
                                   p.plugin, p.config, p.tree)
                    results[(p.scenario, p.variant)].append(result)
                    print(f"round {round_ + 1}: {json.dumps(result)}", flush=True)
        print()
        for line in summary(results):
            print(line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
