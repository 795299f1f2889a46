"""Shared fixtures: one real Redis server per test session, on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from kong_credits.redis_server import EmbeddedRedis

if TYPE_CHECKING:  # imported by the fixtures: only TLS tests need the cryptography package
    from redis_cluster import LocalCluster
    from redis_sentinel import LocalSentinel
    from tls_redis import Certificates, TlsRedis

pytest_plugins = ["skip_check"]  # a skip not declared in expected_skips fails the run


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn(tmp_path: Path, redis_url: str) -> Iterator[Spawn]:
    """Start `kong-credits forwarder ARGS...` processes on `redis` (the session's Redis by
    default), with fast backoff and polling and a summary every 0.5 s; all are killed after
    the test. Logs: tmp_path/forwarder-N.log."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, redis: str = redis_url) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"forwarder-{len(processes)}.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "kong_credits.forwarder.cli", "forwarder", *args,
                 "--backoff-base-ms", "5", "--backoff-max-ms", "50", "--block-ms", "100",
                 "--summary-interval-s", "0.5"],
                cwd=tmp_path, env={**os.environ, "KONG_CREDITS_REDIS_URL": redis},
                stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A redis-py client on an empty database."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, server and client certificates and a wrong CA, made for this session."""
    from tls_redis import make_certificates

    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_redis(tls_certs: Certificates) -> Iterator[TlsRedis]:
    """A redis-server that speaks only TLS (no client certificate asked)."""
    from tls_redis import TlsRedis

    server = TlsRedis(tls_certs, client_certs=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mtls_redis(tls_certs: Certificates) -> Iterator[TlsRedis]:
    """A redis-server that speaks only TLS and requires a client certificate from our CA."""
    from tls_redis import TlsRedis

    server = TlsRedis(tls_certs, client_certs=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """Redis Cluster, 3 masters + 3 replicas, shared by every cluster test of the session."""
    from redis_cluster import LocalCluster

    cluster = LocalCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(redis_cluster: LocalCluster) -> LocalCluster:
    """The session's cluster healthy again (a killed master back, as a replica) and empty."""
    redis_cluster.ready()
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[LocalSentinel]:
    """1 master, 1 replica, 3 sentinels, shared by every sentinel test of the session."""
    from redis_sentinel import LocalSentinel

    sentinel = LocalSentinel().start()
    yield sentinel
    sentinel.stop()


@pytest.fixture
def sentinel(redis_sentinel: LocalSentinel) -> LocalSentinel:
    """The session's sentinel setup settled after any failover, and empty."""
    redis_sentinel.ready()
    redis_sentinel.flush()
    return redis_sentinel


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A PostgreSQL server for the session (tests/postgres_server.py); each test that needs a
    store takes a fresh database from it."""
    from postgres_server import LocalPostgres

    server = LocalPostgres().start()
    yield server
    server.stop()
