"""redis_url holds a password: it stays out of the schema Kong stores, and vault references work.

Kong stores the defaults of the schema `--dump-all-plugins` prints in every plugin config and
shows them in its Admin API, so the schema carries no environment-derived value: the plugin
server resolves an unset redis_url itself. Kong resolves `referenceable` fields for external
plugins as for Lua ones (`Schema:process_auto_fields` on select) and sends StartInstance the
secret with a `$refs` entry naming the reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kong_credits.kong_schema import config_fields, validate
from kong_credits.pluginserver import import_plugin
from kong_credits.pluginserver.instances import InstanceTable
from kong_credits.schema import plugin_schema

SECRET_URL = "redis://:s3cret@redis.internal:6379/0"
REFERENCE = "{vault://env/credits-redis-url}"


def test_dumped_schema_holds_no_redis_url_from_the_environment() -> None:
    exe = Path(sys.executable).with_name("kong-credits")
    done = subprocess.run([str(exe), "pluginserver", "--dump-all-plugins"],
                          env={**os.environ, "KONG_CREDITS_REDIS_URL": SECRET_URL},
                          capture_output=True, text=True, timeout=60, check=True)
    assert "s3cret" not in done.stdout + done.stderr
    assert "redis.internal" not in done.stdout
    for info in json.loads(done.stdout):
        [field] = [f["redis_url"] for f in config_fields(info["Schema"]) if "redis_url" in f]
        assert "default" not in field and field["required"] is False, info["Name"]
        assert field["referenceable"] is True, info["Name"]


def test_kong_yml_may_hold_a_vault_reference_in_redis_url_only() -> None:
    _, errors = validate(plugin_schema(), {"redis_url": REFERENCE})
    assert errors == []
    _, errors = validate(plugin_schema(), {"mode": REFERENCE})
    assert [str(e) for e in errors] == ["mode: expected one of: enforce, shadow"]


def test_start_instance_takes_the_secret_kong_resolved(redis_url: str) -> None:
    """The Config JSON Kong 3.9 sends: stored config with defaults, the reference resolved,
    `$refs`, and the keys `get_plugin_config` adds."""
    kong_sends = {
        "cost": 2, "mode": "enforce", "on_redis_error": "deny", "redis_timeout_ms": 250,
        "redis_url": redis_url, "$refs": {"redis_url": REFERENCE},
        "route_id": "6f1c0e4e-54b5-4d27-9a7c-3c4d7e1b2a90", "__plugin_id": "a1b2",
        "__key__": "plugins:credits:6f1c0e4e-54b5-4d27-9a7c-3c4d7e1b2a90:::::default",
        "__seq__": 1, "__ws_id": "0dc6f45b-8f8d-40d2-a504-473544ee190b",
    }
    table = InstanceTable({"credits": import_plugin("credits=kong_credits.plugin")})
    instance = table.start("credits", json.dumps(kong_sends))
    assert instance.plugin.config.redis_url == redis_url
