"""`kong-credits usage` and `usage events`: output forms, defaults from the environment,
exit 2 on bad input; and concurrent writers on one store."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from kong_credits.cli import main
from kong_credits.rated_event import RatedEvent
from kong_credits.usage import Store, open_store

NOW = datetime.now(UTC)


def recent(n: int, wallet: str, cost: int, route: str = "r1", minutes_ago: int = 5
           ) -> RatedEvent:
    at = NOW - timedelta(minutes=minutes_ago)
    return RatedEvent(event_id=f"cli-{n}", wallet=wallet, cost=cost,
                      timestamp_ms=int(at.timestamp() * 1000), consumer="c", route=route,
                      method="POST", path="/x")


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["usage", *args], env=env)
    return result.exit_code, result.output


@pytest.fixture
def filled(store: Store) -> Store:
    store.ingest([recent(1, "acme", 5), recent(2, "acme", 7, route="r2"),
                  recent(3, "team/ann", 1)])
    return store


def test_json_csv_and_table_show_the_same_rows(filled: Store, usage_url: str) -> None:
    code, out = run("acme", "--by", "route", "--json", "--store", usage_url)
    assert code == 0, out
    document = json.loads(out)
    assert list(document) == ["bucket", "since", "until", "rows"]
    assert [(r["route"], r["requests"], r["credits"]) for r in document["rows"]] == [
        ("r2", 1, 7), ("r1", 1, 5)]
    code, out = run("acme", "--by", "route", "--csv", "--store", usage_url)
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["start", "route", "requests", "credits"]
    assert [r[1:] for r in rows[1:]] == [["r2", "1", "7"], ["r1", "1", "5"]]
    code, out = run("acme", "--by", "route", "--store", usage_url)
    lines = out.splitlines()
    assert code == 0 and "start" in lines[1] and "route" in lines[1] and "credits" in lines[1]
    assert lines[-1] == "2 row(s)"


def test_the_store_comes_from_the_environment(filled: Store, usage_url: str) -> None:
    code, out = run("--json", env={"KONG_CREDITS_USAGE_URL": usage_url})
    assert code == 0 and sum(r["credits"] for r in json.loads(out)["rows"]) == 13


def test_events_newest_first_as_json_and_table(store: Store, usage_url: str) -> None:
    store.ingest([recent(n, "acme", n, minutes_ago=10 - n) for n in range(3)])
    code, out = run("events", "acme", "--json", "--store", usage_url)
    assert code == 0 and [e["id"] for e in json.loads(out)] == ["cli-2", "cli-1", "cli-0"]
    code, out = run("events", "acme", "--route", "r1", "--limit", "1", "--store", usage_url)
    assert code == 0 and "cli-2" in out and "cli-1" not in out


@pytest.mark.parametrize("args, message", [
    (["--by", "colour"], "unknown dimension"),
    (["--since", "1h", "--until", "2h"], "before --since"),
    (["--since", "tomorrow"], "ISO 8601"),
    (["--bucket", "week"], "week"),
    (["--json", "--csv"], "exclude"),
    (["--members"], "needs a WALLET"),
    (["events"], "Missing argument"),
])
def test_bad_input_exits_2_with_a_message(filled: Store, usage_url: str, args: list[str],
                                          message: str) -> None:
    code, out = run(*args, "--store", usage_url)
    assert code == 2 and message in out, out


def test_an_unreadable_store_exits_2_without_its_password(tmp_path, postgres) -> None:
    code, out = run("--store", f"sqlite:///{tmp_path}/none.db")
    assert code == 2 and "no usage store" in out
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    code, out = run("--store", f"sqlite:///{tmp_path}/garbage.db")
    assert code == 2 and "garbage.db" in out
    code, out = run("--store", postgres.url().replace("pg-secret", "bad-secret"))
    assert code == 2 and "secret" not in out and "***" in out


def test_concurrent_writers_with_overlapping_batches_count_each_event_once(
        usage_url: str, store: Store) -> None:
    events = [recent(n, f"w{n % 7}", n % 5) for n in range(2000)]
    writers = [open_store(usage_url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for start in range(index * 100, 2000, 150):
                writers[index].ingest(events[start:start + 300])
            writers[index].ingest(events)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for writer in writers:
        writer.close()
    assert not errors
    for table in ("usage_minute", "usage_hour", "usage_day"):
        [(requests, credits)] = store.rows(
            f"SELECT CAST(SUM(requests) AS BIGINT), CAST(SUM(credits) AS BIGINT) FROM {table}")
        assert (int(requests), int(credits)) == (2000, sum(n % 5 for n in range(2000)))


@pytest.mark.parametrize("args, message", [
    (["--retention", "raw=7y"], "retention span"),
    (["--retention", "week=7d"], "LEVEL=SPAN"),
    (["--store", "mysql://u:hunter2@h/db"], "must start with"),
])
def test_the_usage_forwarder_refuses_bad_options_with_exit_2(args: list[str],
                                                             message: str) -> None:
    result = CliRunner().invoke(main, ["forwarder", "--sink", "usage", "--drain", *args,
                                       "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "hunter2" not in result.output
