"""`kong-credits spool status|replay -p PREFIX`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.keys import WalletKeys
from kong_credits.spool import FsyncPolicy, Spool, SpooledRequest
from kong_credits.spool.segments import segment_paths, spool_directory


def spool_two(prefix: str, redis_url: str) -> Spool:
    spool = Spool(spool_directory(prefix, redis_url), redis_url)
    for n, cost in ((1, 3), (2, 4)):
        spool.append(SpooledRequest(f"req-{n}", "w", "c", cost, at_ms=1_767_225_600_000),
                     max_bytes=1 << 20, fsync=FsyncPolicy.NEVER)
    return spool


def test_status_shows_what_waits_and_which_segment_a_server_holds(tmp_path):
    url = "redis://:s3cret@127.0.0.1:6399/0"
    spool = spool_two(str(tmp_path), url)  # open: held, as by a running plugin server
    shown = CliRunner().invoke(main, ["spool", "status", "-p", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "redis://:***@127.0.0.1:6399/0: 2 request(s) to charge" in shown.output
    assert "7 credits, oldest 2026-01-01T00:00:00+00:00, in use" in shown.output
    assert "s3cret" not in shown.output
    spool.seal()
    as_json = json.loads(CliRunner().invoke(
        main, ["spool", "status", "-p", str(tmp_path), "--json"]).output)
    [entry] = as_json
    assert (entry["requests"], entry["segments"][0]["in_use"]) == (2, False)


def test_status_of_an_empty_prefix(tmp_path):
    shown = CliRunner().invoke(main, ["spool", "status", "-p", str(tmp_path)])
    assert (shown.exit_code, shown.output) == (0, f"nothing spooled under {tmp_path}\n")


def test_replay_charges_once_and_leaves_a_held_segment_alone(tmp_path, r, redis_url):
    wallets.grant(r, "w", 100)
    held = spool_two(str(tmp_path), redis_url)
    args = ["spool", "replay", "-p", str(tmp_path), "--redis-url", redis_url]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "charged 0 spooled request(s)" in first.output
    assert "1 segment(s) in use by a running plugin server" in first.output
    held.seal()
    for _ in range(2):
        again = CliRunner().invoke(main, args)
        assert again.exit_code == 0, again.output
    assert segment_paths(spool_directory(str(tmp_path), redis_url)) == []
    assert r.xlen(WalletKeys("w").events) == 2
    assert wallets.balance(r, "w").balance == 93


def test_replay_with_a_malformed_url_exits_2_without_the_password(tmp_path):
    spool_two(str(tmp_path), "redis://:s3cret@host:bad/0").seal()
    done = CliRunner().invoke(main, ["spool", "replay", "-p", str(tmp_path),
                                     "--redis-url", "redis://:s3cret@host:bad/0"])
    assert done.exit_code == 2
    assert "s3cret" not in done.output


def test_replay_with_redis_down_exits_1_and_keeps_everything(tmp_path):
    url = "redis://127.0.0.1:1/0"
    spool_two(str(tmp_path), url).seal()
    done = CliRunner().invoke(main, ["spool", "replay", "-p", str(tmp_path),
                                     "--redis-url", url])
    assert done.exit_code == 1
    assert len(segment_paths(spool_directory(str(tmp_path), url))) == 1


def test_replay_of_nothing(tmp_path, redis_url):
    done = CliRunner().invoke(main, ["spool", "replay", "-p", str(tmp_path),
                                     "--redis-url", redis_url])
    assert (done.exit_code, done.output) == (0, "nothing spooled for this Redis\n")
