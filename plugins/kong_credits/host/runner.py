"""Kong's request flow over one loaded config: rewrite -> route -> access -> upstream ->
response -> (client response) -> log.

- rewrite: global plugins only, before routing;
- access: the matched route's plugins in Kong's order (`PluginSet`), the bundled key-auth among
  them; `kong.response.exit` (or a Lua error -> 500) skips the rest of access and the upstream;
  every applicable plugin is still collected for log, as Kong's collecting iterator does;
- response: only when a collected plugin has the phase (Kong buffers the upstream response
  for it, `ctx.buffered_proxying`); not after a short-circuit;
- headers set with `kong.response.set_header/add_header/set_headers` in access reach the
  client and win over the upstream's headers of the same name;
- log: after the response is built, in a background task, one per plugin like Kong's
  per-plugin `ngx.timer.at(0)`, over a snapshot (`LogSnapshot`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import keyauth
from .bridge import ExternalPlugin, PluginError, run_phase
from .context import (
    ClientRequest,
    ExitResponse,
    Headers,
    LogSnapshot,
    PdkCall,
    RequestContext,
    UpstreamRequest,
    UpstreamResponse,
)
from .declarative import DeclarativeConfig
from .instances import InstanceCache
from .pdk import Pdk, PdkExit, PdkRaised
from .plugin_set import PluginSet
from .responses import error_response, exit_response
from .router import RouteMatch
from .serialize import serialize_data
from .transport import HOP_BY_HOP, Upstream, UpstreamError

__all__ = ["Gateway", "HostResponse"]

_logger = logging.getLogger("kong_credits.host")
_UNEXPECTED = {"message": "An unexpected error occurred"}


@dataclass
class HostResponse:
    """What the client got, plus what the host saw on the way (for tests and benchmarks).

    `pdk_calls` ({phase: count}), `plugin_s` ({phase: seconds spent in external plugins,
    RPCs and PDK calls included}) and `calls` grow while the log phase runs in the
    background: `await response.logged()` before reading log-phase numbers.
    """

    status: int
    headers: Headers
    body: bytes
    request_id: str
    source: str
    route: str | None = None
    consumer: Mapping[str, Any] | None = None
    pdk_calls: dict[str, int] = field(default_factory=dict)
    plugin_s: dict[str, float] = field(default_factory=dict)
    calls: list[PdkCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    logs: list[tuple[str, str, str]] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    log_task: asyncio.Task[None] | None = field(default=None, repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)

    async def logged(self, timeout_s: float = 30.0) -> None:
        """Wait until the log phase of this request has finished."""
        if self.log_task is not None:
            await asyncio.wait_for(asyncio.shield(self.log_task), timeout_s)


@dataclass(frozen=True)
class _Bundled:
    """A plugin Kong runs in Lua; here a Python function over the context."""

    priority: int
    phases: tuple[str, ...]
    access: Callable[[RequestContext, Mapping[str, Any], DeclarativeConfig], None]


BUNDLED = {keyauth.NAME: _Bundled(keyauth.PRIORITY, ("access",), keyauth.access)}


class Gateway:
    """Runs requests through the plugins of one validated DeclarativeConfig."""

    def __init__(
        self,
        *,
        config: DeclarativeConfig,
        plugins: PluginSet,
        external: Mapping[str, ExternalPlugin],
        instances: InstanceCache,
        pdk: Pdk,
        upstream: Upstream,
        max_restarts: int = 3,
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.external = external
        self.instances = instances
        self.pdk = pdk
        self.upstream = upstream
        self.max_restarts = max_restarts
        self._log_tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: ClientRequest) -> HostResponse:
        ctx = RequestContext(request=request)
        started = time.monotonic()
        ctx.upstream = _initial_upstream(request)
        collected: list[tuple[str, dict[str, Any]]] = []
        collected.extend(self._global_plugins())  # what log sees if no route matches
        await self._phase_over(ctx, "rewrite", collected)
        match = None
        if ctx.exit is None:
            match = self.config.router.match(request.method, request.path, request.host)
            if match is None:
                self._exit(ctx, error_response(
                    404, "no Route matched with those values", accept=_accept(ctx),
                    request_id=ctx.request_id, current=ctx.response_headers), "exit")
            else:
                _route(ctx, match)
                await self._access(ctx, match, collected)
        access_done = time.monotonic()
        if ctx.exit is None:
            await self._proxy(ctx, collected)
        finished = time.monotonic()
        status, headers, body = self._client_response(ctx)
        ctx.latencies_ms = {
            "kong": int((access_done - started) * 1000),
            "proxy": int((finished - access_done) * 1000) if ctx.source == "service" else -1,
            "request": int((finished - started) * 1000),
        }
        _kong_headers(ctx, headers)
        ctx.status = status
        ctx.log = LogSnapshot(
            serialize_data=serialize_data(ctx, status, headers, len(body)),
            request_headers=request.headers.lua_table(),
            response_headers=headers.lua_table(),
            response_status=status,
            req_start_time=ctx.start_time_s,
        )
        response = HostResponse(
            status=status, headers=headers, body=body, request_id=ctx.request_id,
            source=ctx.source or "error", route=match.route.name if match else None,
            consumer=_entity(ctx.consumer), pdk_calls=ctx.pdk_calls, plugin_s=ctx.plugin_s,
            calls=ctx.calls,
            errors=ctx.errors, logs=ctx.logs, shared=ctx.shared,
        )
        log_plugins = [(n, c) for n, c in collected if "log" in self._phases(n)]
        if log_plugins:
            response.log_task = self._spawn_log(ctx, log_plugins)
        return response

    async def drain(self) -> None:
        """Wait for every log phase still running."""
        while self._log_tasks:
            await asyncio.gather(*list(self._log_tasks), return_exceptions=True)

    # -- phases ---------------------------------------------------------------------------------

    def _phases(self, name: str) -> tuple[str, ...]:
        if name in BUNDLED:
            return BUNDLED[name].phases
        plugin = self.external.get(name)
        return plugin.phases if plugin else ()

    def _global_plugins(self) -> list[tuple[str, dict[str, Any]]]:
        """Global configs: the only ones rewrite sees, since it runs before routing."""
        found = []
        for name in self.plugins:
            conf = self.plugins.lookup(name, None, None, None)
            if conf is not None:
                found.append((name, conf))
        return found

    async def _phase_over(
        self, ctx: RequestContext, phase: str, plugins: list[tuple[str, dict[str, Any]]]
    ) -> None:
        for name, conf in plugins:
            if ctx.exit is not None:
                return
            if phase in self._phases(name):
                await self._run(name, conf, phase, ctx)

    async def _access(
        self, ctx: RequestContext, match: RouteMatch,
        collected: list[tuple[str, dict[str, Any]]],
    ) -> None:
        collected.clear()  # the route's plugins replace the global-only list
        ctx.phase = "access"
        route_id = match.route.id
        service_id = match.service.id if match.service else None
        for name in self.plugins:
            conf = self.plugins.lookup(name, route_id, service_id, _consumer_id(ctx))
            if conf is None:
                continue
            collected.append((name, conf))
            phases = self._phases(name)
            if "response" in phases:
                ctx.buffered = True
            if ctx.exit is None and "access" in phases:
                await self._run(name, conf, "access", ctx)

    async def _run(
        self, name: str, conf: dict[str, Any], phase: str, ctx: RequestContext
    ) -> None:
        ctx.phase = phase
        try:
            bundled = BUNDLED.get(name)
            if bundled is not None:
                bundled.access(ctx, conf, self.config)
            else:
                started = time.perf_counter()
                try:
                    await run_phase(self.external[name], conf, phase, ctx,
                                    instances=self.instances, pdk=self.pdk,
                                    max_restarts=self.max_restarts)
                finally:
                    spent = time.perf_counter() - started
                    ctx.plugin_s[phase] = ctx.plugin_s.get(phase, 0.0) + spent
        except PdkExit as exc:
            if phase == "log":  # unreachable: exit's phase check raises in log
                return
            self._exit(ctx, exc.response, "exit")
        except (PluginError, PdkRaised) as exc:
            message = f"[{name}] {exc}"
            ctx.errors.append(message)
            _logger.error("%s", message)
            if phase != "log":
                self._exit(ctx, exit_response(500, _UNEXPECTED, None, ctx.response_headers),
                           "error")

    @staticmethod
    def _exit(ctx: RequestContext, response: ExitResponse, source: str) -> None:
        ctx.exit = response
        ctx.source = source

    async def _proxy(
        self, ctx: RequestContext, collected: list[tuple[str, dict[str, Any]]]
    ) -> None:
        if ctx.service is None or ctx.upstream is None:
            self._exit(ctx, error_response(503, "no Service found with those values",
                                           accept=_accept(ctx), request_id=ctx.request_id,
                                           current=ctx.response_headers), "exit")
            return
        try:
            response = await self.upstream(ctx.upstream)
        except UpstreamError as exc:
            ctx.errors.append(str(exc))
            _logger.error("%s", exc)
            self._exit(ctx, error_response(exc.status, None, accept=_accept(ctx),
                                           request_id=ctx.request_id,
                                           current=ctx.response_headers), "error")
            return
        ctx.service_response = response
        ctx.source = "service"
        if ctx.buffered:
            ctx.phase = "response"
            ctx.status = response.status
            for name, values in _grouped(response.headers):
                ctx.response_headers.set(name, values)
            for name, conf in collected:
                if ctx.exit is not None:
                    break
                if "response" in self._phases(name):
                    await self._run(name, conf, "response", ctx)

    def _client_response(self, ctx: RequestContext) -> tuple[int, Headers, bytes]:
        if ctx.exit is not None:
            return ctx.exit.status, ctx.exit.headers.copy(), ctx.exit.body
        response = ctx.service_response or UpstreamResponse(502)
        if ctx.buffered:
            headers = ctx.response_headers.copy()
            headers.set("Content-Length", str(len(response.body)))
            return ctx.status or response.status, headers, response.body
        own = {name.lower() for name, _ in ctx.response_headers}
        headers = Headers((k, v) for k, v in response.headers
                          if k.lower() not in HOP_BY_HOP and k.lower() not in own)
        for name, value in ctx.response_headers:
            headers.add(name, value)
        headers.set("Content-Length", str(len(response.body)))
        return response.status, headers, response.body

    def _spawn_log(
        self, ctx: RequestContext, plugins: list[tuple[str, dict[str, Any]]]
    ) -> asyncio.Task[None]:
        async def log_phase() -> None:
            await asyncio.gather(*(self._run(n, c, "log", ctx) for n, c in plugins))

        # One plugin (the usual case) runs as the task itself: no gather, no second task.
        work = self._run(*plugins[0], "log", ctx) if len(plugins) == 1 else log_phase()
        task = asyncio.get_running_loop().create_task(work)
        self._log_tasks.add(task)
        task.add_done_callback(self._log_tasks.discard)
        return task


def _accept(ctx: RequestContext) -> str | None:
    return ctx.request.headers.get("accept")


def _consumer_id(ctx: RequestContext) -> str | None:
    consumer = ctx.consumer
    if consumer is None:
        return None
    if isinstance(consumer, Mapping):
        value = consumer.get("id")
        return value if isinstance(value, str) else None
    return consumer.id


def _entity(value: Any) -> Any:
    return value.as_pdk() if hasattr(value, "as_pdk") else value


def _grouped(headers: Headers) -> list[tuple[str, list[str]]]:
    grouped: dict[str, tuple[str, list[str]]] = {}
    for name, value in headers:
        if name.lower() in HOP_BY_HOP:
            continue
        grouped.setdefault(name.lower(), (name, []))[1].append(value)
    return list(grouped.values())


def _initial_upstream(request: ClientRequest) -> UpstreamRequest:
    headers = Headers((k, v) for k, v in request.headers
                      if k.lower() not in HOP_BY_HOP and k.lower() != "host")
    return UpstreamRequest(method=request.method, scheme="http", host=request.host,
                           port=request.port, path=request.path, raw_query=request.raw_query,
                           headers=headers, body=request.body)


def _route(ctx: RequestContext, match: RouteMatch) -> None:
    """Kong's `access.before`: the matched route decides the upstream target and path."""
    request, upstream = ctx.request, ctx.upstream
    assert upstream is not None
    ctx.route, ctx.service = match.route, match.service
    upstream.path = match.upstream_path
    if match.service is not None:
        service = match.service
        upstream.scheme, upstream.host, upstream.port = (service.protocol, service.host,
                                                         service.port)
    default_port = {"http": 80, "https": 443}.get(upstream.scheme)
    host_header = request.headers.get("host") if match.route.preserve_host else None
    if host_header is None:
        host_header = (upstream.host if upstream.port == default_port
                       else f"{upstream.host}:{upstream.port}")
    upstream.headers.set("Host", host_header)
    forwarded_for = request.headers.get("x-forwarded-for")
    upstream.headers.set("X-Forwarded-For", f"{forwarded_for}, {request.client_ip}"
                         if forwarded_for else request.client_ip)
    upstream.headers.set("X-Forwarded-Proto", request.scheme)
    upstream.headers.set("X-Forwarded-Host", request.host)
    upstream.headers.set("X-Forwarded-Port", str(request.port))
    upstream.headers.set("X-Forwarded-Path", request.path)
    if match.route.strip_path and match.matched_path and match.matched_path != "/":
        upstream.headers.set("X-Forwarded-Prefix", match.matched_path)
    upstream.headers.set("X-Real-IP", request.client_ip)
    upstream.headers.set("X-Kong-Request-Id", ctx.request_id)


def _kong_headers(ctx: RequestContext, headers: Headers) -> None:
    """Kong's `latency_tokens` and `X-Kong-Request-Id` headers (3.5+ defaults)."""
    if ctx.source == "service":
        headers.set("X-Kong-Upstream-Latency", str(ctx.latencies_ms["proxy"]))
        headers.set("X-Kong-Proxy-Latency", str(ctx.latencies_ms["kong"]))
    else:
        headers.set("X-Kong-Response-Latency", str(ctx.latencies_ms["kong"]))
    headers.set("X-Kong-Request-Id", ctx.request_id)
