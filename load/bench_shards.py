"""What the number of shards costs the forwarder: it reads one event stream per shard.

For each count (a child process per count, since $KONG_CREDITS_SHARDS is read at import):

- one Redis: an idle poll is one XREADGROUP naming every stream (here non-blocking; the
  forwarder blocks up to --block-ms, once a second by default); the reclaim step (one
  XAUTOCLAIM per stream, every claim_idle_ms / 2) and the housekeeping round (XINFO GROUPS,
  XINFO CONSUMERS per stream, every 10 s);
- Redis Cluster (one node owning every slot: the same commands a cluster client sends, minus
  the network between nodes): a poll is one XREADGROUP per stream, then a 200 ms pause when
  all were empty;
- with a backlog of 10 events in every stream: how many entries one poll takes in hand.

Per step: wall time and the forwarder's CPU (time.process_time), and Redis's CPU (INFO cpu).

    /work/main/.venv/bin/python load/bench_shards.py                # 16, 64, 256, 1024
    /work/main/.venv/bin/python load/bench_shards.py --shards 16 256 1024 4096
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis

from kong_credits.redis_server import EmbeddedRedis, _free_port, find_redis_server

ROUNDS = {"poll": 50, "reclaim": 10, "housekeeping": 5, "cluster poll": 10}


@dataclass
class Cost:
    wall_ms: float
    client_cpu_ms: float
    redis_cpu_ms: float


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(admin: redis.Redis, rounds: int, step: Callable[[], object]) -> Cost:
    step()  # warm: connections, scripts
    redis0, cpu0, wall0 = redis_cpu_s(admin), time.process_time(), time.perf_counter()
    for _ in range(rounds):
        step()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Cost(wall / rounds * 1e3, cpu / rounds * 1e3,
                (redis_cpu_s(admin) - redis0) / rounds * 1e3)


@contextlib.contextmanager
def cluster_node() -> Iterator[str]:
    """A cluster-enabled redis-server that owns all 16384 slots."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="kc-bench-cluster-") as workdir:
        process = subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-port", str(_free_port()),
             "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port, socket_timeout=2)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            while client.cluster("info")["cluster_state"] != "ok":
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster node did not come up")
                time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


def child(node_url: str, cluster_url: str) -> dict[str, object]:
    """Runs under $KONG_CREDITS_SHARDS: the costs of one count, as JSON."""
    from kong_credits.forwarder.cli import redis_client
    from kong_credits.forwarder.consumer_group import ConsumerGroup
    from kong_credits.keys import SHARDS, event_streams

    out: dict[str, object] = {"shards": SHARDS}
    admin = redis.Redis.from_url(node_url)
    admin.flushall()
    client = redis_client(node_url, read_timeout_s=10)
    group = ConsumerGroup(client, "bench", "bench-1")
    group.ensure()
    out["poll"] = measure(admin, ROUNDS["poll"], lambda: group.read_new(100, None)).__dict__
    out["reclaim"] = measure(admin, ROUNDS["reclaim"],
                             lambda: group.reclaim(60_000, 100)).__dict__

    def housekeeping() -> None:
        group.trim_delivered(3_600_000)
        group.forget_idle_consumers(86_400_000)
        group.backlog()

    out["housekeeping"] = measure(admin, ROUNDS["housekeeping"], housekeeping).__dict__
    pipe = admin.pipeline(transaction=False)
    for stream in event_streams():
        for i in range(10):
            pipe.xadd(stream, {"event_id": f"{stream}-{i}"})
    pipe.execute()
    out["backlog taken by one poll"] = len(group.read_new(100, None))
    client.close()

    cluster_admin = redis.Redis.from_url(cluster_url)
    cluster_admin.flushall()
    cluster = redis_client(cluster_url, read_timeout_s=10, cluster=True)
    per_shard = ConsumerGroup(cluster, "bench", "bench-1", per_shard=True)
    per_shard.ensure()
    out["cluster poll"] = measure(cluster_admin, ROUNDS["cluster poll"],
                                  lambda: per_shard.read_new(100, None)).__dict__
    cluster.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--child", nargs=2, metavar=("NODE_URL", "CLUSTER_URL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    rows = []
    with EmbeddedRedis() as node, cluster_node() as cluster_url:
        for shards in args.shards:
            done = subprocess.run(
                [sys.executable, __file__, "--child", node.url, cluster_url],
                env={**os.environ, "KONG_CREDITS_SHARDS": str(shards)},
                capture_output=True, text=True, check=True, timeout=600)
            rows.append(json.loads(done.stdout))
    print("| shards | step | wall ms | forwarder CPU ms | Redis CPU ms |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for row in rows:
        for step in ROUNDS:
            cost = row[step]
            print(f"| {row['shards']} | {step} | {cost['wall_ms']:.2f} | "
                  f"{cost['client_cpu_ms']:.2f} | {cost['redis_cpu_ms']:.2f} |")
    print()
    for row in rows:
        print(f"{row['shards']} shards, 10 events in every stream: one poll takes "
              f"{row['backlog taken by one poll']} entries in hand (count 100 per stream)")


if __name__ == "__main__":
    main()
