"""`kong-credits forwarder` on the command line: options, exit codes, metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis
from billing_recorder import BillingRecorder, sink_args
from click.testing import CliRunner, Result
from event_source import FAST, assert_billed_once, assert_nothing_pending, forward, produce

import kong_credits.forwarder.cli as forwarder_cli
from kong_credits.forwarder.cli import forwarder_command
from kong_credits.forwarder.group_names import group_name
from kong_credits.forwarder.metrics import ForwarderMetrics

NO_ENV = {"KONG_CREDITS_SINK_API_KEY": None, "KONG_CREDITS_SINK_HMAC_SECRET": None}


def run(*args: str) -> Result:
    return CliRunner().invoke(forwarder_command, list(args), env=NO_ENV)


def drain_args(redis_url: str) -> list[str]:
    return ["--drain", "--claim-idle-ms", "200", "--backoff-base-ms", "1",
            "--backoff-max-ms", "20", "--redis-url", redis_url]


def test_exports_and_command_names() -> None:
    assert sorted(forwarder_cli.__all__) == ["dlq_command", "forwarder_command"]
    assert forwarder_cli.forwarder_command.name == "forwarder"
    assert forwarder_cli.dlq_command.name == "dlq"


@pytest.mark.parametrize("kind", ["lago", "orb"])
def test_drain_delivers_everything_and_exits_0(kind: str, redis_url: str,
                                               r: redis.Redis) -> None:
    produced = produce(redis_url, 400)
    with BillingRecorder(kind) as backend:
        backend.chaos(0.2, ["500", "429", "drop-after"], seed=5)
        result = run(*sink_args(kind, backend.url), "--batch-size", "50",
                     *drain_args(redis_url))
    assert result.exit_code == 0, result.output
    assert_billed_once(backend, produced)
    assert_nothing_pending(r, group_name(kind))


def test_customers_file_maps_wallets_per_sink(redis_url: str, r: redis.Redis,
                                              tmp_path: Path) -> None:
    produce(redis_url, 24, wallets_n=3)
    mapping = tmp_path / "customers.yaml"
    mapping.write_text("customers:\n  wallet-0: acme\n  wallet-1:\n    orb: globex-orb\n"
                       "    default: globex\n")
    with BillingRecorder("orb") as backend:
        result = run(*sink_args("orb", backend.url), "--customers", str(mapping),
                     *drain_args(redis_url))
    assert result.exit_code == 0, result.output
    assert {receipt.customer for receipt in backend.stored.values()} == {
        "acme", "globex-orb", "wallet-2"}


@pytest.mark.parametrize(("args", "message"), [
    (["--sink", "lago", "--url", "http://127.0.0.1:9"], "needs --api-key, --event-name"),
    (["--sink", "nope"], "'nope' is not one of"),
    (["--sink", "http", "--url", "http://127.0.0.1:9", "--customers", "/no/such.yaml"],
     "cannot read /no/such.yaml"),
    (["--sink", "http", "--url", "http://127.0.0.1:9", "--batch-size", "0"], "--batch-size"),
    (["--sink", "usage", "--batch-size", "10001"], "--batch-size"),
    (["--sink", "http", "--url", "http://127.0.0.1:9", "--retain-s", "-1"], "--retain-s"),
])
def test_bad_options_exit_2_and_say_why(args: list[str], message: str,
                                        redis_url: str) -> None:
    result = run(*args, "--drain", "--redis-url", redis_url)
    assert result.exit_code == 2
    assert message in result.output


def test_bad_customers_file_names_the_problem(tmp_path: Path, redis_url: str) -> None:
    mapping = tmp_path / "customers.yaml"
    mapping.write_text("customers:\n  acme:\n    strpe: cus_1\n")
    result = run("--sink", "stripe", "--api-key", "k", "--event-name", "e", "--customers",
                 str(mapping), "--drain", "--redis-url", redis_url)
    assert result.exit_code == 2
    assert "unknown sink 'strpe'" in result.output


def test_unreachable_redis_exits_1() -> None:
    result = run("--sink", "http", "--url", "http://127.0.0.1:9", "--drain",
                 "--redis-url", "redis://127.0.0.1:1/0")
    assert result.exit_code == 1
    assert "Redis unavailable" in result.output


def test_metrics_are_served_for_prometheus(redis_url: str, r: redis.Redis) -> None:
    produce(redis_url, 30, bad=1)
    with BillingRecorder("http") as backend:
        forwarder = forward("http", r, backend)
    port, stop = forwarder.metrics.serve(0)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop()
    assert 'kong_credits_forwarder_events_delivered_total{sink="http"} 29.0' in text
    assert 'kong_credits_forwarder_events_dead_lettered_total{sink="http"} 1.0' in text
    assert 'kong_credits_forwarder_pending_events{sink="http"} 0.0' in text
    assert "kong_credits_forwarder_delivery_seconds_bucket" in text


def test_each_forwarder_has_its_own_registry() -> None:
    first, second = ForwarderMetrics("http"), ForwarderMetrics("http")
    first.retry(3)
    assert (first.tally.retried, second.tally.retried) == (3, 0)
    assert FAST.max_s < 1
