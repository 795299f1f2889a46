"""Forwarder processes: SIGKILL mid-run, SIGTERM, and several at once on the same streams."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from billing_recorder import BillingRecorder, sink_args
from event_source import assert_billed_once, assert_nothing_pending, produce
from waits import wait_until

from kong_credits.forwarder.consumer_group import ConsumerGroup
from kong_credits.forwarder.group_names import group_name

pytestmark = pytest.mark.integration
Spawn = Callable[..., subprocess.Popen[bytes]]  # the `spawn` fixture (conftest.py)
GROUP = group_name("http")


def test_sigkill_mid_batch_then_a_new_forwarder_delivers_the_rest(
        spawn: Spawn, redis_url: str, r: redis.Redis) -> None:
    produced = produce(redis_url, 3000)
    with BillingRecorder("http", delay_s=0.01) as backend:
        backend.chaos(0.1, ["500", "drop-after", "timeout"], seed=9)
        first = spawn(*sink_args("http", backend.url), "--batch-size", "50",
                      "--claim-idle-ms", "300")
        wait_until(lambda: len(backend.stored) >= 600, timeout_s=30)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        assert len(backend.stored) < 3000
        assert ConsumerGroup(r, GROUP, "observer").pending() > 0  # killed holding entries
        second = spawn(*sink_args("http", backend.url), "--batch-size", "200",
                       "--claim-idle-ms", "300", "--drain")
        assert second.wait(timeout=60) == 0
    assert_billed_once(backend, produced)
    assert_nothing_pending(r, GROUP)


def test_sigterm_stops_cleanly_and_a_later_drain_finishes(spawn: Spawn, redis_url: str,
                                                          r: redis.Redis,
                                                          tmp_path: Path) -> None:
    produced = produce(redis_url, 1500)
    with BillingRecorder("http", delay_s=0.01) as backend:
        live = spawn(*sink_args("http", backend.url), "--batch-size", "20")
        wait_until(lambda: len(backend.stored) >= 200, timeout_s=30)
        live.send_signal(signal.SIGTERM)
        assert live.wait(timeout=10) == 0
        assert "forwarder to http:" in (tmp_path / "forwarder-0.log").read_text()
        late = spawn(*sink_args("http", backend.url), "--drain", "--claim-idle-ms", "200")
        assert late.wait(timeout=60) == 0
    assert_billed_once(backend, produced)
    assert_nothing_pending(r, GROUP)


def test_three_forwarders_at_once_bill_each_event_once(spawn: Spawn, redis_url: str,
                                                       r: redis.Redis) -> None:
    produced = produce(redis_url, 3000)
    with BillingRecorder("lago") as backend:
        backend.chaos(0.1, ["500", "429", "drop-after"], seed=4)
        workers = [spawn(*sink_args("lago", backend.url), "--batch-size", "100", "--drain",
                         "--claim-idle-ms", "1000") for _ in range(3)]
        assert [w.wait(timeout=60) for w in workers] == [0, 0, 0]
    assert_billed_once(backend, produced)
    assert_nothing_pending(r, group_name("lago"))
    consumers = r.xinfo_consumers("kc:{s0}:events", group_name("lago"))
    assert all(c["pending"] == 0 for c in consumers)
