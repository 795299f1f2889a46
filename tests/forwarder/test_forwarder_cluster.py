"""The forwarder on Redis Cluster: one node holding every slot still refuses commands whose
keys span slots (CROSSSLOT), so it shows that every call stays within one shard's slot."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis
from billing_recorder import BillingRecorder, sink_args
from click.testing import CliRunner
from event_source import assert_billed_once, produce

from kong_credits import wallets
from kong_credits.alerts_cli import alerts_command
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.forwarder_cli import dlq_command, forwarder_command
from kong_credits.keys import event_streams
from kong_credits.redis_server import _free_port, find_redis_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    port, bus_port = _free_port(), _free_port()  # the bus port defaults to port + 10000
    with tempfile.TemporaryDirectory(prefix="kong-credits-cluster-") as workdir:
        process = subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
             "--cluster-config-file", "nodes.conf",
             "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                    break
                except redis.ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            while client.cluster("info")["cluster_state"] != "ok":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


def lapsed_hold(url: str) -> str:
    """A held request whose settle never comes: the forwarder settles it at its estimate."""
    client = redis.Redis.from_url(url)
    wallets.grant(client, "held-wallet", 100)
    decision = Engine(client, hold_ms=1).authorize(
        AuthorizeRequest("lapsed-1", "held-wallet", "c", 7, hold=True))
    assert decision.admitted
    client.close()
    time.sleep(0.01)
    return "lapsed-1"


def test_a_single_call_over_all_streams_is_refused_on_a_cluster(cluster_url: str) -> None:
    client = redis.Redis.from_url(cluster_url)
    with pytest.raises(redis.ResponseError, match="same slot"):  # CROSSSLOT
        client.xread({"kc:{s0}:events": "0", "kc:{s1}:events": "0"})
    client.close()


def test_cluster_mode_forwards_and_dead_letters_slot_by_slot(cluster_url: str) -> None:
    produced = produce(cluster_url, 400, bad=2)
    lapsed = lapsed_hold(cluster_url)
    with BillingRecorder("http") as backend:
        backend.chaos(0.2, ["500", "drop-after"], seed=1)
        result = CliRunner().invoke(forwarder_command, [
            *sink_args("http", backend.url), "--cluster", "--drain", "--claim-idle-ms",
            "200", "--backoff-base-ms", "1", "--backoff-max-ms", "10", "--retain-s", "0",
            "--redis-url", cluster_url])
        assert result.exit_code == 0, result.output
    produced.events[lapsed] = ("held-wallet", 7)  # swept at its estimate, then delivered
    assert_billed_once(backend, produced, refused=produced.ids(bad=True))
    node = redis.Redis.from_url(cluster_url)  # one node holds every slot
    assert sum(node.xlen(stream) for stream in event_streams()) == 0  # trimmed slot by slot
    node.close()
    listed = CliRunner().invoke(dlq_command, ["list", "--cluster", "--redis-url", cluster_url])
    assert listed.output.splitlines()[-1] == "2 dead letter(s)"


def test_a_cluster_url_needs_no_flag_and_serves_alerts_too(cluster_url: str) -> None:
    """`redis+cluster://` is what `--cluster` says: the forwarder, dlq and alerts read shard
    by shard (alerts, which had no --cluster, could not read a cluster's streams before)."""
    from test_alerts_delivery import SECRET, Receiver, make_alerts

    seeds = cluster_url.replace("redis://", "redis+cluster://")
    node = redis.Redis.from_url(cluster_url, decode_responses=True)
    node.flushall()
    produced = produce(cluster_url, 48)
    fast = ["--drain", "--claim-idle-ms", "200", "--backoff-base-ms", "1",
            "--backoff-max-ms", "10", "--redis-url", seeds]
    with BillingRecorder("http") as backend:
        result = CliRunner().invoke(forwarder_command, [*sink_args("http", backend.url), *fast])
        assert result.exit_code == 0, result.output
    assert_billed_once(backend, produced)
    listed = CliRunner().invoke(dlq_command, ["list", "--redis-url", seeds])
    assert listed.output.splitlines()[-1] == "0 dead letter(s)", listed.output
    alert_ids = make_alerts(node, ["alerting"])  # their events go unforwarded: no matter
    node.close()
    receiver = Receiver([])
    try:
        result = CliRunner().invoke(alerts_command, [
            "--url", receiver.url, "--hmac-secret", SECRET, "--block-ms", "50", *fast])
    finally:
        receiver.close()
    assert result.exit_code == 0, result.output
    assert {alert["id"] for alert in receiver.accepted} == alert_ids
