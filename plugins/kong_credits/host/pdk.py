"""Kong's side of PDK calls: `kong.*` functions answered from a RequestContext.

`Pdk.call(...)` plays `call_pdk_method` + `get_step_method` of `rpc/mp_rpc.lua`:
- the method runs with the Args array unpacked; only its first return value is sent (None ->
  no `Data` key), shaped by `codec` (multimaps for get_headers/get_query, bin for raw bodies);
- the Step method is chosen per PDK method (`STEP_METHODS`), else `plugin.Step`;
- an unknown method logs `could not find pdk method: <name>` and gets a plain Step;
- a method that raises in Kong (wrong phase, bad arguments) raises `PdkRaised`: Kong sends
  no Step and the handler ends (500 in access/rewrite/response, an error log in log);
- `kong.response.exit/error` raise `PdkExit`: Kong sends nothing more for the event.

Phase checks copy `check_phase` lists of `kong/pdk/*.lua`. The log phase runs in Kong's
`ngx.timer` with a snapshot: functions that read `ngx.var` or `ngx.req` raise there
("API disabled in the current context"); the wrappers Kong adds for the timer
(`kong.log.serialize`, `kong.request.get_header(s)`, `kong.response.get_status/header(s)`,
`kong.ctx.shared.*`, `kong.nginx.get_ctx/set_ctx/req_start_time`) read the snapshot.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import codec
from . import pdk_api as api
from .context import Headers, RequestContext, query_table
from .entities import Consumer
from .pdk_api import PdkExit, PdkRaised

__all__ = ["STEP_METHODS", "NodeInfo", "Pdk", "PdkExit", "PdkRaised", "StepAnswer"]

ConsumerLookup = Callable[[str, bool], Consumer | None]

STEP_METHODS = {
    "kong.client.get_credential": "plugin.StepCredential",
    "kong.client.authenticate": "plugin.StepCredential",
    "kong.client.get_consumer": "plugin.StepConsumer",
    "kong.client.load_consumer": "plugin.StepConsumer",
    "kong.node.get_memory_stats": "plugin.StepMemoryStats",
    "kong.router.get_route": "plugin.StepRoute",
    "kong.router.get_service": "plugin.StepService",
    "kong.request.get_query": "plugin.StepMultiMap",
    "kong.request.get_headers": "plugin.StepMultiMap",
    "kong.response.get_headers": "plugin.StepMultiMap",
    "kong.service.response.get_headers": "plugin.StepMultiMap",
}
_MULTIMAP = {"kong.request.get_query", "kong.request.get_headers", "kong.response.get_headers",
             "kong.service.response.get_headers"}
_RAW = {"kong.request.get_raw_body", "kong.response.get_raw_body",
        "kong.service.response.get_raw_body"}

# Phase lists in Kong's bit order, as its error messages print them.
_ALL = ("rewrite", "access", "balancer", "response", "header_filter", "body_filter", "log",
        "error", "admin_api")
_REQUEST = ("rewrite", "access", "balancer", "response", "cluster_listener", "header_filter",
            "body_filter", "log", "error", "admin_api")
_AUTH_AND_LATER = ("access", "response", "header_filter", "body_filter", "log")
_ACCESS = ("access",)
_BEFORE_CONTENT = ("rewrite", "access", "response", "error", "admin_api")
_HEADER_BODY_LOG = ("response", "header_filter", "body_filter", "log", "error", "admin_api")
_REWRITE_ACCESS_HEADER = ("rewrite", "access", "balancer", "response", "header_filter",
                          "error", "admin_api")
_ACCESS_REWRITE = ("rewrite", "access")
_ACCESS_REWRITE_BALANCER = ("rewrite", "access", "balancer")
_BODY_FILTER = ("body_filter",)
_LOG = ("log",)

_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
               "warn": logging.WARNING, "err": logging.ERROR, "crit": logging.CRITICAL,
               "alert": logging.CRITICAL, "emerg": logging.CRITICAL}


@dataclass(frozen=True)
class StepAnswer:
    """What Kong sends back: `plugin.<Step>` with Data, or without Data when `has_data` is
    False."""

    method: str
    has_data: bool
    data: Any = None


@dataclass(frozen=True)
class NodeInfo:
    """Node-wide facts for `kong.node.*`."""

    node_id: str
    hostname: str


@dataclass(frozen=True)
class _Method:
    func: Callable[..., Any]
    phases: tuple[str, ...] = _ALL
    live: bool = False  # reads ngx.var/ngx.req: unavailable in the log timer


@dataclass
class Pdk:
    """The PDK of one host: node facts, consumer lookup and a logger."""

    node: NodeInfo
    find_consumer: ConsumerLookup
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("kong_credits.host"))

    def __post_init__(self) -> None:
        self._methods = _build_table(self)

    def call(
        self, ctx: RequestContext, plugin: str, plugin_id: str, phase: str, method: str,
        args: Any,
    ) -> StepAnswer:
        """Run PDK `method` for `plugin` in `phase`; see the module docstring."""
        ctx.count_call(plugin, phase, method)
        entry = self._methods.get(method)
        if entry is None:
            self._log_error(ctx, f"could not find pdk method: {method}")
            return StepAnswer("plugin.Step", False)
        if phase not in entry.phases:
            raise PdkRaised(f"function cannot be called in {phase} phase (only in: "
                            f"{', '.join(entry.phases)})")
        if entry.live and phase == "log":
            raise PdkRaised(api.TIMER_ERROR)
        call_args = list(args) if isinstance(args, list | tuple) else [args]
        try:
            result = entry.func(api.CallSite(ctx, plugin, plugin_id, phase), *call_args)
        except (PdkRaised, PdkExit):
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise PdkRaised(f"{method}: {exc}") from exc
        if method in _MULTIMAP:
            result = codec.multimap(result)
        elif method in _RAW:
            result = codec.raw_bytes(result)
        elif result is not None:
            result = codec.lua_value(api.as_table(result))
        step = STEP_METHODS.get(method, "plugin.Step")
        if result is None:
            return StepAnswer(step, False)
        return StepAnswer(step, True, result)

    def _log_error(self, ctx: RequestContext, message: str) -> None:
        ctx.errors.append(message)
        self.logger.error("%s", message)

    # -- kong.log ----------------------------------------------------------------------------

    def log(self, level: str) -> Callable[..., None]:
        def write(call: api.CallSite, *parts: Any) -> None:
            text = "".join(api.lua_tostring(p) for p in parts)
            call.ctx.logs.append((level, call.plugin, text))
            logging.getLogger(f"kong_credits.host.plugin.{call.plugin}").log(
                _LOG_LEVELS[level], "[%s] %s", call.plugin, text)
        return write

    def load_consumer(self, call: api.CallSite, consumer_id: Any, by_username: Any = None) -> Any:
        if not isinstance(consumer_id, str):
            raise ValueError("consumer_id must be a string")
        return self.find_consumer(consumer_id, bool(by_username))

    def memory_stats(
        self, call: api.CallSite, unit: Any = None, scale: Any = None
    ) -> dict[str, Any]:
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "workers_lua_vms": [{"pid": os.getpid(), "http_allocated_gc": rss_kb * 1024}],
            "lua_shared_dicts": {
                "kong": {"capacity": 5 * 1024 * 1024, "allocated_slabs": 40960},
                "kong_db_cache": {"capacity": 128 * 1024 * 1024, "allocated_slabs": 1 << 20},
            },
        }


def _build_table(pdk: Pdk) -> dict[str, _Method]:
    """Every PDK method the host answers, with Kong's phases; the rest are "not found"."""

    def request(attr: Callable[[Any], Any]) -> Callable[[api.CallSite], Any]:
        return lambda call: attr(call.ctx.request)

    def consumer(call: api.CallSite) -> Any:
        return call.ctx.consumer

    def credential(call: api.CallSite) -> Any:
        return call.ctx.credential

    def response_headers(call: api.CallSite) -> Headers:
        return call.ctx.response_headers

    table: dict[str, _Method] = {
        "kong.request.get_scheme": _Method(request(lambda r: r.scheme), _REQUEST, True),
        "kong.request.get_host": _Method(request(lambda r: r.host), _REQUEST, True),
        "kong.request.get_port": _Method(request(lambda r: r.port), _ALL, True),
        "kong.request.get_forwarded_scheme": _Method(request(lambda r: r.scheme), _REQUEST, True),
        "kong.request.get_forwarded_host": _Method(request(lambda r: r.host), _REQUEST, True),
        "kong.request.get_forwarded_port": _Method(request(lambda r: r.port), _REQUEST, True),
        "kong.request.get_forwarded_path": _Method(request(lambda r: r.path), _REQUEST, True),
        "kong.request.get_forwarded_prefix": _Method(lambda call: None, _REQUEST, True),
        "kong.request.get_http_version": _Method(
            request(lambda r: r.http_version), _REQUEST, True),
        "kong.request.get_method": _Method(request(lambda r: r.method), _REQUEST, True),
        "kong.request.get_path": _Method(request(lambda r: r.path), _REQUEST, True),
        "kong.request.get_raw_path": _Method(request(lambda r: r.path), _REQUEST, True),
        "kong.request.get_path_with_query": _Method(
            request(lambda r: r.request_uri), _REQUEST, True),
        "kong.request.get_raw_query": _Method(request(lambda r: r.raw_query), _REQUEST, True),
        "kong.request.get_query_arg": _Method(
            lambda call, name: query_table(call.ctx.request.raw_query).get(name), _REQUEST, True),
        "kong.request.get_query": _Method(
            lambda call, *_: query_table(call.ctx.request.raw_query), _REQUEST, True),
        "kong.request.get_header": _Method(api.get_header, _REQUEST),
        "kong.request.get_headers": _Method(api.get_headers, _REQUEST),
        "kong.request.get_raw_body": _Method(request(lambda r: r.body), _BEFORE_CONTENT, True),
        "kong.request.get_body": _Method(api.get_body, _BEFORE_CONTENT, True),
        "kong.request.get_start_time": _Method(lambda call: call.ctx.start_time_ms, _REQUEST),
        "kong.request.get_uri_captures": _Method(
            lambda call: {"unnamed": [], "named": {}}, _REQUEST),
        "kong.client.get_ip": _Method(request(lambda r: r.client_ip), _ALL, True),
        "kong.client.get_forwarded_ip": _Method(request(lambda r: r.client_ip), _ALL, True),
        "kong.client.get_port": _Method(request(lambda r: r.client_port), _ALL, True),
        "kong.client.get_forwarded_port": _Method(request(lambda r: r.client_port), _ALL, True),
        "kong.client.get_protocol": _Method(request(lambda r: r.scheme), _AUTH_AND_LATER, True),
        "kong.client.get_consumer": _Method(consumer, _AUTH_AND_LATER),
        "kong.client.get_credential": _Method(credential, _AUTH_AND_LATER),
        "kong.client.load_consumer": _Method(pdk.load_consumer, _AUTH_AND_LATER),
        "kong.client.authenticate": _Method(api.authenticate, _ACCESS),
        "kong.router.get_route": _Method(lambda call: call.ctx.route, _AUTH_AND_LATER),
        "kong.router.get_service": _Method(lambda call: call.ctx.service, _AUTH_AND_LATER),
        "kong.response.get_status": _Method(api.response_status, _HEADER_BODY_LOG),
        "kong.response.get_header": _Method(api.response_header, _HEADER_BODY_LOG),
        "kong.response.get_headers": _Method(lambda call, *_: api.response_headers(call),
                                             _HEADER_BODY_LOG),
        "kong.response.get_source": _Method(api.response_source, _HEADER_BODY_LOG),
        "kong.response.set_status": _Method(api.set_status, _REWRITE_ACCESS_HEADER),
        "kong.response.set_header": _Method(api.set_header(response_headers, False),
                                            _REWRITE_ACCESS_HEADER),
        "kong.response.add_header": _Method(api.set_header(response_headers, True),
                                            _REWRITE_ACCESS_HEADER),
        "kong.response.set_headers": _Method(api.set_headers(response_headers),
                                             _REWRITE_ACCESS_HEADER),
        "kong.response.clear_header": _Method(api.clear_header(response_headers),
                                              _REWRITE_ACCESS_HEADER),
        "kong.response.exit": _Method(api.response_exit, _REWRITE_ACCESS_HEADER),
        "kong.response.error": _Method(api.response_error, _REWRITE_ACCESS_HEADER),
        "kong.response.get_raw_body": _Method(lambda call: b"", _BODY_FILTER),
        "kong.response.set_raw_body": _Method(lambda call, body: None, _BODY_FILTER),
        "kong.service.request.enable_buffering": _Method(api.enable_buffering,
                                                         _ACCESS_REWRITE_BALANCER),
        "kong.service.request.set_scheme": _Method(api.set_upstream("scheme", api.check_scheme),
                                                   _ACCESS_REWRITE_BALANCER),
        "kong.service.request.set_path": _Method(api.set_upstream("path", api.check_path),
                                                 _ACCESS_REWRITE_BALANCER),
        "kong.service.request.set_raw_query": _Method(
            api.set_upstream("raw_query", api.check_string("query")), _ACCESS_REWRITE),
        "kong.service.request.set_method": _Method(api.set_upstream("method", api.check_method),
                                                   _ACCESS_REWRITE),
        "kong.service.request.set_query": _Method(api.set_query, _ACCESS_REWRITE),
        "kong.service.request.clear_query_arg": _Method(api.clear_query_arg, _ACCESS_REWRITE),
        "kong.service.request.set_header": _Method(api.set_header(api.upstream_headers, False),
                                                   _ACCESS_REWRITE_BALANCER),
        "kong.service.request.add_header": _Method(api.set_header(api.upstream_headers, True),
                                                   _ACCESS_REWRITE),
        "kong.service.request.clear_header": _Method(api.clear_header(api.upstream_headers),
                                                     _ACCESS_REWRITE),
        "kong.service.request.set_headers": _Method(api.set_headers(api.upstream_headers),
                                                    _ACCESS_REWRITE),
        "kong.service.request.set_raw_body": _Method(api.set_upstream("body", api.check_body),
                                                     _ACCESS_REWRITE_BALANCER),
        "kong.service.request.set_body": _Method(api.set_body, _ACCESS_REWRITE),
        "kong.service.response.get_status": _Method(api.service_status, _HEADER_BODY_LOG),
        "kong.service.response.get_headers": _Method(api.service_headers, _HEADER_BODY_LOG),
        "kong.service.response.get_header": _Method(api.service_header, _HEADER_BODY_LOG),
        "kong.service.response.get_raw_body": _Method(api.service_raw_body, _HEADER_BODY_LOG),
        "kong.nginx.get_var": _Method(api.get_var, _ALL, True),
        "kong.nginx.get_ctx": _Method(api.ctx_get),
        "kong.nginx.set_ctx": _Method(api.ctx_set),
        "kong.nginx.req_start_time": _Method(api.req_start_time),
        "kong.nginx.get_subsystem": _Method(lambda call: "http"),
        "kong.nginx.get_tls1_version_str": _Method(lambda call: None),
        "kong.ctx.shared.get": _Method(api.shared_get),
        "kong.ctx.shared.set": _Method(api.shared_set),
        "kong.log.serialize": _Method(api.serialize, _LOG),
        "kong.log.set_serialize_value": _Method(api.set_serialize_value),
        "kong.node.get_id": _Method(lambda call: pdk.node.node_id),
        "kong.node.get_hostname": _Method(lambda call: pdk.node.hostname),
        "kong.node.get_memory_stats": _Method(pdk.memory_stats),
        "kong.plugin.get_id": _Method(lambda call: call.plugin_id),
        "kong.ip.is_trusted": _Method(lambda call, ip: False),
    }
    table["kong.log"] = _Method(pdk.log("notice"))
    for level in _LOG_LEVELS:
        table[f"kong.log.{level}"] = _Method(pdk.log(level))
    return table
