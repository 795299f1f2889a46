"""redact.py, and every message that names a Redis URL: the password never shows."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from kong_credits.cli import main
from kong_credits.demo import still_running_hint
from kong_credits.pluginserver import import_plugin
from kong_credits.pluginserver.errors import PluginServerError
from kong_credits.pluginserver.instances import InstanceTable
from kong_credits.redact import mask_url, redact
from kong_credits.redis_lane import RedisLane

SECRET = "s3cretpw"


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
    ("redis://:s3cret@host/0", "redis://:***@host/0"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("unix://:pw%2F@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
    ("https://h/v1?api_key=k&x=1&Token=t#top", "https://h/v1?api_key=***&x=1&Token=***#top"),
    ("https://h/hook?password=p;client_secret=c", "https://h/hook?password=***;client_secret=***"),
    ("https://tok123@api.example/x", "https://***@api.example/x"),  # a lone user: a token
    # unescaped /, ? or # in a password: still masked, where parsers take it for the port
    ("redis://:s3cr/et@h/0", "redis://:***@h/0"),
    ("redis://:s3?cr#et@h/0", "redis://:***@h/0"),
    ("redis://:pa@ss@h/0", "redis://:***@h/0"),
    ("https://h/p?token=a@b", "https://h/p?token=***"),
    ("not a url", "not a url"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_redact_strips_the_secrets_and_the_pieces_a_misparse_quotes() -> None:
    url = "redis://:s3cr/etpw@h/0?token=tok%2Fen"
    text = "Port could not be cast to integer value as 's3cr'; tok/en, tok%2Fen, etpw"
    assert redact(text, url) == "Port could not be cast to integer value as '***'; ***, ***, ***"
    assert redact("Error connecting to h:6379", url) == "Error connecting to h:6379"


BAD_URLS = [
    f"http://:{SECRET}@h/0",            # unsupported scheme
    f"redis://:{SECRET}@h/zz",          # the database is not a number
    f"redis://:{SECRET}/x@h/0",         # unescaped /: urllib and redis-py quote it as the port
    f"redis://user:{SECRET}#x@h:6379/0",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_redis_lane_errors_mask_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="invalid Redis URL") as raised:
        RedisLane.from_url(url)
    assert SECRET not in str(raised.value)
    assert raised.value.__suppress_context__  # a logged traceback shows no chained error


@pytest.mark.parametrize("url", BAD_URLS[:3])
def test_plugin_server_start_instance_error_and_log_mask_the_password(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What the plugin server answers Kong (which logs it) and what it logs itself."""
    table = InstanceTable({"credits": import_plugin("credits=kong_credits.plugin")})
    with caplog.at_level(logging.DEBUG), pytest.raises(PluginServerError) as raised:
        table.start("credits", json.dumps({"redis_url": url}))
    assert "invalid Redis URL" in str(raised.value)
    assert SECRET not in str(raised.value)
    assert caplog.records and SECRET not in caplog.text


@pytest.mark.parametrize("url", [f"foo://:{SECRET}@h/0", f"redis://:{SECRET}/x@h/0"])
@pytest.mark.parametrize("command", [
    ["balance", "acme"],
    ["dlq", "list"],
    ["alerts", "--url", "http://127.0.0.1:1", "--hmac-secret", "x"],
])
def test_cli_errors_mask_the_password(command: list[str], url: str) -> None:
    result = CliRunner().invoke(main, [*command, "--redis-url", url])
    assert result.exit_code == 2
    assert "--redis-url" in result.output and SECRET not in result.output


def test_demo_hint_masks_the_password() -> None:
    hint = still_running_hint("http://127.0.0.1:8000", f"redis://:{SECRET}@h:6379/0")
    assert "--redis-url redis://:***@h:6379/0" in hint and SECRET not in hint
