"""The number of shards: a deployment setting ($KONG_CREDITS_SHARDS), its layout on Redis
Cluster's slots, and the record in Redis that stops a process running with another count."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from redis.crc import key_slot
from test_alerts_delivery import SECRET, Receiver
from test_plugin_access import HostThread, upstream
from waits import wait_until

from kong_credits import keys, wallets
from kong_credits.cli import main
from kong_credits.engine import AuthorizeRequest
from kong_credits.errors import InvalidSetting, RedisUnavailable
from kong_credits.host import Host, credits_servers
from kong_credits.redis_pool import EngineCache
from kong_credits.redis_server import _free_port, find_redis_server
from kong_credits.shards import check_shards

sys.path.insert(0, str(Path(__file__).parent / "sinks"))
from billing_recorder import BillingRecorder, sink_args

LARGE_CLUSTER = 256
"""The count the README recommends for a large Redis Cluster, up to ~100 masters (Production
Redis: the number of shards)."""
FAST = ["--backoff-base-ms", "1", "--backoff-max-ms", "20", "--claim-idle-ms", "200",
        "--block-ms", "50", "--max-attempts", "3", "--log-level", "error"]


# --- the layout ----------------------------------------------------------------------------


def slot(tag: str) -> int:
    """The slot of every key carrying `{tag}`: Redis hashes only the tag."""
    return key_slot(tag.encode())


def redis_cli_create_split(masters: int) -> list[range]:
    """The slots `redis-cli --cluster create` gives each master (clusterManagerCommandCreate
    in redis-cli.c): 16384 / masters per master in single-precision floats, each range's end
    rounded with lround, the last master taking the rest."""
    def f32(x: float) -> float:
        return float(struct.unpack("f", struct.pack("f", x))[0])

    per_node, cursor, first, out = f32(keys.SLOTS / f32(masters)), 0.0, 0, []
    for i in range(masters):
        end = f32(f32(cursor + per_node) - 1)
        last = int(end + 0.5)  # lround of a non-negative value
        if last > keys.SLOTS or i == masters - 1:
            last = keys.SLOTS - 1
        out.append(range(first, max(last, first) + 1))
        first = max(last, first) + 1
        cursor = f32(cursor + per_node)
    return out


def shards_per_master(shards: int, masters: int) -> list[int]:
    owner = {s: m for m, slots in enumerate(redis_cli_create_split(masters)) for s in slots}
    counts = Counter(owner[slot(tag)] for tag in keys.shard_tags(shards))
    return [counts[m] for m in range(masters)]


def test_the_split_is_redis_clis_as_printed() -> None:
    """`Master[i] -> Slots a - b` as redis-cli 7 prints them for 3 and 6 masters."""
    assert [(r.start, r.stop - 1) for r in redis_cli_create_split(3)] == [
        (0, 5460), (5461, 10922), (10923, 16383)]
    assert [(r.start, r.stop - 1) for r in redis_cli_create_split(6)] == [
        (0, 2730), (2731, 5460), (5461, 8191), (8192, 10922), (10923, 13652), (13653, 16383)]
    split = redis_cli_create_split(100)
    assert sum(map(len, split)) == keys.SLOTS and split[-1].stop == keys.SLOTS
    assert {len(r) for r in split} == {163, 164}


@pytest.mark.parametrize("masters", [3, 6, 100])
def test_the_large_cluster_setting_spreads_shards_within_1_5x_of_the_mean(masters: int) -> None:
    counts = shards_per_master(LARGE_CLUSTER, masters)
    mean = LARGE_CLUSTER / masters
    assert sum(counts) == LARGE_CLUSTER
    assert max(counts) <= 1.5 * mean and min(counts) >= mean / 1.5, counts
    # In fact each master holds its share rounded down or up, at most one shard apart:
    assert max(counts) - min(counts) <= 1


def test_the_historical_sixteen_spread_unevenly() -> None:
    """Why the default is not the cluster setting: with 6 masters the busiest owns 4 shards
    and the quietest 2 (issue 13), and 100 masters leave most with none."""
    assert (max(shards_per_master(16, 6)), min(shards_per_master(16, 6))) == (4, 2)
    assert shards_per_master(16, 100).count(0) > 80


def test_sixteen_keeps_the_tags_of_earlier_versions() -> None:
    assert keys.shard_tags(16) == [f"s{i}" for i in range(16)]
    if keys.SHARDS == 16:  # this process's layout: the keys earlier versions wrote
        assert keys.event_stream(7) == "kc:{s7}:events"
        assert keys.WalletKeys("acme").state.startswith("kc:{s")


@pytest.mark.parametrize("shards", [1, 2, 3, 17, 100, 1024, 16384])
def test_other_counts_put_each_tag_in_the_middle_of_its_slot_range(shards: int) -> None:
    tags = keys.shard_tags(shards)
    assert [slot(tag) for tag in tags] == [(2 * i + 1) * keys.SLOTS // (2 * shards)
                                           for i in range(shards)]
    assert all(tag.startswith(f"s{i}.") and "{" not in tag and "}" not in tag
               for i, tag in enumerate(tags))


def test_the_layout_never_changes() -> None:
    """Changing shard_tags moves every wallet of every deployment with that count."""
    def digest(tags: list[str]) -> str:
        return hashlib.sha256("\n".join(tags).encode()).hexdigest()[:16]

    assert keys.shard_tags(256)[:3] == ["s0.b5k", "s1.djX", "s2.dnO"]
    assert digest(keys.shard_tags(256)) == "79530be7e899df49"
    assert keys.shard_tags(1024)[:3] == ["s0.iof", "s1.c75", "s2.Du"]
    assert digest(keys.shard_tags(1024)) == "8ff654f69b26bb50"


def test_the_running_layout_keys_carry_its_tags() -> None:
    tags = keys.shard_tags(keys.SHARDS)
    for shard in range(keys.SHARDS):
        streams = [keys.event_stream(shard), keys.alert_stream(shard),
                   keys.dead_letter_stream(shard), keys.holds_index(shard)]
        assert {key_slot(s.encode()) for s in streams} == {slot(tags[shard])}
        assert keys.shard_of_stream(keys.event_stream(shard)) == shard


@pytest.mark.parametrize(("text", "count"), [("1", 1), ("16", 16), (" 1024 ", 1024),
                                              ("16384", 16384)])
def test_parse_shards(text: str, count: int) -> None:
    assert keys.parse_shards(text) == count


UNUSABLE_SETTINGS = ["0", "-1", "16385", "1e3", "sixteen", "١٦", "\uff11\uff16", "16\x00", "0x10",
                     "16 16", "+16", "000016", "9" * 5000, "0" * 5000 + "1"]
"""Non-integers, out of range, Unicode digits (Arabic-Indic, fullwidth), huge (past
Python's int() digit limit)."""


@pytest.mark.parametrize("text", ["", " ", *UNUSABLE_SETTINGS])
def test_parse_shards_refuses(text: str) -> None:
    with pytest.raises(InvalidSetting, match="KONG_CREDITS_SHARDS must be a whole number "
                                             "from 1 to 16384, not ") as refused:
        keys.parse_shards(text)
    assert len(str(refused.value)) < 200  # a huge value is not echoed whole


def kong_credits(*args: str, shards: int | str | None, redis_url: str,
                 timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """The console script in a process of its own, with $KONG_CREDITS_SHARDS set."""
    env = {k: v for k, v in os.environ.items() if k != keys.SHARDS_ENV}
    env["KONG_CREDITS_REDIS_URL"] = redis_url
    if shards is not None:
        env[keys.SHARDS_ENV] = str(shards)
    exe = Path(sys.executable).with_name("kong-credits")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def test_an_unusable_setting_stops_the_process_saying_why(redis_url: str, r) -> None:
    done = kong_credits("balance", "acme", shards="sixteen", redis_url=redis_url)
    assert done.returncode == 2
    assert done.stderr == ("Error: KONG_CREDITS_SHARDS must be a whole number from 1 to 16384, "
                           "not 'sixteen'\n")
    assert r.keys("*") == []


@pytest.mark.parametrize("setting", ["0", "-1", "99999999999999999999", "١٢", "abc",
                                     "0" * 5000 + "1"])
@pytest.mark.parametrize("command", [
    ["grant", "acme", "10"],
    ["forwarder", "--sink", "http", "--url", "http://127.0.0.1:9/"],
    ["alerts", "--url", "http://127.0.0.1:9/", "--hmac-secret", "s3cret"],
    ["pluginserver", "--dump-all-plugins"],  # Kong's query_cmd
    ["pluginserver", "--workers", "2", "--metrics-port", "0"],  # its start_cmd
], ids=["cli", "forwarder", "alerts", "pluginserver-query", "pluginserver-start"])
def test_every_process_refuses_an_unusable_setting_with_exit_2(
        setting: str, command: list[str], redis_url: str, r, tmp_path: Path) -> None:
    """No traceback, nothing written to Redis, no socket: one line naming the variable and
    the range it accepts."""
    if command[0] == "pluginserver":
        command = [*command, "-p", str(tmp_path)]
    done = kong_credits(*command, shards=setting, redis_url=redis_url, timeout_s=30)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith("Error: KONG_CREDITS_SHARDS must be a whole number from 1 to 16384")
    assert "\n" not in line and "Traceback" not in done.stderr and done.stdout == ""
    assert r.keys("*") == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plugins", [[], ["-d", str(Path(__file__).parents[1] / "plugins")]],
                         ids=["built-in", "plugins-directory"])
def test_python_m_pluginserver_refuses_an_unusable_setting_with_exit_2(
        plugins: list[str], tmp_path: Path) -> None:
    env = {**os.environ, keys.SHARDS_ENV: "0"}
    done = subprocess.run(
        [sys.executable, "-m", "kong_credits.pluginserver", "-p", str(tmp_path), *plugins],
        env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("Error: KONG_CREDITS_SHARDS must be a whole number from 1 to 16384, "
                           "not '0'\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("masters", [3, 6])
def test_the_split_is_what_redis_cli_assigns(masters: int) -> None:
    """The reproduction above against a real `redis-cli --cluster create`."""
    ports = [_free_port() for _ in range(masters)]
    with tempfile.TemporaryDirectory(prefix="kc-split-") as workdir:
        processes = []
        try:
            for port in ports:
                Path(workdir, str(port)).mkdir()
                processes.append(subprocess.Popen(
                    [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-port", str(_free_port()), "--save", "", "--appendonly", "no",
                     "--dir", str(Path(workdir, str(port)))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in ports:
                wait_for_ping(port)
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                 "--cluster-yes"], capture_output=True, text=True, timeout=60, check=False)
            assert created.returncode == 0, created.stdout + created.stderr
            owned: dict[int, list[tuple[int, int]]] = {port: [] for port in ports}
            client = redis.Redis(port=ports[0])
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                owned[int(master[1])].append((int(start), int(end)))
            client.close()
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)
    assert sorted(map(sorted, owned.values())) == [
        [(r.start, r.stop - 1)] for r in redis_cli_create_split(masters)]


def wait_for_ping(port: int) -> None:
    def ping() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    wait_until(ping)


# --- one count per deployment --------------------------------------------------------------


def test_the_first_process_records_its_count_and_others_agreeing_pass(r) -> None:
    check_shards(r)
    assert r.get(keys.SHARDS_KEY) == str(keys.SHARDS)
    check_shards(r)  # agreeing: passes, changes nothing
    assert r.keys("*") == [keys.SHARDS_KEY]


def other_count() -> int:
    return 1024 if keys.SHARDS != 1024 else 16


def test_the_cli_refuses_another_count_and_writes_nothing(r, redis_url: str) -> None:
    r.set(keys.SHARDS_KEY, other_count())
    for args in (["grant", "acme", "10"], ["balance", "acme"], ["ledger", "acme"]):
        result = CliRunner().invoke(main, [*args, "--redis-url", redis_url])
        assert result.exit_code == 1, result.output
        assert (f"runs with KONG_CREDITS_SHARDS={keys.SHARDS}, but {redis_url} records "
                f"'{other_count()}'") in result.output
        assert f"Set KONG_CREDITS_SHARDS={other_count()} here" in result.output
    assert r.keys("*") == [keys.SHARDS_KEY]


def test_the_forwarder_alerts_and_dlq_refuse_another_count(r, redis_url: str) -> None:
    """Without --drain too: a mismatch is not an outage to wait out."""
    r.set(keys.SHARDS_KEY, other_count())
    runs = {
        "forwarder": ["forwarder", "--sink", "http", "--url", "http://127.0.0.1:1/x", *FAST],
        "alerts": ["alerts", "--url", "http://127.0.0.1:1/x", "--hmac-secret", SECRET, *FAST],
        "dlq": ["dlq", "list"],
    }
    for name, args in runs.items():
        result = CliRunner().invoke(main, [*args, "--redis-url", redis_url])
        assert result.exit_code == 1, (name, result.output)
        assert f"records '{other_count()}' under kc:shards" in result.output, name
    assert r.keys("*") == [keys.SHARDS_KEY]  # no consumer group, no stream


def test_the_plugin_refuses_another_count_per_on_redis_error_and_writes_nothing(
        r, redis_url: str) -> None:
    wallets.grant(r, "acme", 100)
    r.set(keys.SHARDS_KEY, other_count())
    written = set(r.keys("*"))
    request = AuthorizeRequest("q-1", "acme", "alice", 5)

    async def scenario() -> list[str]:
        engine = EngineCache().get(redis_url, 250)
        errors = []
        for _ in range(2):
            with pytest.raises(RedisUnavailable) as caught:
                await engine.authorize(request)
            errors.append(str(caught.value))
        return errors

    scripts_before = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    errors = asyncio.run(scenario())
    assert all(f"KONG_CREDITS_SHARDS={keys.SHARDS}, but {redis_url} records "
               f"'{other_count()}'" in e for e in errors)
    # One look at Redis: the mismatch is kept, the second request asks nothing.
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] - scripts_before <= 2
    assert set(r.keys("*")) == written and wallets.balance(r, "acme").balance == 100


def test_the_plugin_checks_once_then_sends_one_script_call_per_request(r, redis_url) -> None:
    wallets.grant(r, "acme", 1000)

    async def scenario() -> None:
        engine = EngineCache().get(redis_url, 250)
        assert (await engine.authorize(AuthorizeRequest("w-0", "acme", "a", 1))).admitted
        before = r.info("commandstats")["cmdstat_evalsha"]["calls"]
        for i in range(1, 51):
            assert (await engine.authorize(AuthorizeRequest(f"w-{i}", "acme", "a", 1))).admitted
        assert r.info("commandstats")["cmdstat_evalsha"]["calls"] - before == 50

    asyncio.run(scenario())
    assert r.get(keys.SHARDS_KEY) == str(keys.SHARDS)


# --- a deployment on another count, process by process ---------------------------------------


@pytest.fixture
def db9(redis_url: str) -> Iterator[tuple[str, redis.Redis]]:
    url = redis_url.rsplit("/", 1)[0] + "/9"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    yield url, client
    client.close()


@pytest.mark.integration
def test_every_process_follows_the_setting(db9: tuple[str, redis.Redis]) -> None:
    """CLI, plugin server, forwarder and alerts on 256 shards; a process on the default
    count is refused until it runs with the deployment's."""
    url, r = db9
    wallet = "acme"
    assert kong_credits("grant", wallet, "20", shards=LARGE_CLUSTER, redis_url=url
                        ).returncode == 0
    assert r.get(keys.SHARDS_KEY) == str(LARGE_CLUSTER)  # the first process recorded it
    tag = keys.shard_tags(LARGE_CLUSTER)[zlib.crc32(wallet.encode()) % LARGE_CLUSTER]
    assert any(f"{{{tag}}}" in key for key in r.keys("*"))

    config = {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080", "routes": [
            {"name": "paid", "paths": ["/paid"], "plugins": [
                {"name": "key-auth"},
                {"name": "credits", "config": {"redis_url": url, "cost": 5}}]}]}],
        "consumers": [{"username": "alice", "custom_id": wallet,
                       "keyauth_credentials": [{"key": "ka"}]}],
    }
    host = Host(config, credits_servers(tempfile.mkdtemp(prefix="kc-")), upstream=upstream,
                nginx_main_env=[f"{keys.SHARDS_ENV}={LARGE_CLUSTER}"])
    gateway = HostThread(host)
    try:
        gateway.run(host.start())
        assert [gateway.get("/paid").status for _ in range(5)] == [200] * 4 + [402]
    finally:
        gateway.close()
    balance = kong_credits("balance", wallet, "--json", shards=LARGE_CLUSTER, redis_url=url)
    assert json.loads(balance.stdout)["balance"] == 0
    streams = r.keys("*:events")
    assert len(streams) == 1 and f"{{{tag}}}" in streams[0]  # the wallet's shard, of 256
    events = r.xrange(streams[0])
    assert len(events) == 4

    # A forwarder left on the default count is refused, and delivers nothing:
    with BillingRecorder("http") as backend:
        refused = kong_credits("forwarder", *sink_args("http", backend.url), "--drain",
                               *FAST, shards=None, redis_url=url)
        assert refused.returncode == 1
        assert f"records '{LARGE_CLUSTER}' under kc:shards" in refused.stderr
        delivered = kong_credits("forwarder", *sink_args("http", backend.url), "--drain",
                                 *FAST, shards=LARGE_CLUSTER, redis_url=url)
        assert delivered.returncode == 0, delivered.stderr
        assert set(backend.stored) == {fields["event_id"] for _, fields in events}

    receiver = Receiver([])
    try:
        alerted = kong_credits("alerts", "--url", receiver.url, "--hmac-secret", SECRET,
                               "--drain", *FAST, shards=LARGE_CLUSTER, redis_url=url)
    finally:
        receiver.close()
    assert alerted.returncode == 0, alerted.stderr
    assert sorted(a["data"]["threshold_pct"] for a in receiver.accepted) == [50, 75, 90, 100]
