"""The Kong-side test host: plugin servers + declarative config + request flow, one object.

    async with Host("kong/kong.yml", [kong_pdk_server("tests/host/plugins", prefix)]) as host:
        response = await host.handle("GET", "/echo?x=1", {"apikey": "k1"})
        await response.logged()

`start()` asks each plugin server which plugins it serves (`query_cmd`), validates kong.yml
against the plugin schemas (refusing it with every failing field listed), then starts the
servers that have a `start_cmd` and waits for their sockets. Nothing here is a gateway: one
process, one "worker", loopback only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..kong_schema import config_fields
from . import keyauth
from .bridge import ExternalPlugin
from .context import ClientRequest, Headers
from .declarative import DeclarativeConfig, load_declarative, parse_declarative
from .entities import Consumer
from .instances import InstanceCache
from .pdk import NodeInfo, Pdk
from .plugin_set import PluginSet, SeqCounter
from .protocol import RpcClient
from .runner import BUNDLED, Gateway, HostResponse
from .supervisor import (
    PluginInfo,
    PluginServerProcess,
    PluginServerSpec,
    query_plugins,
    wait_for_socket,
    worker_environment,
)
from .transport import HttpxUpstream, Upstream

__all__ = ["Host", "HostError"]

_logger = logging.getLogger("kong_credits.host")

ConfigSource = DeclarativeConfig | Mapping[str, Any] | str | Path


class HostError(RuntimeError):
    """The host cannot start: a plugin server failed its query or never opened its socket."""


class Host:
    """Plays Kong's side for the plugin servers in `servers` over the config in `config`.

    `config` is a DeclarativeConfig, a parsed mapping, or a path to kong.yml. `upstream`
    defaults to real HTTP (httpx); pass any `async (UpstreamRequest) -> UpstreamResponse`
    to skip the network. `rpc_timeout_s` is Kong's 60 s socket timeout; `max_restarts`
    bounds the `no plugin instance` restarts (Kong has no bound). Started plugin servers see
    only TZ, PATH and the variables `nginx_main_env` names (`NAME` or `NAME=value`), as
    kong.conf's `nginx_main_env` lets them through nginx's cleared worker environment.
    """

    def __init__(
        self,
        config: ConfigSource,
        servers: Sequence[PluginServerSpec] = (),
        *,
        upstream: Upstream | None = None,
        rpc_timeout_s: float = 60.0,
        start_timeout_s: float = 15.0,
        max_restarts: int = 3,
        listen_port: int = 8000,
        node_id: str | None = None,
        nginx_main_env: Sequence[str] = (),
    ) -> None:
        self.servers = list(servers)
        self.nginx_main_env = tuple(nginx_main_env)
        self.rpc_timeout_s = rpc_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_restarts = max_restarts
        self.listen_port = listen_port
        self.instances = InstanceCache()
        self.processes: dict[str, PluginServerProcess] = {}
        self.rpcs: dict[str, RpcClient] = {}
        self.plugins: dict[str, ExternalPlugin] = {}
        self.pdk = Pdk(NodeInfo(node_id or str(uuid.uuid4()), socket.gethostname()),
                       self._find_consumer)
        self._config_source = config
        self._owned_upstream = HttpxUpstream() if upstream is None else None
        self._upstream: Upstream = upstream or self._owned_upstream  # type: ignore[assignment]
        self._seq = SeqCounter()
        self._gateway: Gateway | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Query every plugin server, validate the config, then start and await the servers.

        The config is checked before any server starts, so a bad kong.yml costs no process.
        """
        try:
            for spec in self.servers:
                infos = await asyncio.to_thread(self._query, spec)
                if spec.first_only:
                    infos = infos[:1]
                elif len(infos) > 1:
                    _logger.warning("%s lists %d plugins; Kong >= 3.9 would load only the "
                                    "first (%s): give each plugin its own pluginserver entry",
                                    spec.query_cmd, len(infos), infos[0].name)
                rpc = RpcClient(spec.socket_path, timeout_s=self.rpc_timeout_s)
                rpc.on_notification = self._notification_handler(rpc)
                self.rpcs[spec.name] = rpc
                for info in infos:
                    self._add_plugin(info, rpc, spec)
            await self.reload(self._config_source)
            for spec in self.servers:
                if spec.start_cmd:
                    process = PluginServerProcess(
                        spec, env=worker_environment(self.nginx_main_env))
                    self.processes[spec.name] = process
                    process.start()
            for spec in self.servers:
                await self._wait_ready(spec)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Let log phases finish, close connections, SIGTERM managed plugin servers."""
        if self._gateway is not None:
            try:
                await asyncio.wait_for(self._gateway.drain(), drain_timeout_s)
            except TimeoutError:
                _logger.warning("log phases still running after %g s", drain_timeout_s)
        for rpc in self.rpcs.values():
            await rpc.close()
        self.rpcs.clear()
        processes, self.processes = list(self.processes.values()), {}
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))
        if self._owned_upstream is not None:
            await self._owned_upstream.aclose()

    async def reload(self, config: ConfigSource) -> None:
        """Load a new config: every plugin gets a new `__seq__`, so instances restart lazily
        (StartInstance new, then CloseInstance old), as after a Kong config rebuild."""
        declarative = _load(config)
        schemas = {name: config_fields(p.schema) for name, p in self.plugins.items()}
        schemas[keyauth.NAME] = keyauth.SCHEMA_FIELDS
        validated = declarative.validate_plugins(schemas)
        priorities = {name: p.priority for name, p in self.plugins.items()}
        priorities.update({name: b.priority for name, b in BUNDLED.items()})
        self._gateway = Gateway(
            config=validated,
            plugins=PluginSet(validated.plugins, priorities, self._seq),
            external=self.plugins,
            instances=self.instances,
            pdk=self.pdk,
            upstream=self._upstream,
            max_restarts=self.max_restarts,
        )

    @property
    def config(self) -> DeclarativeConfig:
        return self._require_gateway().config

    # -- requests ---------------------------------------------------------------------------

    async def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str = b"",
        *,
        client_ip: str = "127.0.0.1",
        host: str | None = None,
    ) -> HostResponse:
        """Run one request through Kong's flow; `path` may carry a query string."""
        path, _, query = path.partition("?")
        items = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        header_list = Headers(items)
        host_name = host or (header_list.get("host") or "localhost").split(":")[0]
        if "host" not in header_list:
            header_list.add("Host", f"{host_name}:{self.listen_port}")
        request = ClientRequest(
            method=method.upper(), path=path or "/", raw_query=query, headers=header_list,
            body=body.encode() if isinstance(body, str) else body, host=host_name,
            port=self.listen_port, client_ip=client_ip,
        )
        return await self.handle_request(request)

    async def handle_request(self, request: ClientRequest) -> HostResponse:
        return await self._require_gateway().handle(request)

    async def drain(self) -> None:
        """Wait for the log phases of every request so far."""
        await self._require_gateway().drain()

    # -- internals --------------------------------------------------------------------------

    def _require_gateway(self) -> Gateway:
        if self._gateway is None:
            raise HostError("host not started: call `await host.start()` first")
        return self._gateway

    def _query(self, spec: PluginServerSpec) -> list[PluginInfo]:
        if not spec.query_cmd:
            raise HostError(f"plugin server {spec.name!r} has no query_cmd (Kong 3.9+ "
                            "requires one)")
        return query_plugins(spec.query_cmd)

    async def _wait_ready(self, spec: PluginServerSpec) -> None:
        process = self.processes.get(spec.name)
        try:
            if process is not None:
                await asyncio.to_thread(process.wait_ready, self.start_timeout_s)
            else:
                await asyncio.to_thread(wait_for_socket, spec.socket_path,
                                        self.start_timeout_s)
        except TimeoutError as exc:
            raise HostError(str(exc)) from exc

    def _add_plugin(self, info: PluginInfo, rpc: RpcClient, spec: PluginServerSpec) -> None:
        if info.name in self.plugins or info.name in BUNDLED:
            raise HostError(f"plugin {info.name!r} is served twice (again by {spec.name!r})")
        self.plugins[info.name] = ExternalPlugin(
            name=info.name, priority=info.priority, version=info.version, phases=info.phases,
            schema=info.schema, rpc=rpc)

    def _notification_handler(self, rpc: RpcClient) -> Any:
        def on_notification(label: str, args: Any) -> None:
            if label == "serverPid" and isinstance(args, int):
                self.instances.server_pid(rpc, args)
        return on_notification

    def _find_consumer(self, key: str, by_username: bool) -> Consumer | None:
        config = self._require_gateway().config
        consumer = config.consumer(key)
        if consumer is None and by_username:
            consumer = config.consumer_by_username(key)
        return consumer


def _load(config: ConfigSource) -> DeclarativeConfig:
    if isinstance(config, DeclarativeConfig):
        return config
    if isinstance(config, str | Path):
        return load_declarative(config)
    return parse_declarative(config)
