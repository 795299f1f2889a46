"""Kong-side test host: plays Kong's half of the external-plugin protocol (MsgPack:1).

A test and local-development tool, not a gateway: it reads a DB-less kong.yml, starts and
drives the real plugin server, runs Kong's phases and PDK for each request, and can serve
HTTP on loopback. Module map:

    declarative  kong.yml -> entities (entities.py), routes (router.py)
    supervisor   query_cmd / start_cmd, respawn, SIGTERM
    protocol     msgpack-RPC client: msgid counter, keepalive pool, notifications
    instances    StartInstance/CloseInstance cache keyed by plugin id and __seq__
    bridge       HandleEvent + Steps of one plugin phase, `no plugin instance` restarts
    pdk          kong.* dispatch, phases, Step names (pdk_api: the functions; codec: values)
    runner       phases in Kong's order (plugin_set), key-auth (keyauth), log snapshot
    host         the whole thing behind `Host.handle(...)`; proxy/upstream serve HTTP

Plugin config validation (Kong's schema rules and messages) lives in kong_credits.kong_schema,
shared with the plugin. Names are imported lazily, so importing one module does not pull in
httpx or the RPC client.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClientRequest": "context",
    "Headers": "context",
    "UpstreamRequest": "context",
    "UpstreamResponse": "context",
    "DeclarativeConfig": "declarative",
    "DeclarativeError": "declarative",
    "load_declarative": "declarative",
    "parse_declarative": "declarative",
    "Host": "host",
    "HostError": "host",
    "HostResponse": "runner",
    "PluginServerSpec": "supervisor",
    "credits_server": "supervisor",
    "credits_servers": "supervisor",
    "kong_pdk_server": "supervisor",
    "HttpxUpstream": "transport",
    "Upstream": "transport",
    "UpstreamError": "transport",
    "static_upstream": "transport",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return __all__
