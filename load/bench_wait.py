"""What `redis_wait_replicas: 1` costs, and what a failover loses without it.

A master and one replica on loopback (redis-servers started here). Authorize calls go through
RedisLane, the plugin's client, as the plugin sends them: EVALSHA alone (off), or EVALSHA then
`WAIT 1 <timeout>` in the same write (on).

- latency: one caller at a time (p50, p99 of a call) and 64 concurrent callers (calls/s,
  p50, p99), off and on;
- failover: 64 callers for a moment, then the master is SIGKILLed mid-traffic and the
  replica promoted; an admitted call whose event is missing on the promoted replica was
  lost (charged, answered 200, gone). Twice: with the replica in sync, and with the link to
  it cut 0.3 s before the crash (a TCP proxy between them stops forwarding, then drops what
  it held: a network partition, or a replica that lags). Repeated --rounds times, off and on.

    /work/main/.venv/bin/python load/bench_wait.py
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import uvloop
from measure import percentile

from kong_credits import wallets
from kong_credits.engine import AUTHORIZE, AuthorizeRequest, authorize_call
from kong_credits.keys import event_streams
from kong_credits.redis_lane import RedisLane
from kong_credits.redis_server import _free_port, find_redis_server

WALLETS = 1000
WAIT_TIMEOUT_MS = 50


class Link:
    """A TCP proxy for the replication link, in a process of its own (its threads would
    otherwise share the benchmark's GIL): forwards until `cut`, then holds what it reads;
    `drop` kills it, losing that: what a partitioned master sent and nobody received."""

    def __init__(self, target_port: int) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen([sys.executable, __file__, "--proxy", str(self.port),
                                         str(target_port)])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def cut(self) -> None:
        self.process.send_signal(signal.SIGUSR1)

    def drop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    @staticmethod
    def serve(port: int, target_port: int) -> None:
        """The proxy process: SIGUSR1 stops forwarding."""
        forwarding = threading.Event()
        forwarding.set()
        signal.signal(signal.SIGUSR1, lambda *_: forwarding.clear())

        def pump(source: socket.socket, sink: socket.socket) -> None:
            while data := source.recv(65536):
                if forwarding.is_set():
                    sink.sendall(data)

        listener = socket.create_server(("127.0.0.1", port))
        while True:
            client, _ = listener.accept()
            try:
                upstream = socket.create_connection(("127.0.0.1", target_port))
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):  # as Redis's own sockets: no Nagle delay
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()


class Pair:
    """A master and a replica of it, each a redis-server on loopback; with `proxied` the
    replica follows the master through a `Link` (only the failovers: the proxy's threads
    would slow the replication the latency figures measure)."""

    def __init__(self, workdir: Path, *, proxied: bool = False) -> None:
        self.ports = _free_port(), _free_port()
        master = self._start(workdir, self.ports[0], "--repl-diskless-sync-delay", "0")
        self.link = Link(self.ports[0]) if proxied else None
        self.processes = [master, self._start(workdir, self.ports[1], "--replicaof", "127.0.0.1",
                                              str(self.link.port if self.link else self.ports[0]))]
        self.master = redis.Redis(port=self.ports[0], decode_responses=True)
        self.replica = redis.Redis(port=self.ports[1], decode_responses=True)
        deadline = time.monotonic() + 30
        while self.replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not link")
            time.sleep(0.05)

    @staticmethod
    def _start(workdir: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
        directory = workdir / str(port)
        directory.mkdir()
        process = subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def stop(self) -> None:
        if self.link:
            self.link.drop()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=10)


class Calls:
    """Authorize calls over WALLETS funded wallets, each with a fresh request id."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._ids = itertools.count()

    def next(self) -> tuple[str, list[str], list[str | int]]:
        n = next(self._ids)
        request_id = f"{self.prefix}{n:012d}"
        keys, args = authorize_call(AuthorizeRequest(
            request_id, f"w{n % WALLETS}", "bench", 1, route="r", service="s"))
        return request_id, keys, args


def fund(client: redis.Redis) -> None:
    for i in range(WALLETS):
        wallets.grant(client, f"w{i}", 10**12, grant_id="g")


async def call(lane: RedisLane, wait: bool, keys: list[str], args: list[str | int]
               ) -> tuple[bool, int]:
    """(admitted, replicas that acknowledged: -1 when not asked)."""
    if wait:
        reply, acked = await lane.evalsha_then_wait(AUTHORIZE, keys, args, replicas=1,
                                                    timeout_ms=WAIT_TIMEOUT_MS)
    else:
        reply, acked = await lane.evalsha(AUTHORIZE, keys, args), -1
    return reply[0] == 200, acked


@dataclass
class Latency:
    seconds: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def row(self) -> str:
        us = sorted(s * 1e6 for s in self.seconds)
        return (f"{len(us) / self.elapsed_s:,.0f} | {percentile(us, 0.5):,.0f} | "
                f"{percentile(us, 0.99):,.0f}")


async def latency(url: str, wait: bool, calls: Calls, n: int, callers: int) -> Latency:
    lane = RedisLane.from_url(url, timeout_s=1.0)
    await call(lane, wait, *calls.next()[1:])  # connect, load the script
    out = Latency()
    left = iter(range(n))

    async def caller() -> None:
        for _ in left:
            _, keys, args = calls.next()
            started = time.perf_counter()
            admitted, acked = await call(lane, wait, keys, args)
            out.seconds.append(time.perf_counter() - started)
            if not admitted or (wait and acked != 1):
                raise RuntimeError(f"not admitted or not acknowledged ({acked})")

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    out.elapsed_s = time.perf_counter() - started
    await lane.close()
    return out


@dataclass
class Failover:
    admitted: int = 0
    unconfirmed: int = 0
    lost: int = 0
    lost_confirmed: int = 0


async def traffic_until_killed(pair: Pair, wait: bool, calls: Calls, before_kill_s: float,
                               cut_s: float) -> tuple[set[str], set[str]]:
    """64 callers; the replication link cut `cut_s` before the master is SIGKILLed, after
    `before_kill_s`. Returns the ids answered admitted, and those whose WAIT did not
    confirm."""
    lane = RedisLane.from_url(pair.url, timeout_s=1.0, reconnect_backoff_s=10)
    admitted: set[str] = set()
    unconfirmed: set[str] = set()
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            request_id, keys, args = calls.next()
            try:
                ok, acked = await call(lane, wait, keys, args)
            except redis.RedisError:
                continue  # not answered: the plugin applies on_redis_error, nothing billed
            if ok:
                admitted.add(request_id)
                if wait and acked < 1:
                    unconfirmed.add(request_id)

    async def killer() -> None:
        await asyncio.sleep(before_kill_s - cut_s)
        assert pair.link is not None
        if cut_s:
            pair.link.cut()
            await asyncio.sleep(cut_s)
        pair.processes[0].kill()
        pair.link.drop()
        await asyncio.sleep(0.2)  # callers meet the dead connection
        stop.set()

    await asyncio.gather(killer(), *(caller() for _ in range(64)))
    await lane.close()
    return admitted, unconfirmed


def failover_round(wait: bool, number: int, cut_s: float) -> Failover:
    with tempfile.TemporaryDirectory(prefix="kc-bench-wait-") as workdir:
        pair = Pair(Path(workdir), proxied=True)
        try:
            fund(pair.master)
            pair.master.wait(1, 10_000)
            admitted, unconfirmed = uvloop.run(traffic_until_killed(
                pair, wait, Calls(f"f{number}-"), before_kill_s=0.5 + 0.1 * number,
                cut_s=cut_s))
            pair.processes[0].wait(timeout=10)
            deadline = time.monotonic() + 10  # let it read all it was sent, then promote
            while pair.replica.info("replication")["master_link_status"] != "down":
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica never saw its master go")
                time.sleep(0.01)
            pair.replica.replicaof("NO", "ONE")
            stored = {f["event_id"] for s in event_streams() for _, f in pair.replica.xrange(s)}
            lost = admitted - stored
            return Failover(len(admitted), len(unconfirmed), len(lost), len(lost - unconfirmed))
        finally:
            pair.master.close()
            pair.replica.close()
            pair.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="failovers per setting")
    parser.add_argument("--proxy", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        Link.serve(*args.proxy)
        return
    print("| redis_wait_replicas | callers | calls/s | p50 µs | p99 µs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="kc-bench-wait-") as workdir:
        pair = Pair(Path(workdir))
        try:
            fund(pair.master)
            for callers, n in ((1, args.calls // 4), (64, args.calls)):
                for wait in (False, True):
                    result = uvloop.run(latency(pair.url, wait, Calls(f"l{callers}{wait:d}-"),
                                                n, callers))
                    print(f"| {int(wait)} | {callers} | {result.row()} |", flush=True)
        finally:
            pair.stop()
    print()
    print("| replication at the crash | redis_wait_replicas | round | admitted | "
          "not confirmed by WAIT | lost | lost though confirmed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for cut_s, name in ((0.0, "in sync"), (0.3, "cut 0.3 s before")):
        for wait in (False, True):
            for number in range(args.rounds):
                got = failover_round(wait, number, cut_s)
                print(f"| {name} | {int(wait)} | {number + 1} | {got.admitted:,} | "
                      f"{got.unconfirmed if wait else '-'} | {got.lost:,} | "
                      f"{got.lost_confirmed if wait else '-'} |", flush=True)
    print(f"\n(python {sys.version.split()[0]}, WAIT timeout {WAIT_TIMEOUT_MS} ms, "
          f"{WALLETS} wallets, loopback)")


if __name__ == "__main__":
    main()
