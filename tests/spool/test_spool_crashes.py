"""on_redis_error=spool when plugin servers die or share a host: SIGKILL during the
outage and mid-replay, and two plugin servers on one prefix. Every request the host saw
pass is charged exactly once, with one event."""

from __future__ import annotations

import time
from pathlib import Path

from spool_outage import (
    COST,
    KEYS,
    PROBE,
    OutageTraffic,
    RestartableRedis,
    check_charges,
    kill_plugin_server,
    spool_config,
    spool_segments,
    start_gateway,
    wait_spool_empty,
)
from waits import wait_until


def test_a_plugin_server_killed_during_the_outage_loses_nothing_it_spooled(
        funded: RestartableRedis, tmp_path: Path) -> None:
    gateway = start_gateway(spool_config(funded.url, KEYS, cost=COST), str(tmp_path))
    try:
        with OutageTraffic(gateway, KEYS, threads=4) as traffic:
            traffic.wait(40, status=200)
            funded.stop()
            traffic.wait(60, status=200, after=time.monotonic())
            kill_plugin_server(gateway)  # SIGKILL: its segment is left behind, unlocked
            traffic.wait(60, status=200, after=time.monotonic())
            funded.start()
            traffic.wait(40, status=200, after=time.monotonic())
        wait_spool_empty(str(tmp_path))
        check_charges(funded, traffic)
    finally:
        gateway.close()


def test_a_plugin_server_killed_mid_replay_charges_nothing_twice(
        funded: RestartableRedis, tmp_path: Path) -> None:
    prefix = str(tmp_path)
    gateway = start_gateway(spool_config(funded.url, KEYS | PROBE, cost=COST), prefix)
    try:
        with OutageTraffic(gateway, KEYS, threads=6) as traffic:
            traffic.wait(40, status=200)
            funded.stop()
            traffic.wait(300, status=200, after=time.monotonic(), timeout_s=120)
            funded.start()
            # With live traffic flowing the replay yields to it (5% of its rate): kill the
            # server once it noted progress, with most of the spool still to charge.
            wait_until(lambda: any(tmp_path.rglob("*.done")), timeout_s=60)
            kill_plugin_server(gateway)
            assert spool_segments(prefix), "the replay finished before the kill"
            traffic.wait(40, status=200, after=time.monotonic())
        wait_spool_empty(prefix)
        check_charges(funded, traffic)
    finally:
        gateway.close()


def test_two_plugin_servers_on_one_prefix_each_charge_once_and_adopt_the_others_spool(
        funded: RestartableRedis, tmp_path: Path) -> None:
    prefix = str(tmp_path)
    config = spool_config(funded.url, KEYS | PROBE, cost=COST)
    first = start_gateway(config, prefix, socket_name="first.socket")
    second = start_gateway(config, prefix, socket_name="second.socket")
    try:
        with (OutageTraffic(first, KEYS, threads=3) as one,
              OutageTraffic(second, KEYS, threads=3) as two):
            one.wait(20, status=200)
            two.wait(20, status=200)
            funded.stop()
            now = time.monotonic()
            one.wait(100, status=200, after=now)
            two.wait(100, status=200, after=now)
        # one segment per writing process (each server forks a worker per core)
        writers = {path.stem.split("-")[1] for path in spool_segments(prefix)}
        assert len(writers) >= 2
        first.close()  # gone before Redis is back: the second replays its segment too
        funded.start()
        second.get("/paid", key="probe")
        wait_spool_empty(prefix)
        with OutageTraffic(second, KEYS, threads=1) as after:
            after.wait(4)
        check_charges(funded, one, two, after)
    finally:
        second.close()
        first.host.processes.clear()
