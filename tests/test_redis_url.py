"""redis_url.py: every Redis URL form, parsed once for the plugin, the CLI, the forwarder,
alerts and the demo; a malformed one is a clear error everywhere, never with its password.

TLS against a real TLS server: test_redis_tls.py. A cluster URL against a real cluster node:
forwarder/test_forwarder_cluster.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from redis.sentinel import SentinelConnectionPool
from waits import wait_until

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.errors import InvalidInput
from kong_credits.pluginserver import import_plugin
from kong_credits.pluginserver.errors import PluginServerError
from kong_credits.pluginserver.instances import InstanceTable
from kong_credits.redis_server import EmbeddedRedis, _free_port, find_redis_server
from kong_credits.redis_url import Tls, parse_redis_url, redis_client
from kong_credits.schema import parse_config

SECRET = "s3cretpw"


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA certificate file made for these tests (no assumption about the machine's CAs)."""
    from tls_redis import make_certificates

    return make_certificates(tmp_path_factory.mktemp("pem")).ca


def test_single_node_forms() -> None:
    at = parse_redis_url(f"redis://app:{SECRET}@cache.internal:6380/2")
    assert (at.kind, at.nodes, at.db, at.username, at.password, at.tls) == (
        "node", (("cache.internal", 6380),), 2, "app", SECRET, None)
    assert parse_redis_url("redis://h").nodes == (("h", 6379),)
    assert parse_redis_url("redis://h?db=3").db == 3
    assert parse_redis_url("redis://").nodes == (("127.0.0.1", 6379),)  # as before
    assert parse_redis_url("redis://:p%2Fw%40x@[::1]:7000/0").nodes == (("::1", 7000),)
    assert parse_redis_url("redis://:p%2Fw%40x@[::1]:7000/0").password == "p/w@x"
    unix = parse_redis_url(f"unix://:{SECRET}@/run/redis/redis.sock?db=4")
    assert (unix.path, unix.nodes, unix.db, unix.password) == (
        "/run/redis/redis.sock", (), 4, SECRET)


def test_tls_forms_default_to_verifying(pem: Path) -> None:
    assert parse_redis_url("rediss://h:6380/0").tls == Tls()  # the system's CAs, verified
    at = parse_redis_url(f"rediss://h:6380/1?ssl_ca_certs={pem}")
    assert at.tls == Tls(ca_certs=str(pem)) and at.tls.verify and at.tls.check_hostname
    off = parse_redis_url("rediss://h?ssl_cert_reqs=none").tls
    assert off == Tls(verify=False, check_hostname=False)
    assert parse_redis_url("rediss://h?ssl_check_hostname=false").tls == Tls(
        check_hostname=False)
    assert off.redis_py() == {
        "ssl": True, "ssl_ca_certs": None, "ssl_certfile": None, "ssl_keyfile": None,
        "ssl_cert_reqs": "none", "ssl_check_hostname": False}


def test_cluster_and_sentinel_forms(pem: Path) -> None:
    cluster = parse_redis_url(f"redis+cluster://u:{SECRET}@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert (cluster.kind, cluster.nodes, cluster.username, cluster.password) == (
        "cluster", (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)), "u", SECRET)
    assert parse_redis_url("redis+cluster://h:7000/0").db == 0  # db 0 may be written
    assert parse_redis_url(f"rediss+cluster://h:7000?ssl_ca_certs={pem}").tls == Tls(
        ca_certs=str(pem))
    sentinel = parse_redis_url(
        f"rediss+sentinel://:{SECRET}@s1:26380,s2/my%20master?db=2&sentinel_password=x")
    assert (sentinel.kind, sentinel.nodes, sentinel.master, sentinel.db) == (
        "sentinel", (("s1", 26380), ("s2", 26379)), "my master", 2)
    assert (sentinel.password, sentinel.sentinel_password, sentinel.tls) == (SECRET, "x", Tls())


def test_the_value_never_shows_its_password() -> None:
    at = parse_redis_url(f"redis+sentinel://:{SECRET}@s1/m?sentinel_password={SECRET}")
    assert SECRET not in repr(at) and SECRET not in str(at)
    assert str(at) == "redis+sentinel://:***@s1/m?sentinel_password=***"


def test_the_cluster_flag_takes_a_node_as_a_seed() -> None:
    seed = parse_redis_url("rediss://:pw@h:7000/0?ssl_cert_reqs=none").as_cluster()
    assert (seed.kind, seed.nodes, seed.password, seed.tls) == (
        "cluster", (("h", 7000),), "pw", Tls(verify=False, check_hostname=False))
    for url in ("unix:///run/redis.sock", "redis://h/3", "redis+sentinel://s/m"):
        with pytest.raises(InvalidInput, match="with --cluster"):
            parse_redis_url(url).as_cluster()


BAD = [
    (f"http://:{SECRET}@h/0", "use redis://, rediss://, unix://"),
    (f"redis://:{SECRET}@h/zz", "the database must be a whole number"),
    (f"redis://:{SECRET}@h?db=-1", "the database must be a whole number"),
    (f"redis://:{SECRET}@h:port/0", "a port must be a number"),
    (f"redis://:{SECRET}@h:70000/0", "a port must be a number"),
    (f"redis://:{SECRET}/x@h/0", "percent-encode"),  # unescaped / in the password
    (f"redis://:{SECRET}?x@h/0", "percent-encode"),
    (f"redis://user:{SECRET}#x@h:6379/0", "'#' has no meaning"),
    (f"redis://:{SECRET}@a:1,b:2/0", "one host:port only"),
    (f"redis://:{SECRET}@h/0?socket_timeout=1", "unknown option 'socket_timeout'"),
    (f"redis://:{SECRET}@h/0?ssl_cert_reqs=none", "ssl_ options need a rediss scheme"),
    (f"redis://:{SECRET}@h/0?db=1&db=2", "an option is given twice"),
    (f"unix://:{SECRET}@h/run/redis.sock", "three slashes"),
    (f"rediss://:{SECRET}@h/0?ssl_cert_reqs=optional", "ssl_cert_reqs must be required"),
    (f"rediss://:{SECRET}@h/0?ssl_check_hostname=maybe", "ssl_check_hostname must be"),
    (f"rediss://:{SECRET}@h/0?ssl_cert_reqs=none&ssl_check_hostname=true", "needs ssl_cert"),
    (f"rediss://:{SECRET}@h/0?ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs names no file"),
    (f"rediss://:{SECRET}@h/0?ssl_keyfile={__file__}", "ssl_keyfile needs ssl_certfile"),
    (f"rediss://h/0?ssl_ca_certs={__file__}", "TLS files cannot be loaded"),  # not a PEM
    (f"redis+cluster://:{SECRET}@", "name at least one host:port"),
    (f"redis+cluster://:{SECRET}@h:7000/1", "a cluster has no database number"),
    (f"redis+cluster://:{SECRET}@h:7000?db=1", "unknown option 'db'"),
    (f"redis+sentinel://:{SECRET}@s1:26379", "name the master"),
    (f"redis+sentinel://:{SECRET}@s1:26379/a/b", "name the master"),
    (f"redis+sentinel://:{SECRET}@s1,:1/m", "a host is missing"),
    (f"redis+sentinel://:{SECRET}@[::1/m", "invalid Redis URL"),  # urllib's own complaint
]


@pytest.mark.parametrize(("url", "reason"), BAD)
def test_a_malformed_url_says_why_without_its_password(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match="invalid Redis URL") as raised:
        parse_redis_url(url)
    assert reason in str(raised.value)
    assert SECRET not in str(raised.value)
    assert raised.value.__suppress_context__  # no chained parser error in a traceback


@pytest.mark.parametrize("command", [
    ["grant", "acme", "5"], ["balance", "acme"], ["ledger", "acme"],
    ["budget", "acme", "--daily-cap", "5"],
    ["forwarder", "--sink", "http", "--url", "http://127.0.0.1:1", "--drain"],
    ["dlq", "list"], ["dlq", "retry", "--sink", "http", "--url", "http://127.0.0.1:1"],
    ["alerts", "--url", "http://127.0.0.1:1", "--hmac-secret", "x", "--drain"],
    ["demo"],
])
@pytest.mark.parametrize(("url", "reason"), [BAD[1], BAD[5], BAD[10], BAD[16], BAD[22]])
def test_every_command_exits_2_on_a_malformed_url(command: list[str], url: str,
                                                   reason: str, r: redis.Redis) -> None:
    result = CliRunner().invoke(main, [*command, "--redis-url", url])
    assert result.exit_code == 2, result.output
    assert "--redis-url" in result.output and reason in result.output
    assert SECRET not in result.output
    assert wallets.balance(r, "acme").balance == 0  # nothing written anywhere


def test_the_env_variable_is_checked_the_same_way() -> None:
    result = CliRunner().invoke(main, ["balance", "acme"],
                                env={"KONG_CREDITS_REDIS_URL": BAD[1][0]})
    assert result.exit_code == 2 and BAD[1][1] in result.output
    assert SECRET not in result.output


def test_the_demo_refuses_a_url_the_plugin_cannot_use() -> None:
    result = CliRunner().invoke(main, ["demo", "--redis-url", "redis+cluster://h:7000/3"])
    assert result.exit_code == 2
    assert "a cluster has no database number" in result.output


def test_plugin_config_refuses_a_malformed_url_at_start(monkeypatch) -> None:
    with pytest.raises(InvalidInput, match=r"^invalid credits config: redis_url: invalid Redis "
                       r"URL 'redis://:\*\*\*@h/zz': the database must be a whole number$"):
        parse_config({"redis_url": BAD[1][0]})
    with pytest.raises(InvalidInput, match="credits-metered config: redis_url"):
        parse_config({"redis_url": BAD[3][0], "cost_header": "X-Units"}, metered=True)
    monkeypatch.setenv("KONG_CREDITS_REDIS_URL", BAD[5][0])
    with pytest.raises(InvalidInput, match=r"redis_url \(unset: \$KONG_CREDITS_REDIS_URL\)"):
        parse_config({})
    with pytest.raises(InvalidInput, match="vault reference was not resolved"):
        parse_config({"redis_url": "{vault://env/credits-redis-url}"})


@pytest.mark.parametrize(("url", "message"), [
    (BAD[2][0], "invalid Redis URL"),
    ("redis+cluster://127.0.0.1:7000/3", "a cluster has no database number"),
    ("redis+sentinel://127.0.0.1:26379", "name the master"),
])
def test_start_instance_fails_clearly_on_a_url_the_plugin_cannot_use(url: str,
                                                                     message: str) -> None:
    table = InstanceTable({"credits": import_plugin("credits=kong_credits.plugin")})
    with pytest.raises(PluginServerError, match=message) as raised:
        table.start("credits", json.dumps({"redis_url": url}))
    assert SECRET not in str(raised.value)


def test_redis_client_builds_the_client_of_each_form(redis_url: str, r: redis.Redis) -> None:
    client = redis_client(redis_url.replace("/0", "/5"), decode_responses=True)
    assert isinstance(client, redis.Redis)
    assert client.connection_pool.connection_kwargs["db"] == 5
    assert client.ping()
    client.close()
    ssl = redis_client("rediss://:pw@h:6380/0?ssl_cert_reqs=none")
    assert ssl.connection_pool.connection_class is redis.SSLConnection
    assert ssl.connection_pool.connection_kwargs["password"] == "pw"
    assert redis_client("unix:///run/r.sock?db=2").connection_pool.connection_class is (
        redis.UnixDomainSocketConnection)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master of its own and one sentinel watching it: redis+sentinel://127.0.0.1:P/kc."""
    folder = tmp_path_factory.mktemp("sentinel")
    with EmbeddedRedis() as master:
        port = _free_port()
        config = folder / "sentinel.conf"
        config.write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                          f"sentinel monitor kc 127.0.0.1 {master.port} 1\n")
        process = subprocess.Popen([find_redis_server(), str(config), "--sentinel"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=port, socket_timeout=1)

        def knows_master() -> bool:
            assert process.poll() is None, "the sentinel exited"
            try:
                return bool(probe.sentinel_get_master_addr_by_name("kc"))
            except redis.ConnectionError:
                return False

        try:
            wait_until(knows_master, interval_s=0.02)
            yield f"redis+sentinel://127.0.0.1:{port}/kc?db=1"
        finally:
            probe.close()
            process.terminate()
            process.wait(timeout=10)


def test_a_sentinel_url_reaches_the_master_it_names(sentinel: str) -> None:
    client = redis_client(sentinel, decode_responses=True)
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    wallets.grant(client, "acme", 7)
    result = CliRunner().invoke(main, ["balance", "acme", "--json", "--redis-url", sentinel])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["balance"] == 7
    assert client.connection_pool.connection_kwargs["db"] == 1
    client.close()

