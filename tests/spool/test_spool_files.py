"""spool/segments.py, store.py and replay.py on real files and a real Redis: line format,
locks between processes, the size bound, and replays cut short at any point."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from prometheus_client import generate_latest

from kong_credits import wallets
from kong_credits.engine import AUTHORIZE, Decision, run_script
from kong_credits.errors import InvalidInput, RedisUnavailable
from kong_credits.keys import WalletKeys
from kong_credits.money import MAX_EXPIRY_MS
from kong_credits.pluginserver_metrics import METRICS
from kong_credits.rated_event import RatedEvent
from kong_credits.spool import FsyncPolicy, SettledPrice, Spool, SpooledRequest
from kong_credits.spool import replay as replay_module
from kong_credits.spool.metrics import SPOOL_METRICS
from kong_credits.spool.records import decode_line, encode_line
from kong_credits.spool.replay import Pace, replay_directory
from kong_credits.spool.segments import (
    lock_segments,
    locked_segments,
    segment_paths,
    spool_directory,
)
from kong_credits.spool.store import SpoolRegistry

URL = "redis://:s3cret@127.0.0.1:6399/0"
BIG = 64 * 1024 * 1024


def request(n: int, wallet: str = "w", cost: int = 2, **fields: Any) -> SpooledRequest:
    return SpooledRequest(request_id=f"req-{n}", wallet=wallet, consumer="c", cost=cost,
                          at_ms=1_767_225_600_000 + n, **fields)


def new_spool(tmp_path: Path) -> Spool:
    return Spool(spool_directory(tmp_path, URL), URL)


class Charges:
    """authorize.lua on a real Redis; `fail_after` calls, Redis "goes away" (the calls
    after it raise RedisUnavailable, as the plugin's client does)."""

    def __init__(self, client: redis.Redis, fail_after: int | None = None) -> None:
        self.client = client
        self.fail_after = fail_after
        self.calls = 0

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Decision:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RedisUnavailable("ConnectionError: Redis went away (test)")
        return Decision.from_reply(run_script(self.client, AUTHORIZE, keys, args))


def replay(directory: Path, charges: Charges) -> Any:
    return asyncio.run(replay_directory(directory, charges))


def events(r: redis.Redis, wallet: str = "w") -> list[str]:
    return [f["event_id"] for _, f in r.xrange(WalletKeys(wallet).events)
            if f["wallet"] == wallet]


def test_the_directory_names_the_redis_without_its_password(tmp_path):
    spool = new_spool(tmp_path)
    assert spool.append(request(1), max_bytes=BIG, fsync=FsyncPolicy.ALWAYS)
    spool.seal()
    assert "s3cret" not in str(spool.directory)
    assert (spool.directory / "redis").read_text().strip() == "redis://:***@127.0.0.1:6399/0"
    assert spool.directory.stat().st_mode & 0o777 == 0o700


def test_each_record_is_charged_once_in_order_and_the_segment_removed(tmp_path, r):
    wallets.grant(r, "w", 100)
    spool = new_spool(tmp_path)
    for n in range(40):
        assert spool.append(request(n), max_bytes=BIG, fsync=FsyncPolicy.INTERVAL)
    spool.seal()
    outcome = replay(spool.directory, Charges(r))
    assert (outcome.replayed, outcome.failed) == (40, "")
    assert events(r) == [f"req-{n}" for n in range(40)]
    assert wallets.balance(r, "w").balance == 20
    assert segment_paths(spool.directory) == []


@pytest.mark.parametrize("fail_after", [0, 1, 31, 32, 33, 70])
def test_a_replay_cut_short_anywhere_resumes_and_charges_nothing_twice(tmp_path, r, fail_after):
    wallets.grant(r, "w", 1000)
    spool = new_spool(tmp_path)
    for n in range(80):
        spool.append(request(n), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    spool.seal()
    first = replay(spool.directory, Charges(r, fail_after))
    assert first.failed and segment_paths(spool.directory)
    assert len(events(r)) >= min(fail_after, 80) - 32  # a failed batch keeps no progress
    second = replay(spool.directory, Charges(r))
    assert second.failed == ""
    assert events(r) == [f"req-{n}" for n in range(80)]
    assert wallets.balance(r, "w").balance == 1000 - 160


def test_a_lost_progress_file_costs_work_not_money(tmp_path, r):
    wallets.grant(r, "w", 1000)
    spool = new_spool(tmp_path)
    for n in range(50):
        spool.append(request(n), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    spool.seal()
    replay(spool.directory, Charges(r, fail_after=40))
    for done in spool.directory.glob("*.done"):
        done.unlink()  # as if the crash came before the progress file was written
    again = Charges(r)
    replay(spool.directory, again)
    assert again.calls == 50  # everything sent again ...
    assert len(events(r)) == 50 and wallets.balance(r, "w").balance == 900  # ... charged once


def test_a_torn_last_line_is_skipped_and_counted(tmp_path, r):
    wallets.grant(r, "w", 100)
    spool = new_spool(tmp_path)
    spool.append(request(1), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    spool.seal()
    [segment] = segment_paths(spool.directory)
    with segment.open("ab") as file:
        file.write(b'{"kind":"request","request_id":"req-2","wal')  # an OS crash mid-write
    before = SPOOL_METRICS.unreadable
    assert replay(spool.directory, Charges(r)).replayed == 1
    assert SPOOL_METRICS.unreadable == before + 1
    assert events(r) == ["req-1"]


def test_a_metered_request_is_charged_its_settled_price_or_after_a_while_its_estimate(
        tmp_path, r):
    wallets.grant(r, "w", 100)
    spool = new_spool(tmp_path)
    old = SpooledRequest("req-old", "w", "c", 10, at_ms=1_000, metered=True)
    settled = request(1, cost=10, metered=True)
    fresh = SpooledRequest("req-fresh", "w", "c", 10, metered=True,
                           at_ms=time.time_ns() // 1_000_000)
    price = SettledPrice("req-1", 3, status=201,
                         details={"price_request": 1, "price_response_kb": 2, "proxy_ms": 40})
    for record in (old, settled, price, fresh):
        spool.append(record, max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    spool.seal()
    outcome = replay(spool.directory, Charges(r))
    assert (outcome.replayed, outcome.waiting) == (2, True)  # the fresh one waits its price
    spool.append(SettledPrice("req-fresh", 4), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    spool.seal()
    assert replay(spool.directory, Charges(r)).replayed == 1
    found = {f["event_id"]: RatedEvent.from_fields(f) for _, f in
             r.xrange(WalletKeys("w").events)}
    assert {id_: e.cost for id_, e in found.items()} == {"req-old": 10, "req-1": 3,
                                                         "req-fresh": 4}
    # As a live settle's event: the estimate held, the status, the price's parts.
    assert (found["req-1"].reserved, found["req-1"].status, found["req-1"].details) == (
        10, 201, {"price_request": 1, "price_response_kb": 2, "proxy_ms": 40})
    assert (found["req-old"].reserved, found["req-old"].status) == (10, None)


@pytest.mark.parametrize("fields", [
    {"status": "200"}, {"status": 42}, {"details": {"cost": 0}}, {"details": {"proxy_ms": -1}},
    {"details": {"price_request": 1.5}}, {"details": ["price_request", 1]},
])
def test_a_settled_price_line_with_odd_fields_is_unreadable_not_charged(fields):
    line = encode_line(SettledPrice("req-1", 3)).replace(
        b"}\n", b"," + json.dumps(fields)[1:].encode() + b"\n")
    line = line.replace(b'"status":null,', b"").replace(b'"details":null,', b"")
    with pytest.raises(InvalidInput):
        decode_line(line)


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_segment_another_process_holds_is_left_to_it_until_it_exits(tmp_path, r):
    wallets.grant(r, "w", 100)
    spool = new_spool(tmp_path)
    spool.append(request(1), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    spool.seal()
    [segment] = segment_paths(spool.directory)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(segment)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert lock_segments(spool.directory) == []
        assert replay(spool.directory, Charges(r)).replayed == 0
    finally:
        holder.communicate(b"", timeout=10)  # its exit releases the lock, as a crash does
    assert replay(spool.directory, Charges(r)).replayed == 1
    assert events(r) == ["req-1"]


def test_the_bound_counts_every_process_segments_and_spares_settled_prices(tmp_path):
    spool = new_spool(tmp_path)
    assert spool.append(request(1), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    line = spool.size_bytes
    other = new_spool(tmp_path)  # another process's spool of the same Redis
    assert other.measure() == line
    before = SPOOL_METRICS.dropped
    assert not other.append(request(2), max_bytes=line + line // 2, fsync=FsyncPolicy.NEVER)
    assert SPOOL_METRICS.dropped == before + 1
    assert other.append(SettledPrice("req-1", 5), max_bytes=0, fsync=FsyncPolicy.NEVER)
    spool.seal()
    other.seal()


def test_the_metrics_count_spooled_replayed_dropped_and_bytes(tmp_path, r):
    spool = new_spool(tmp_path)
    spool.append(request(1), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    text = generate_latest(METRICS.registry).decode()
    for name in ("spooled_total", "replayed_total", "dropped_total", "overdrawn_total"):
        assert f"kong_credits_spool_{name} " in text
    bytes_line = next(x for x in text.splitlines() if x.startswith("kong_credits_spool_bytes "))
    assert float(bytes_line.split()[1]) >= spool.size_bytes > 0
    spool.seal()


def test_the_background_pace_yields_to_live_traffic():
    live = [0]
    pace = Pace(lambda: live[0], now=100.0)
    # The first window, before any live rate is known: the floor (50/s) and the 5% share.
    assert pace.wait_s(16, 0.002, now=100.1) == pytest.approx(16 / 50 - 0.002)
    live[0] = 2000  # 2,000 live requests/s: at most 100 spooled/s
    assert pace.wait_s(16, 0.002, now=101.0) == pytest.approx(16 / 100 - 0.002)
    live[0] = 40_000  # 38,000/s: 1,900/s, and now the 5% share (19 x 10 ms) is the longer
    assert pace.wait_s(16, 0.010, now=102.0) == pytest.approx(0.19)
    # No live request for a second: only the share holds the replay back.
    assert pace.wait_s(16, 0.002, now=103.0) == pytest.approx(0.038)
    assert Pace(share=1.0).wait_s(16, 0.002, now=0.0) == 0.0  # the CLI: full speed


def test_fsync_always_syncs_before_the_request_passes_off_the_event_loop(tmp_path):
    spool = new_spool(tmp_path)
    assert asyncio.run(spool.append_durably(request(1), max_bytes=BIG,
                                            fsync=FsyncPolicy.ALWAYS))
    [segment] = segment_paths(spool.directory)
    assert segment.read_bytes().count(b"\n") == 1
    asyncio.run(spool.seal_off_loop())  # closed: unlocked, ready for the replay
    with locked_segments(spool.directory) as [sealed]:
        assert sealed.lines[0][1].startswith(b'{"request_id":"req-1"')


def test_the_first_live_answer_after_spooling_wakes_the_replay_once(tmp_path):
    woken: list[int] = []
    spool = Spool(spool_directory(tmp_path, URL), URL, lambda: woken.append(1))
    spool.note_answered()
    assert woken == []  # nothing spooled: nothing to hurry
    for n in range(3):
        spool.append(request(n), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
    for _ in range(3):
        spool.note_answered()
    assert (woken, spool.answered) == ([1], 4)
    spool.append(request(4), max_bytes=BIG, fsync=FsyncPolicy.NEVER)  # Redis away again
    spool.note_answered()
    assert woken == [1, 1]
    spool.seal()


def test_a_woken_replay_runs_without_waiting_for_its_interval(tmp_path, r, monkeypatch):
    """Redis answers a live call again: the replay (and its pins) starts at once, not at its
    next round (here an hour away)."""
    monkeypatch.setattr(replay_module, "INTERVAL_S", 3600.0)
    wallets.grant(r, "w", 100)

    async def main() -> None:
        registry = SpoolRegistry()
        registry.configure(tmp_path)
        spool = registry.get(URL, SimpleNamespace(authorize_packed=Charges(r)))
        await asyncio.sleep(0)  # the replay task waits for its first round
        assert spool.append(request(1), max_bytes=BIG, fsync=FsyncPolicy.NEVER)
        spool.note_answered()
        async with asyncio.timeout(30):
            while segment_paths(spool.directory) or spool.writing:
                await asyncio.sleep(0.01)

    asyncio.run(main())  # which cancels the replay task as it returns
    assert events(r) == ["req-1"]


@pytest.mark.parametrize(("at_ms", "readable"), [
    (1, True), (MAX_EXPIRY_MS, True), (MAX_EXPIRY_MS + 1, False), (2**63, False), (0, False)])
def test_a_request_line_carries_a_time_up_to_the_year_9999(at_ms, readable):
    """authorize.lua formats the time it reads from the line as a whole number: a time
    past the year 9999 (corruption) is skipped and counted, never charged."""
    line = encode_line(replace(request(1), at_ms=at_ms))
    if readable:
        assert decode_line(line) == replace(request(1), at_ms=at_ms)
    else:
        with pytest.raises(InvalidInput):
            decode_line(line)
