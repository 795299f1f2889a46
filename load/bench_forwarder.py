"""Forwarder throughput to a fast local sink: events/s and CPU per event (forwarder, Redis)
for batch sizes 1, 10, 100, 500.

    python load/bench_forwarder.py [--url redis://127.0.0.1:6379/0] [--events 20000]

Without --url it starts a throwaway redis-server. The sink is a minimal HTTP/1.1 server in
its own process that answers every POST with 204 at once, so the figures are what the
forwarder itself (Redis reads, CloudEvents JSON, HTTP round trip, XACK) can push through one
process; the http sink is used (the other sinks differ in body, not in the loop). Batch size
1 runs a tenth of the events. On a 2-core machine Redis, the sink and the forwarder share the
cores. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

import redis

from kong_credits.forwarder import Forwarder, ForwarderOptions
from kong_credits.forwarder.consumer_group import ConsumerGroup
from kong_credits.keys import SHARDS, event_stream
from kong_credits.redis_server import EmbeddedRedis
from kong_credits.sinks import SINKS, SinkConfig, http_client

BATCH_SIZES = (1, 10, 100, 500)
_NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(_NO_CONTENT)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_answer, sock=sock)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _fill(client: redis.Redis, count: int) -> None:
    """`count` rated events over all shards, as authorize.lua writes them."""
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(event_stream(i % SHARDS), {
            "event_id": f"bench-{i}", "wallet": f"wallet-{i % 97}", "consumer": "bench",
            "route": "search", "service": "api", "method": "GET", "path": "/search",
            "cost": str(i % 10), "timestamp": str(now_ms)})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def _redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def bench(url: str, sink_url: str, batch_size: int, count: int) -> tuple[float, float, float]:
    """Draining `count` fresh events with one forwarder: events/s, and the CPU µs per event
    of the forwarder (this process) and of Redis."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    _fill(client, count)
    config = SinkConfig(url=sink_url)
    with http_client(config) as http:
        sink = SINKS["http"](http, config)
        group = ConsumerGroup(client, "bench", "bench")
        forwarder = Forwarder(group, sink, ForwarderOptions(batch_size=batch_size, drain=True))
        started, cpu, redis_cpu = time.perf_counter(), time.process_time(), _redis_cpu_s(client)
        assert forwarder.run() == 0
        elapsed = time.perf_counter() - started
        cpu, redis_cpu = time.process_time() - cpu, _redis_cpu_s(client) - redis_cpu
    assert forwarder.metrics.tally.delivered == count
    client.close()
    return count / elapsed, cpu / count * 1e6, redis_cpu / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Redis to use (it is flushed!); default: a throwaway one")
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    sock = socket.create_server(("127.0.0.1", 0))
    sink = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,),
                                                        daemon=True)
    sink.start()
    sink_url = f"http://127.0.0.1:{sock.getsockname()[1]}/ingest"
    try:
        if args.url:
            run_all(args.url, sink_url, args.events)
        else:
            with EmbeddedRedis() as server:
                run_all(server.url, sink_url, args.events)
    finally:
        sink.terminate()
        sink.join(timeout=5)
        sock.close()


def run_all(url: str, sink_url: str, events: int) -> None:
    print(f"{'batch size':>10}  {'events':>7}  {'events/s':>9}  {'forwarder CPU µs/event':>22}"
          f"  {'Redis CPU µs/event':>18}")
    for batch_size in BATCH_SIZES:
        count = events if batch_size > 1 else max(events // 10, 100)
        rate, cpu_us, redis_us = bench(url, sink_url, batch_size, count)
        print(f"{batch_size:>10}  {count:>7}  {rate:>9,.0f}  {cpu_us:>22.1f}  {redis_us:>18.1f}")


if __name__ == "__main__":
    main()
