"""The forwarder, dlq and alerts on the session's Redis Cluster (3 masters + 3 replicas,
conftest's `cluster`): every call stays within one shard's slot (a node refuses keys that
span slots: CROSSSLOT), and the event streams are read shard by shard from their masters,
by seed nodes (`redis+cluster://`) or one node and `--cluster`. The plugin on the same
cluster, with a master killed mid-traffic: tests/test_plugin_cluster.py."""

from __future__ import annotations

import time

import pytest
import redis
from billing_recorder import BillingRecorder, sink_args
from click.testing import CliRunner
from event_source import assert_billed_once, produce
from redis_cluster import LocalCluster

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.forwarder.alerts_cli import alerts_command
from kong_credits.forwarder.cli import dlq_command, forwarder_command
from kong_credits.keys import event_streams

pytestmark = pytest.mark.integration


def lapsed_hold(cluster: LocalCluster) -> str:
    """A held request whose settle never comes: the forwarder settles it at its estimate."""
    client = cluster.client()
    wallets.grant(client, "held-wallet", 100)
    decision = Engine(client, hold_ms=1).authorize(
        AuthorizeRequest("lapsed-1", "held-wallet", "c", 7, hold=True))
    assert decision.admitted
    client.close()
    time.sleep(0.01)
    return "lapsed-1"


def test_a_single_call_over_all_streams_is_refused_on_a_cluster(cluster: LocalCluster) -> None:
    node = cluster.node(cluster.masters()[0])
    with pytest.raises(redis.ResponseError, match="same slot"):  # CROSSSLOT
        node.xread({"kc:{s0}:events": "0", "kc:{s1}:events": "0"})
    node.close()


def test_cluster_mode_forwards_and_dead_letters_slot_by_slot(cluster: LocalCluster) -> None:
    """One node's `redis://` URL and `--cluster`: the forwarder finds the other masters."""
    produced = produce(cluster.url, 400, bad=2)
    lapsed = lapsed_hold(cluster)
    seed = cluster.seed_url(cluster.masters()[0])
    with BillingRecorder("http") as backend:
        backend.chaos(0.2, ["500", "drop-after"], seed=1)
        result = CliRunner().invoke(forwarder_command, [
            *sink_args("http", backend.url), "--cluster", "--drain", "--claim-idle-ms",
            "200", "--backoff-base-ms", "1", "--backoff-max-ms", "10", "--retain-s", "0",
            "--redis-url", seed])
        assert result.exit_code == 0, result.output
    produced.events[lapsed] = ("held-wallet", 7)  # swept at its estimate, then delivered
    assert_billed_once(backend, produced, refused=produced.ids(bad=True))
    client = cluster.client()
    assert sum(client.xlen(stream) for stream in event_streams()) == 0  # trimmed per slot
    client.close()
    listed = CliRunner().invoke(dlq_command, ["list", "--cluster", "--redis-url", seed])
    assert listed.output.splitlines()[-1] == "2 dead letter(s)"


def test_a_cluster_url_needs_no_flag_and_serves_alerts_too(cluster: LocalCluster) -> None:
    """`redis+cluster://` is what `--cluster` says: the forwarder, dlq and alerts read shard
    by shard (alerts, which had no --cluster, could not read a cluster's streams before)."""
    from test_alerts_delivery import SECRET, Receiver, make_alerts

    produced = produce(cluster.url, 48)
    fast = ["--drain", "--claim-idle-ms", "200", "--backoff-base-ms", "1",
            "--backoff-max-ms", "10", "--redis-url", cluster.url]
    with BillingRecorder("http") as backend:
        result = CliRunner().invoke(forwarder_command, [*sink_args("http", backend.url), *fast])
        assert result.exit_code == 0, result.output
    assert_billed_once(backend, produced)
    listed = CliRunner().invoke(dlq_command, ["list", "--redis-url", cluster.url])
    assert listed.output.splitlines()[-1] == "0 dead letter(s)", listed.output
    client = cluster.client()
    alert_ids = make_alerts(client, ["alerting"])  # their events go unforwarded: no matter
    client.close()
    receiver = Receiver([])
    try:
        result = CliRunner().invoke(alerts_command, [
            "--url", receiver.url, "--hmac-secret", SECRET, "--block-ms", "50", *fast])
    finally:
        receiver.close()
    assert result.exit_code == 0, result.output
    assert {alert["id"] for alert in receiver.accepted} == alert_ids
