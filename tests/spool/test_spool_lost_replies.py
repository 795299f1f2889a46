"""on_redis_error=spool when calls ran in Redis but their replies were lost: Redis ran them
and then stayed away longer than the plugin keeps answers (2 x redis_timeout_ms + 10 s), or
a stalled Redis ran them late. The spooled requests were charged already, and their replay
must find that out (authorize.lua's pin: the stored answer, else the wallet's ledger), not
charge them again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis
from redis_proxy import RedisProxy
from spool_outage import (
    COST,
    KEYS,
    OutageTraffic,
    RestartableRedis,
    check_charges,
    spool_config,
    spool_segments,
    start_gateway,
    wait_spool_empty,
)
from waits import wait_until


def stored_answers(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(match="*:req:*", count=1000))


def test_requests_that_ran_with_their_replies_lost_are_not_charged_again_after_a_long_outage(
        funded: RestartableRedis, tmp_path: Path) -> None:
    proxy = RedisProxy(funded.port).up()
    prefix = str(tmp_path)
    config = spool_config(f"redis://127.0.0.1:{proxy.port}/0", KEYS, cost=COST)
    gateway = start_gateway(config, prefix)
    try:
        with OutageTraffic(gateway, KEYS, threads=4) as before:
            before.wait(40, status=200)
            proxy.replies = False  # Redis runs the calls; the plugin never hears back
            before.wait(12, status=200, after=time.monotonic())
            proxy.down()
        proxy.replies = True
        ran = [path for path in spool_segments(prefix) if b'"sent":true' in path.read_bytes()]
        assert ran, "no spooled request is marked as possibly run"
        with funded.client() as client:  # Redis stays away until every live answer expired
            wait_until(lambda: stored_answers(client) == 0, timeout_s=30, interval_s=0.2)
        proxy.up()
        with OutageTraffic(gateway, KEYS, threads=2) as after:
            after.wait(40, status=200)
        wait_spool_empty(prefix)
        check_charges(funded, before, after)
    finally:
        gateway.close()
        proxy.down()


def test_requests_a_stalled_redis_runs_late_are_charged_once(
        funded: RestartableRedis, tmp_path: Path) -> None:
    """SIGSTOP: calls queue in Redis's socket buffers, time out and are spooled as possibly
    run; SIGCONT: Redis runs them (a live charge each), then answers the replay."""
    prefix = str(tmp_path)
    gateway = start_gateway(spool_config(funded.url, KEYS, cost=COST), prefix)
    assert funded._process is not None
    pid = funded._process.pid
    try:
        with OutageTraffic(gateway, KEYS, threads=4) as traffic:
            traffic.wait(40, status=200)
            os.kill(pid, signal.SIGSTOP)
            try:
                traffic.wait(30, status=200, after=time.monotonic())
                sent = [p for p in spool_segments(prefix) if b'"sent":true' in p.read_bytes()]
            finally:
                os.kill(pid, signal.SIGCONT)
            assert sent, "no spooled request is marked as possibly run"
            traffic.wait(40, status=200, after=time.monotonic())
        wait_spool_empty(prefix)
        check_charges(funded, traffic)
    finally:
        gateway.close()
