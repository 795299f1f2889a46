"""Dead letters: listed with their reason, replayed after the cause is fixed, never dropped."""

from __future__ import annotations

import json

import redis
from billing_recorder import BillingRecorder, sink_args
from click.testing import CliRunner, Result
from event_source import assert_billed_once, forward, produce

from kong_credits.forwarder.cli import dlq_command
from kong_credits.forwarder.dlq import list_dead_letters
from kong_credits.forwarder.group_names import group_name


def dlq(*args: str) -> Result:
    return CliRunner().invoke(dlq_command, list(args),
                              env={"KONG_CREDITS_SINK_API_KEY": None})


def test_list_replay_refused_again_then_delivered(redis_url: str, r: redis.Redis) -> None:
    produced = produce(redis_url, 60, bad=3)
    bad = produced.ids(bad=True)
    with BillingRecorder("lago") as backend:
        forward("lago", r, backend)
        listed = dlq("list", "--redis-url", redis_url)
        assert listed.exit_code == 0, listed.output
        assert listed.output.splitlines()[-1] == "3 dead letter(s)"
        letters = json.loads(dlq("list", "--json", "--redis-url", redis_url).output)
        assert {d["event"]["event_id"] for d in letters} == bad
        assert all("422" in d["reason"] and d["group"] == "forwarder:lago" for d in letters)

        still = dlq("retry", *sink_args("lago", backend.url), "--redis-url", redis_url)
        assert still.exit_code == 1
        assert "0 delivered, 3 refused again" in still.output
        assert [d.attempts for d in list_dead_letters(r)] == [1, 1, 1]

        backend.refuse_bad = False
        done = dlq("retry", *sink_args("lago", backend.url), "--redis-url", redis_url)
        assert done.exit_code == 0, done.output
        assert "3 delivered, 0 refused again" in done.output
    assert list_dead_letters(r) == []
    assert_billed_once(backend, produced)


def test_retry_by_event_id_and_group_filter(redis_url: str, r: redis.Redis) -> None:
    produce(redis_url, 20, bad=2)
    with BillingRecorder("orb") as backend:
        forward("orb", r, backend)
        first, second = list_dead_letters(r)
        assert list_dead_letters(r, group="forwarder:lago") == []
        backend.refuse_bad = False
        result = dlq("retry", *sink_args("orb", backend.url),
                     "--event-id", first.fields["event_id"], "--redis-url", redis_url)
        assert result.exit_code == 0, result.output
    assert list_dead_letters(r) == [second]
    assert first.fields["event_id"] in backend.stored


def test_a_retry_that_cannot_reach_the_backend_keeps_the_letters(redis_url: str,
                                                                 r: redis.Redis) -> None:
    produce(redis_url, 10, bad=1)
    with BillingRecorder("http") as backend:
        forward("http", r, backend)
        backend.refuse_bad = False
        backend.chaos(1.0, ["500"])
        result = dlq("retry", *sink_args("http", backend.url), "--redis-url", redis_url)
    assert result.exit_code == 1
    assert "1 not delivered (HTTP 500" in result.output
    [letter] = list_dead_letters(r, group=group_name("http"))
    assert letter.attempts == 0
