"""The state of one request as Kong holds it (`ngx.ctx`, `ngx.var`, `ngx.header`, ...).

Everything the PDK reads or writes for a request lives on a `RequestContext`; nothing is
global, so concurrent requests never see each other's state.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from .entities import Consumer, KeyAuthCredential, Route, Service

__all__ = [
    "ClientRequest",
    "ExitResponse",
    "Headers",
    "LogSnapshot",
    "PdkCall",
    "RequestContext",
    "UpstreamRequest",
    "UpstreamResponse",
    "query_table",
]


class Headers:
    """Ordered, case-insensitive, multi-valued headers, as nginx keeps them."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(str(k), str(v)) for k, v in items]
        self._keys = [_normalize(k) for k, _ in self._items]  # lookup names, kept in step

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _normalize(name) in self._keys

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        copied = Headers()
        copied._items, copied._keys = list(self._items), list(self._keys)
        return copied

    def get(self, name: str) -> str | None:
        key = _normalize(name)
        for k, (_, v) in zip(self._keys, self._items, strict=True):
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        key = _normalize(name)
        return [v for k, (_, v) in zip(self._keys, self._items, strict=True) if k == key]

    def set(self, name: str, value: str | list[str]) -> None:
        """Replace every value of `name` (an empty list clears it)."""
        self.remove(name)
        self.add(name, value)

    def add(self, name: str, value: str | list[str]) -> None:
        key = _normalize(name)
        for v in [value] if isinstance(value, str) else value:
            self._items.append((name, v))
            self._keys.append(key)

    def remove(self, name: str) -> None:
        key = _normalize(name)
        if key in self._keys:
            kept = [(k, item) for k, item in zip(self._keys, self._items, strict=True)
                    if k != key]
            self._keys = [k for k, _ in kept]
            self._items = [item for _, item in kept]

    def lua_table(self) -> dict[str, str | list[str]]:
        """`ngx.req.get_headers()`: lowercased names; a repeated header is an array."""
        table: dict[str, str | list[str]] = {}
        for name, value in self._items:
            key = name.lower()
            current = table.get(key)
            if current is None:
                table[key] = value
            elif isinstance(current, list):
                current.append(value)
            else:
                table[key] = [current, value]
        return table


def _normalize(name: str) -> str:
    """nginx treats `_` like `-` when a header is looked up by variable name."""
    return name.lower().replace("_", "-")


def query_table(raw_query: str) -> dict[str, Any]:
    """`ngx.req.get_uri_args()`: `a=1` -> "1", `a` -> true, repeated -> array."""
    table: dict[str, Any] = {}
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        if "=" in part:
            raw_name, raw_value = part.split("=", 1)
            item: str | bool = unquote_plus(raw_value)
        else:
            raw_name, item = part, True
        name = unquote_plus(raw_name)
        if name in table:
            current = table[name]
            table[name] = [*current, item] if isinstance(current, list) else [current, item]
        else:
            table[name] = item
    return table


@dataclass(frozen=True)
class ClientRequest:
    """What the client sent. `path` has no query string; `raw_query` has no `?`."""

    method: str
    path: str
    raw_query: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    scheme: str = "http"
    host: str = "localhost"
    port: int = 8000
    client_ip: str = "127.0.0.1"
    client_port: int = 0
    http_version: float = 1.1

    @property
    def request_uri(self) -> str:
        return f"{self.path}?{self.raw_query}" if self.raw_query else self.path


@dataclass
class UpstreamRequest:
    """The request Kong will send to the service; `kong.service.request.*` edit it."""

    method: str
    scheme: str
    host: str
    port: int
    path: str
    raw_query: str
    headers: Headers
    body: bytes

    @property
    def url(self) -> str:
        query = f"?{self.raw_query}" if self.raw_query else ""
        return f"{self.scheme}://{self.host}:{self.port}{self.path}{query}"


@dataclass
class UpstreamResponse:
    status: int
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""


@dataclass(frozen=True)
class ExitResponse:
    """A response Kong produced itself (`kong.response.exit/error`, 500, 404, ...)."""

    status: int
    body: bytes
    headers: Headers


@dataclass(frozen=True)
class PdkCall:
    """One PDK call a plugin made, for tests and the PDK-call budget."""

    plugin: str
    phase: str
    method: str


@dataclass(frozen=True)
class LogSnapshot:
    """What Kong saves for the log timer (`save_for_later` in `plugin_servers/plugin.lua`)."""

    serialize_data: dict[str, Any]
    request_headers: dict[str, str | list[str]]
    response_headers: dict[str, str | list[str]]
    response_status: int
    req_start_time: float


@dataclass
class RequestContext:
    """Per-request state: `ngx.ctx` plus the request, response and PDK bookkeeping."""

    request: ClientRequest
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    start_time_s: float = field(default_factory=time.time)
    phase: str = "rewrite"
    route: Route | None = None
    service: Service | None = None
    consumer: Consumer | dict[str, Any] | None = None
    credential: KeyAuthCredential | dict[str, Any] | None = None
    shared: dict[str, Any] = field(default_factory=dict)
    ngx_ctx: dict[str, Any] = field(default_factory=dict)
    response_headers: Headers = field(default_factory=Headers)  # ngx.header
    status: int | None = None  # ngx.status
    upstream: UpstreamRequest | None = None
    service_response: UpstreamResponse | None = None
    buffered: bool = False  # Kong's ctx.buffered_proxying
    exit: ExitResponse | None = None
    source: str | None = None  # "service", "exit" or "error"
    log: LogSnapshot | None = None
    pdk_calls: dict[str, int] = field(default_factory=dict)
    plugin_s: dict[str, float] = field(default_factory=dict)  # phase -> s in external plugins
    calls: list[PdkCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what Kong would write to error.log
    logs: list[tuple[str, str, str]] = field(default_factory=list)  # (level, plugin, text)
    latencies_ms: dict[str, int] = field(default_factory=dict)

    @property
    def start_time_ms(self) -> int:
        return int(self.start_time_s * 1000)

    def count_call(self, plugin: str, phase: str, method: str) -> None:
        self.pdk_calls[phase] = self.pdk_calls.get(phase, 0) + 1
        self.calls.append(PdkCall(plugin, phase, method))
