"""A consumer of this host whose process is gone has nothing in flight: a new forwarder (or
alerts deliverer) takes its entries over at once instead of after --claim-idle-ms, and
deletes it; live processes, other hosts and ourselves keep the usual rules."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from billing_recorder import BillingRecorder, sink_args, sink_config
from event_source import FAST, assert_billed_once, assert_nothing_pending, produce
from faults import (
    ALERTS_GROUP,
    WebhookReceiver,
    alerts_pending,
    make_alerts,
    running,
    start_alerts,
)
from waits import wait_until

from kong_credits.forwarder import Forwarder, ForwarderOptions
from kong_credits.forwarder.consumer_group import ConsumerGroup, consumer_name, process_gone
from kong_credits.forwarder.group_names import group_name
from kong_credits.keys import alert_streams, event_streams
from kong_credits.sinks import SINKS, http_client

pytestmark = pytest.mark.integration
Spawn = Callable[..., subprocess.Popen[bytes]]  # the `spawn` fixture (conftest.py)
GROUP = group_name("http")
DEADLINE_S = 15.0
"""Far below the default --claim-idle-ms (60 s) the restarted processes run with."""


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=10)
    return process.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process that is running, but is no forwarder."""
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                               stdin=subprocess.PIPE)
    yield process.pid
    process.kill()
    process.wait(timeout=10)


def consumers(client: redis.Redis, group: str, streams: list[str]) -> dict[str, int]:
    """Consumer name -> entries held, over `streams`."""
    return ConsumerGroup(client, group, "observer", streams).holders()


def test_a_drain_restarted_after_sigkill_delivers_at_once_and_nothing_twice(
        spawn: Spawn, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    produced = produce(redis_url, 300)
    with BillingRecorder("http", delay_s=0.05) as backend:
        first = spawn(*sink_args("http", backend.url), "--batch-size", "20")
        wait_until(lambda: len(backend.stored) >= 60)
        backend.chaos(1.0, ["hang"])  # from the next call on: every batch acked so far
        wait_until(lambda: "hang" in backend.faults_injected)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        killed = f"{socket.gethostname()}-{first.pid}"
        held = consumers(r, GROUP, event_streams()).get(killed, 0)
        assert held > 0 and len(backend.stored) < 300
        backend.calm()
        started = time.monotonic()
        second = spawn(*sink_args("http", backend.url), "--drain")  # claim idle: 60 s
        try:
            code = second.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the drain waited for the claim idle time: "
                        f"{(tmp_path / 'forwarder-1.log').read_text()}")
        took_s = time.monotonic() - started
    assert code == 0, (tmp_path / "forwarder-1.log").read_text()
    assert took_s < DEADLINE_S
    assert_billed_once(backend, produced)
    assert len(backend.receipts) == 300  # nothing was sent twice
    assert_nothing_pending(r, GROUP)
    assert killed not in consumers(r, GROUP, event_streams())


def test_only_consumers_whose_process_is_gone_are_taken_over_at_once(
        redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        dead_pid: int, live_pid: int) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "ci-runner-01")  # '-' and digits
    produce(redis_url, 200)
    me = consumer_name()
    assert me == f"ci-runner-01-{os.getpid()}"
    names = {"dead": f"ci-runner-01-{dead_pid}", "live": f"ci-runner-01-{live_pid}",
             "other host": f"other-host-{dead_pid}", "me": me}
    group = ConsumerGroup(r, GROUP, "setup")
    group.ensure()
    held: dict[str, set[str]] = {}
    for role, name in names.items():  # each reads some entries and never acks them
        read = ConsumerGroup(r, GROUP, name).read_new(2, None)
        held[role] = {entry.fields["event_id"] for entry in read}
        assert read
    with BillingRecorder("http") as backend, \
            http_client(sink_config("http", backend.url)) as http:
        sink = SINKS["http"](http, sink_config("http", backend.url))
        options = ForwarderOptions(claim_idle_ms=60_000, block_ms=50, backoff=FAST)
        forwarder = Forwarder(ConsumerGroup(r, GROUP, me), sink, options)
        never_read = {f"req-{i}" for i in range(200)} - set().union(*held.values())
        expected = held["dead"] | held["me"] | never_read
        with running(forwarder) as run:
            # The never-read entries come last: read only after a pass over all holders.
            wait_until(lambda: set(backend.stored) == expected or run.error,
                       timeout_s=DEADLINE_S)
        assert (run.error, run.code) == (None, 0)
    left = consumers(r, GROUP, event_streams())
    assert names["dead"] not in left
    assert left[names["live"]] == len(held["live"])
    assert left[names["other host"]] == len(held["other host"])
    assert left.get(me, 0) == 0


def test_which_consumers_are_provably_gone(monkeypatch: pytest.MonkeyPatch, dead_pid: int,
                                           live_pid: int) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "edge-7")
    assert process_gone(f"edge-7-{dead_pid}")
    assert not process_gone(f"edge-7-{live_pid}")  # exists: maybe a forwarder, maybe not
    assert not process_gone(f"edge-7-{os.getpid()}")  # ourselves
    assert not process_gone(f"edge-{dead_pid}")  # another host (a prefix of ours)
    assert not process_gone(f"other-edge-7-{dead_pid}")
    assert not process_gone(f"edge-7-x{dead_pid}")  # not hostname-pid: a --consumer name
    assert not process_gone("edge-7-0")  # pid 0 would signal our own process group
    assert not process_gone("edge-7-99999999999999999999")
    assert not process_gone(f"edge-7-{dead_pid}-2")


def test_the_alerts_deliverer_takes_over_a_dead_local_consumer_at_once(
        redis_url: str, r: redis.Redis, tmp_path: Path, dead_pid: int) -> None:
    expected = make_alerts(r, [f"w{i}" for i in range(6)])
    dead = f"{socket.gethostname()}-{dead_pid}"
    crashed = ConsumerGroup(r, ALERTS_GROUP, dead, alert_streams())
    crashed.ensure()
    assert len(crashed.read_new(100, None)) == len(expected)  # all read, none acked
    log = tmp_path / "alerts.log"
    with WebhookReceiver() as receiver:
        process = start_alerts(redis_url, receiver.url, log)  # claim idle: 60 s
        try:
            assert process.wait(timeout=DEADLINE_S) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            pytest.fail(f"the drain waited for the claim idle time: {log.read_text()}")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert set(receiver.ids) == expected and max(receiver.ids.values()) == 1
    assert alerts_pending(r) == 0
    assert dead not in consumers(r, ALERTS_GROUP, alert_streams())
