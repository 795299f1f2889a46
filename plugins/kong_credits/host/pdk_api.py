"""The `kong.*` functions the host answers, one per PDK method, over a `CallSite`.

`pdk.py` maps method names to these functions with Kong's phase lists; here each function
does what Kong's Lua does for one request: read or change the `RequestContext`, raise
`PdkRaised` where Kong raises (bad arguments, no live request in the log timer), raise
`PdkExit` for `kong.response.exit/error`. Log-phase reads go to the snapshot Kong saves for
its log timer (`LogSnapshot`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import codec, responses
from .context import Headers, RequestContext, query_table

__all__ = ["TIMER_ERROR", "CallSite", "PdkExit", "PdkRaised"]

TIMER_ERROR = "API disabled in the current context"


class PdkRaised(Exception):
    """A PDK function raised (a Lua error in Kong): no Step is sent, the handler ends."""


class PdkExit(Exception):
    """`kong.response.exit/error` ran: the request's response is decided, no Step is sent."""

    def __init__(self, response: responses.ExitResponse) -> None:
        super().__init__(f"exit {response.status}")
        self.response = response


@dataclass(frozen=True)
class CallSite:
    ctx: RequestContext
    plugin: str
    plugin_id: str
    phase: str

    @property
    def in_timer(self) -> bool:
        return self.phase == "log"


def as_table(value: Any) -> Any:
    return value.as_pdk() if hasattr(value, "as_pdk") else value


def lua_tostring(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


# -- kong.request / kong.client -------------------------------------------------------------


def get_header(call: CallSite, name: Any) -> str | None:
    if not isinstance(name, str):
        raise ValueError("header name must be a string")
    if call.in_timer and call.ctx.log is not None:
        value = Headers(header_pairs(call.ctx.log.request_headers)).get(name)
        return value
    return call.ctx.request.headers.get(name)


def get_headers(call: CallSite, max_headers: Any = None) -> dict[str, Any]:
    if call.in_timer and call.ctx.log is not None:
        return call.ctx.log.request_headers
    return call.ctx.request.headers.lua_table()


def header_pairs(table: Mapping[str, str | list[str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in table.items():
        out.extend((name, v) for v in ([value] if isinstance(value, str) else value))
    return out


def get_body(call: CallSite, mimetype: Any = None, *_: Any) -> Any:
    request = call.ctx.request
    kind = (mimetype or request.headers.get("content-type") or "").split(";")[0].strip()
    if kind == "application/json":
        return json.loads(request.body or b"null")
    if kind == "application/x-www-form-urlencoded":
        return query_table(request.body.decode())
    return None


def authenticate(call: CallSite, consumer: Any = None, credential: Any = None) -> None:
    if consumer is None and credential is None:
        raise ValueError("either credential or consumer must be provided")
    for name, value in (("consumer", consumer), ("credential", credential)):
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a table or nil")
    call.ctx.consumer = consumer
    call.ctx.credential = credential


# -- kong.response ----------------------------------------------------------------------------


def response_headers(call: CallSite) -> dict[str, Any]:
    if call.in_timer and call.ctx.log is not None:
        return call.ctx.log.response_headers
    return call.ctx.response_headers.lua_table()


def response_header(call: CallSite, name: Any) -> str | None:
    if not isinstance(name, str):
        raise ValueError("header name must be a string")
    return Headers(header_pairs(response_headers(call))).get(name)


def response_status(call: CallSite) -> int | None:
    if call.in_timer and call.ctx.log is not None:
        return call.ctx.log.response_status
    return call.ctx.status


def set_status(call: CallSite, status: Any) -> None:
    if not isinstance(status, int) or isinstance(status, bool):
        raise ValueError("code must be a number")
    if not 100 <= status <= 599:
        raise ValueError("code must be a number between 100 and 599")
    call.ctx.status = status


def set_header(target: Callable[[CallSite], Headers], append: bool) -> Callable[..., None]:
    def apply(call: CallSite, name: Any, value: Any) -> None:
        values = responses.header_values(name, value)
        if str(name).lower() in ("transfer-encoding", "transfer_encoding"):
            return
        headers = target(call)
        (headers.add if append else headers.set)(name, values)
    return apply


def set_headers(target: Callable[[CallSite], Headers]) -> Callable[..., None]:
    def apply(call: CallSite, headers: Any) -> None:
        if not isinstance(headers, Mapping):
            raise ValueError("headers must be a table")
        checked = {name: responses.header_values(name, v) for name, v in headers.items()}
        for name, values in checked.items():
            target(call).set(name, values)
    return apply


def clear_header(target: Callable[[CallSite], Headers]) -> Callable[..., None]:
    def apply(call: CallSite, name: Any) -> None:
        if not isinstance(name, str):
            raise ValueError("header name must be a string")
        target(call).remove(name)
    return apply


def response_exit(call: CallSite, status: Any, body: Any = None, headers: Any = None) -> None:
    raise PdkExit(responses.exit_response(status, body, headers, call.ctx.response_headers))


def response_error(call: CallSite, status: Any, message: Any = None, headers: Any = None) -> None:
    ctx = call.ctx
    raise PdkExit(responses.error_response(
        status, message, headers, accept=ctx.request.headers.get("accept"),
        request_id=ctx.request_id, current=ctx.response_headers))


def response_source(call: CallSite) -> str:
    return call.ctx.source or "error"


# -- kong.service.request / kong.service.response ----------------------------------------------


def upstream_request(call: CallSite) -> Any:
    if call.ctx.upstream is None:
        raise ValueError("no upstream request yet")
    return call.ctx.upstream


def upstream_headers(call: CallSite) -> Headers:
    return upstream_request(call).headers


def set_upstream(attr: str, check: Callable[[Any], Any]) -> Callable[..., None]:
    def apply(call: CallSite, value: Any) -> None:
        setattr(upstream_request(call), attr, check(value))
    return apply


def check_string(what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{what} must be a string")
        return value
    return check


def check_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("path must start with /")
    return value


def check_method(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in {
        "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE",
        "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE",
    }:
        raise ValueError(f"invalid method: {value}")
    return value.upper()


def check_scheme(value: Any) -> str:
    if value not in ("http", "https"):
        raise ValueError(f"invalid scheme: {value}")
    return str(value)


def check_body(value: Any) -> bytes:
    if not isinstance(value, str | bytes):
        raise ValueError("body must be a string")
    return value.encode() if isinstance(value, str) else value


def set_query(call: CallSite, args: Any) -> None:
    if not isinstance(args, Mapping):
        raise ValueError("args must be a table")
    parts: list[str] = []
    for name in sorted(args):
        values = args[name] if isinstance(args[name], list) else [args[name]]
        for value in values:
            parts.append(name if value is True else f"{name}={lua_tostring(value)}")
    upstream_request(call).raw_query = "&".join(parts)


def clear_query_arg(call: CallSite, name: Any) -> None:
    if not isinstance(name, str):
        raise ValueError("query argument name must be a string")
    upstream = upstream_request(call)
    kept = [p for p in upstream.raw_query.split("&") if p and p.split("=", 1)[0] != name]
    upstream.raw_query = "&".join(kept)


def set_body(call: CallSite, body: Any, mime: Any = None) -> None:
    upstream = upstream_request(call)
    kind = mime or (upstream.headers.get("content-type") or "").split(";")[0]
    if kind != "application/json":
        raise ValueError(f"unsupported content type '{kind}' (the host only encodes JSON)")
    upstream.body = codec.cjson_encode(body).encode()
    upstream.headers.set("Content-Type", "application/json")


def enable_buffering(call: CallSite) -> None:
    call.ctx.buffered = True


def service_response(call: CallSite) -> Any:
    response = call.ctx.service_response
    if call.in_timer and not call.ctx.buffered:
        raise PdkRaised(TIMER_ERROR)
    return response


def service_status(call: CallSite) -> int | None:
    response = service_response(call)
    return response.status if response else None


def service_headers(call: CallSite, max_headers: Any = None) -> dict[str, Any]:
    response = service_response(call)
    return response.headers.lua_table() if response else {}


def service_header(call: CallSite, name: Any) -> str | None:
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    response = service_response(call)
    return response.headers.get(name) if response else None


def service_raw_body(call: CallSite) -> bytes:
    if not call.ctx.buffered:
        raise PdkRaised("service body is only available with buffered proxying (see: "
                        "kong.service.request.enable_buffering function)")
    response = call.ctx.service_response
    return response.body if response else b""


# -- kong.nginx / kong.ctx / kong.log.serialize ------------------------------------------------


def get_var(call: CallSite, name: Any) -> Any:
    ctx, request = call.ctx, call.ctx.request
    if not isinstance(name, str):
        name = str(name)
    if name.startswith("http_"):
        return request.headers.get(name[5:])
    if name.startswith("arg_"):
        value = query_table(request.raw_query).get(name[4:])
        return value if isinstance(value, str) else None
    upstream = ctx.upstream
    variables: dict[str, Any] = {
        "request": f"{request.method} {request.request_uri} HTTP/{request.http_version:g}",
        "request_id": ctx.request_id,
        "request_uri": request.request_uri,
        "request_method": request.method,
        "request_length": str(len(request.body)),
        "uri": request.path,
        "args": request.raw_query or None,
        "is_args": "?" if request.raw_query else "",
        "query_string": request.raw_query or None,
        "scheme": request.scheme,
        "host": request.host,
        "server_port": str(request.port),
        "server_addr": "127.0.0.1",
        "remote_addr": request.client_ip,
        "realip_remote_addr": request.client_ip,
        "remote_port": str(request.client_port),
        "binary_remote_addr": None,
        "upstream_uri": upstream.path if upstream else None,
        "upstream_scheme": upstream.scheme if upstream else None,
        "upstream_host": upstream.host if upstream else None,
        "upstream_status": (str(ctx.service_response.status) if ctx.service_response else None),
    }
    return variables.get(name)


def shared_get(call: CallSite, key: Any) -> Any:
    return call.ctx.shared.get(key)


def shared_set(call: CallSite, key: Any, value: Any) -> None:
    call.ctx.shared[key] = value


def ctx_get(call: CallSite, key: Any) -> Any:
    return call.ctx.ngx_ctx.get(key)


def ctx_set(call: CallSite, key: Any, value: Any) -> None:
    call.ctx.ngx_ctx[key] = value


def serialize(call: CallSite) -> str:
    snapshot = call.ctx.log
    if snapshot is None:
        raise PdkRaised("no log snapshot")
    return codec.cjson_encode(snapshot.serialize_data)


def set_serialize_value(call: CallSite, key: Any, value: Any, *_: Any) -> None:
    if not isinstance(key, str):
        raise ValueError("key must be a string")
    call.ctx.ngx_ctx.setdefault("serialize_values", {})[key] = value


def req_start_time(call: CallSite) -> float:
    return call.ctx.start_time_s
