"""Events per second through a plugin server: ours (asyncio) against stock kong-pdk.

Each of --connections connections plays one Kong worker connection in a loop, answering
PDK calls with canned values (no routing, no key-auth, no upstream: the cheapest Kong-side
driver there is, so the servers' own cost shows):
- no-op: HandleEvent(access) -> the plugin's one PDK call -> Step -> "ret". Two RPC round
  trips per event. Both servers get the same no-op plugin as in bench.py (load/plugins:
  async for ours, sync kong-pdk style for stock) and the same client.
- credits (ours, real Redis): HandleEvent(access) -> get_consumer -> get_var -> set_headers
  -> "ret", then HandleEvent(log) -> "ret": the 5 RPCs of an admitted request.
The last line is credits against the stock no-op, measured in the same run.

    /work/venv/bin/python load/bench_pluginserver.py --seconds 5 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import redis
import uvloop

from kong_credits import wallets
from kong_credits.redis_server import EmbeddedRedis

PLUGINS = Path(__file__).resolve().parent / "plugins"  # the no-ops bench.py serves too


def noop(name: str) -> dict:
    return {"name": name, "phases": ["access"], "answers": {"kong.request.get_method": "GET"}}


CREDITS = {"name": "credits", "phases": ["access", "log"],
           "answers": {"kong.client.get_consumer": {"id": "c-1", "username": "payer",
                                                    "custom_id": "payer"},
                       "kong.nginx.get_var": "GET /paid HTTP/1.1",
                       "kong.response.set_headers": None}}


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


async def drive(path: str, pid: int, args: argparse.Namespace, plugin: dict,
                config: dict) -> dict:
    ids = iter(range(1, 1 << 62))
    conns = []
    for _ in range(args.connections):
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
                    data = plugin["answers"][answer["Data"]["Method"]]
                    step = {"EventId": answer["EventId"]}
                    if data is not None:
                        step["Data"] = data
                    answer = await conn.call("plugin.Step", step)
                    rpcs += 1
            if measuring:
                latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(worker(c)) for c in conns]
    await asyncio.sleep(args.warmup)
    measuring = True
    t0, cpu0, rpcs0 = time.perf_counter(), cpu_seconds(pid), rpcs
    driver0 = time.process_time()
    await asyncio.sleep(args.seconds)
    measuring = False
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    driver, rpcs_measured = time.process_time() - driver0, rpcs - rpcs0
    stop = True
    await asyncio.gather(*tasks)
    for conn in conns:
        conn.writer.close()
    latencies.sort()
    n = len(latencies)
    return {
        "events": n,
        "events_per_s": round(n / elapsed),
        "rpc_per_event": round(rpcs_measured / n, 2),
        "p50_ms": round(latencies[n // 2] * 1000, 3),
        "p99_ms": round(latencies[int(n * 0.99)] * 1000, 3),
        "server_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "server_cpu_share": round(cpu / elapsed, 2),
        "driver_cpu_us_per_event": round(driver / n * 1e6, 1),
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
          plugin: dict, config: dict | None = None) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_socket(path, proc)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(drive(path, proc.pid, args, plugin, config or {}))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"server": name, **result}


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
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench", dir="/tmp")
    try:
        runs = [(
            "kong-credits pluginserver (asyncio+uvloop)",
            [sys.executable, "-m", "kong_credits.pluginserver", "-p", tmp,
             "--socket-name", "ours.socket", "-d", str(PLUGINS / "ours")],
            os.path.join(tmp, "ours.socket"), noop("noop_async"),
        )]
        if args.stock_mode != "none":
            stock = shutil.which("kong-python-pluginserver") or str(
                Path(sys.executable).with_name("kong-python-pluginserver")
            )
            flags = ["-g"] if args.stock_mode == "gevent" else []
            runs.append((
                f"kong-pdk 0.36 kong-python-pluginserver {' '.join(flags) or '(threads)'}",
                [stock, *flags, "-d", str(PLUGINS / "stock"), "-p", tmp,
                 "--socket-name", "stock.sock"],
                os.path.join(tmp, "stock.sock"), noop("noop_sync"),
            ))
        print(
            f"{args.connections} connections, {args.seconds}s after {args.warmup}s warmup, "
            f"{os.cpu_count()} CPUs; one event = HandleEvent + 1 Step",
            flush=True,
        )
        results = [bench(name, cmd, path, args, plugin) for name, cmd, path, plugin in runs]
        with EmbeddedRedis() as server:
            wallets.grant(redis.Redis.from_url(server.url), "payer", 10**12)
            results.append(bench(
                "kong-credits pluginserver, credits admitted (5 RPCs + 1 Redis call)",
                [sys.executable, "-m", "kong_credits.pluginserver", "-p", tmp,
                 "--socket-name", "credits.socket"],
                os.path.join(tmp, "credits.socket"), args, CREDITS,
                {"cost": 1, "redis_url": server.url}))
        for result in results:
            print(json.dumps(result))
        baseline = results[-2]["events_per_s"] if args.stock_mode != "none" else None
        if baseline:
            print(f"credits admitted / stock no-op: {results[-1]['events_per_s'] / baseline:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
