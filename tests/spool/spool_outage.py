"""What the spool's end-to-end tests share: a Redis that can be stopped and started again on
the same port with its data, a gateway on a known Kong prefix, and the accounting check."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from plugin_traffic import Answer, Traffic, wallet_events
from test_plugin_access import HostThread, upstream
from waits import wait_until

from kong_credits import wallets
from kong_credits.host import Host, credits_servers
from kong_credits.redis_server import _free_port, find_redis_server
from kong_credits.spool.segments import SPOOL_DIRNAME, segment_paths

KEYS = {f"key{n}": f"spool-w{n}" for n in range(4)}
PROBE = {"probe": "spool-direct"}
"""A consumer the tests' own requests use, apart from the traffic's wallets."""
FUNDS = {wallet: 1_000_000 for wallet in KEYS.values()}
COST = 5


class RestartableRedis:
    """redis-server on a fixed loopback port; `stop()` saves (SHUTDOWN SAVE) and exits, so
    `start()` brings the same data back on the same port: an outage without data loss."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="kc-spool-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RestartableRedis:
        self._process = subprocess.Popen(
            [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self._dir.name,
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.answers, timeout_s=10)
        return self

    def answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            with redis.Redis(port=self.port, socket_timeout=5) as client:
                client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # SHUTDOWN closes the connection as it exits
        self._process.wait(timeout=10)
        self._process = None

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        self._dir.cleanup()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


IN_DOUBT = -1
"""The status recorded for a request whose plugin phase failed (the plugin server died or
was restarting): Kong lets such a request through, charged or spooled only if the plugin
got that far."""


class OutageTraffic(Traffic):
    """Traffic that records a request the plugin did not finish (host errors) as IN_DOUBT."""

    def _answer(self, key: str, response: Any) -> Answer:
        status = IN_DOUBT if response.errors else response.status
        return Answer(self.keys[key], status, 0.0, time.monotonic())


def spool_config(redis_url: str, keys: dict[str, str], *, cost: int = 5,
                 timeout_ms: int = 200, **plugin: Any) -> dict[str, Any]:
    """kong.yml: `/paid` (credits, `cost`) and `/metered` (credits-metered, estimate 10,
    price from X-Units-Used), both on_redis_error spool, one consumer per API key."""
    config = {"redis_url": redis_url, "redis_timeout_ms": timeout_ms,
              "on_redis_error": "spool", **plugin}
    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080", "routes": [
            {"name": "paid", "paths": ["/paid"], "plugins": [
                {"name": "key-auth"}, {"name": "credits", "config": {"cost": cost, **config}}]},
            {"name": "metered", "paths": ["/metered"], "plugins": [
                {"name": "key-auth"},
                {"name": "credits-metered", "config": {
                    "cost": 10, "cost_header": "X-Units-Used", **config}}]},
        ]}],
        "consumers": [{"username": wallet, "custom_id": wallet,
                       "keyauth_credentials": [{"key": key}]}
                      for key, wallet in keys.items()],
    }


def start_gateway(config: dict[str, Any], prefix: str,
                  socket_name: str = "credits.socket") -> HostThread:
    host = Host(config, credits_servers(prefix, socket_name=socket_name), upstream=upstream)
    runner = HostThread(host)
    runner.run(host.start())
    return runner


def plugin_server_pid(gateway: HostThread) -> int:
    pid = gateway.host.processes["credits"].pid
    assert pid is not None
    return pid


def kill_plugin_server(gateway: HostThread) -> None:
    """SIGKILL the plugin server; the host starts it again (as Kong does) and restarts its
    instances on the next request."""
    process = gateway.host.processes["credits"]
    old = plugin_server_pid(gateway)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: process.pid not in (None, old), timeout_s=15)
    process.wait_ready(15)


def spool_segments(prefix: str) -> list[Path]:
    root = Path(prefix) / SPOOL_DIRNAME
    return [p for d in root.iterdir() for p in segment_paths(d)] if root.exists() else []


def wait_spool_empty(prefix: str, timeout_s: float = 90) -> None:
    wait_until(lambda: not spool_segments(prefix), timeout_s=timeout_s, interval_s=0.1)


def assert_each_admitted_request_charged_once(
        client: redis.Redis, traffics: Iterable[Traffic], funds: dict[str, int],
        cost: int) -> Counter[int]:
    """Per wallet: unique event ids, one event per request answered 200 by the plugin, none
    for any other unless the request's fate is in doubt (IN_DOUBT: the plugin server was
    killed while serving it, possibly after spooling it), and the balance exactly granted -
    events x cost. Returns the statuses seen."""
    statuses: Counter[int] = Counter()
    for wallet, granted in funds.items():
        seen: Counter[int] = Counter()
        for traffic in traffics:
            seen += traffic.statuses(wallet)
        statuses += seen
        events = wallet_events(client, wallet)
        ids = [e["event_id"] for e in events]
        assert len(set(ids)) == len(ids), f"{wallet}: an event twice"
        assert seen[200] <= len(events) <= seen[200] + seen[IN_DOUBT], (
            wallet, seen, len(events))
        assert set(seen) <= {200, IN_DOUBT}, (wallet, seen)
        view = wallets.balance(client, wallet)
        assert (view.balance, view.overdraft) == (granted - cost * len(events), 0), wallet
    return statuses


def check_charges(server: RestartableRedis, *traffics: Traffic) -> None:
    """`assert_each_admitted_request_charged_once` over the traffic's wallets (KEYS)."""
    with server.client() as client:
        statuses = assert_each_admitted_request_charged_once(client, traffics, FUNDS, COST)
    assert statuses[200] > 0
