"""cli.py: grant, balance and ledger as users type them; bad input exits 2 and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.keys import SHARDS_KEY


@pytest.fixture
def cli(r, redis_url):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [*args], env={"KONG_CREDITS_REDIS_URL": redis_url})

    return invoke


def test_grant_then_balance_json(cli):
    assert cli("grant", "acme", "250", "--grant-id", "pay_1").exit_code == 0
    result = cli("balance", "acme", "--json")
    assert result.exit_code == 0
    view = json.loads(result.output)
    assert (view["wallet"], view["balance"]) == ("acme", 250)
    assert [(g["id"], g["amount"], g["remaining"]) for g in view["grants"]] == [
        ("pay_1", 250, 250)]


def test_repeated_grant_id_changes_nothing(cli):
    assert cli("grant", "acme", "100", "--grant-id", "webhook-7").exit_code == 0
    again = cli("grant", "acme", "100", "--grant-id", "webhook-7")
    assert again.exit_code == 0 and "nothing changed" in again.output
    assert json.loads(cli("balance", "acme", "--json").output)["balance"] == 100


def test_unknown_wallet_has_balance_zero(cli):
    view = json.loads(cli("balance", "ghost", "--json").output)
    assert (view["balance"], view["grants"]) == (0, [])


@pytest.mark.parametrize("amount", ["0", "-5", "1.5", "1e3", "ten", "", "true",
                                    "1000000000000001", "99999999999999999999999"])
def test_bad_amount_exits_2_and_writes_nothing(cli, r, amount):
    result = cli("grant", "acme", "--", amount)
    assert result.exit_code == 2, result.output
    assert "amount" in result.output
    assert set(r.keys()) <= {SHARDS_KEY}  # no data; at most the deployment's shard count


@pytest.mark.parametrize("args", [
    ["grant", "acme", "5", "--bogus"],
    ["grant", "acme"],
    ["grant", "acme", "5", "--priority", "-1"],
    ["grant", "acme", "5", "--expires-at", "tomorrow"],
    ["grant", "acme", "5", "--expires-at", "2020-01-01T00:00:00Z"],
    ["grant", "acme", "5", "--expires-at", "2099-01-01T00:00:00"],
    ["grant", " acme", "5"],
    ["ledger", "acme", "--limit", "0"],
])
def test_bad_options_exit_2_and_write_nothing(cli, r, args):
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert set(r.keys()) <= {SHARDS_KEY}  # no data; at most the deployment's shard count


def test_ledger_lists_grants_and_charges_newest_first(cli, r, redis_url):
    from kong_credits.engine import AuthorizeRequest, Engine

    cli("grant", "acme", "10", "--grant-id", "g1")
    Engine(r).authorize(AuthorizeRequest("req-1", "acme", "alice", 4))
    entries = json.loads(cli("ledger", "acme", "--json").output)
    assert [(e["type"], e["ref"], e["amount"], e["balance"]) for e in entries] == [
        ("charge", "req-1", -4, 6), ("grant", "g1", 10, 10)]
    assert cli("ledger", "acme", "--limit", "1", "--json").output.count('"type"') == 1


@pytest.mark.parametrize("args", [["balance", "acme"], ["grant", "acme", "5"],
                                  ["ledger", "acme"], ["budget", "acme", "--daily-cap", "5"]])
def test_redis_down_is_a_clear_error(args):
    result = CliRunner().invoke(main, [*args, "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert "Redis unavailable" in result.output and result.exception.__class__ is SystemExit


def test_console_script_is_installed(redis_url, r):
    env = {**os.environ, "KONG_CREDITS_REDIS_URL": redis_url}
    exe = os.path.join(os.path.dirname(sys.executable), "kong-credits")
    done = subprocess.run([exe, "grant", "acme", "7"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([exe, "balance", "acme", "--json", "--redis-url", redis_url],
                          capture_output=True, text=True, timeout=30)
    assert json.loads(done.stdout)["balance"] == 7


def test_demo_shows_every_outcome(redis_url, r, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    result = CliRunner().invoke(main, ["demo", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    assert "20 requests: 12 x 200, 1 x 401, 4 x 402, 3 x 429" in result.output
    assert "12 billable events" in result.output
    assert wallets.balance(r, "team-blue").balance == 18  # 30 - 12 settled from the header
    # erin's plan (config/pricing.yaml): 30 a month, 11 credits a ~4.6 KB export, then on
    # credit; the last export finds the overage spent: 402
    erin = wallets.balance(r, "erin")
    assert (erin.balance, erin.overdraft, erin.refused_credits) == (-14, 14, 1)
