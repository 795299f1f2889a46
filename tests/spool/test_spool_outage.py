"""on_redis_error=spool end to end: Kong-protocol host -> real plugin server -> a real
redis-server stopped mid-traffic and started again: every request the host saw pass is
charged exactly once, with one event; credits-metered prices, a full spool, a Redis away from
the start and the CLI. Plugin servers dying: test_spool_crashes.py."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest
import redis
from plugin_traffic import wallet_events
from spool_outage import (
    COST,
    FUNDS,
    KEYS,
    PROBE,
    OutageTraffic,
    RestartableRedis,
    check_charges,
    spool_config,
    spool_segments,
    start_gateway,
    wait_spool_empty,
)

from kong_credits import wallets
from kong_credits.spool.segments import spool_directory


def test_requests_served_while_redis_is_away_are_charged_once_when_it_is_back(
        funded: RestartableRedis, tmp_path: Path) -> None:
    gateway = start_gateway(spool_config(funded.url, KEYS | PROBE, cost=COST), str(tmp_path))
    try:
        with OutageTraffic(gateway, KEYS, threads=4) as traffic:
            traffic.wait(40, status=200)
            funded.stop()
            down = time.monotonic()
            traffic.wait(150, status=200, after=down)
            spooled = gateway.get("/paid", key="probe")
            assert (spooled.status, spooled.header("X-Credits-Spooled")) == (200, "1")
            assert spooled.header("X-Credits-Cost") is None  # no balance known meanwhile
            assert spool_segments(str(tmp_path))
            funded.start()
            traffic.wait(40, status=200, after=time.monotonic())
        wait_spool_empty(str(tmp_path))
        check_charges(funded, traffic)
        live = gateway.get("/paid", key="key1")
        assert live.header("X-Credits-Spooled") is None and live.status == 200
        with funded.client() as client:
            assert len(wallet_events(client, "spool-direct")) == 1
        with funded.client() as client:  # the spooled events keep the time they were served
            times = [int(e["timestamp"]) for e in wallet_events(client, "spool-w0")]
        assert min(times) < (time.time() - 0.5) * 1000
    finally:
        gateway.close()


def test_metered_requests_spooled_are_charged_the_price_their_upstream_reported(
        funded: RestartableRedis, tmp_path: Path) -> None:
    gateway = start_gateway(spool_config(funded.url, KEYS, cost=COST), str(tmp_path))
    try:
        assert gateway.get("/metered?units=3", key="key0").status == 200  # live
        funded.stop()
        spooled = [gateway.get(f"/metered?units={n}", key="key0") for n in (7, 0, 12)]
        unreported = gateway.get("/metered", key="key0")
        assert [r.header("X-Credits-Spooled") for r in (*spooled, unreported)] == ["1"] * 4
        funded.start()
        wait_spool_empty(str(tmp_path))
        with funded.client() as client:
            events = wallet_events(client, "spool-w0")
            costs = sorted(int(e["cost"]) for e in events)
            assert costs == [0, 3, 7, 10, 12]  # no header: the estimate (10)
            # spooled or not, each event has what a settle records
            assert {(e["reserved"], e["status"]) for e in events} == {("10", "200")}
            assert wallets.balance(client, "spool-w0").balance == FUNDS["spool-w0"] - 32
    finally:
        gateway.close()


def test_a_full_spool_passes_requests_unmetered_and_counts_them(
        funded: RestartableRedis, tmp_path: Path) -> None:
    prefix = str(tmp_path)
    directory = spool_directory(prefix, funded.url)
    directory.mkdir(parents=True)
    filler = directory / "00000000000000000000-1.spool"  # another process's open segment
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"\n" * (1024 * 1024 - 400))  # room for one line (~315 bytes) of 1 MB
    gateway = start_gateway(spool_config(funded.url, KEYS, cost=COST, spool_max_mb=1), prefix)
    try:
        assert gateway.get("/paid", key="key0").status == 200
        time.sleep(1.5)  # the replay measures the directory once a second
        funded.stop()
        first = gateway.get("/paid", key="key0")
        rest = [gateway.get("/paid", key="key0") for _ in range(5)]
        assert first.header("X-Credits-Spooled") == "1"  # fits in the last 400 bytes
        assert [(r.status, r.header("X-Credits-Spooled")) for r in rest] == [(200, None)] * 5
        metrics = gateway.get("/paid", key="key0")  # still passes, unmetered
        assert metrics.status == 200
        funded.start()
        os.close(fd)  # the "other process" exits: its empty segment is replayed and removed
        wait_spool_empty(prefix)
        with funded.client() as client:
            assert len(wallet_events(client, "spool-w0")) == 2  # the live one, the spooled one
            assert wallets.balance(client, "spool-w0").balance == FUNDS["spool-w0"] - 2 * COST
    finally:
        gateway.close()


def test_redis_unreachable_from_the_start_spools_and_the_cli_reports_it(
        funded: RestartableRedis, tmp_path: Path) -> None:
    """No instance ever reached Redis: spooled all the same (and status shows it)."""
    from click.testing import CliRunner

    from kong_credits.cli import main

    funded.stop()
    prefix = str(tmp_path)
    gateway = start_gateway(spool_config(funded.url, KEYS, cost=COST), prefix)
    try:
        answers = [gateway.get("/paid", key="key2") for _ in range(3)]
        assert {(a.status, a.header("X-Credits-Spooled")) for a in answers} == {(200, "1")}
        status = CliRunner().invoke(main, ["spool", "status", "-p", prefix, "--json"])
        assert status.exit_code == 0, status.output
        assert '"requests":3' in status.output.replace(" ", "")
    finally:
        gateway.close()
    funded.start()
    replayed = CliRunner().invoke(main, ["spool", "replay", "-p", prefix,
                                         "--redis-url", funded.url])
    assert replayed.exit_code == 0, replayed.output
    assert not spool_segments(prefix)
    with funded.client() as client:
        assert len(wallet_events(client, "spool-w2")) == 3
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=1).ping()
