"""`kong.log.serialize()` data, built once when the log phase starts (like Kong's snapshot).

Shape of `serialize()` in `kong/pdk/log.lua` (3.8+): request {id, uri, url, querystring,
method, headers, size}, upstream_uri, upstream_status, response {status, headers, size},
latencies {kong, proxy, request, receive}, tries, authenticated_entity, route, service,
consumer, client_ip, started_at (ms), source, workspace, workspace_name. Absent values are
left out (nil in Lua); `tls` is absent because the host listens without TLS.
`authorization` and `proxy-authorization` request headers are "REDACTED" as in Kong, and
`authenticated_entity` is `{id}` only: Kong reads `credential.consumer_id`, which key-auth
credentials do not have, and a misspelt `ctx.authenticate_consumer`.
"""

from __future__ import annotations

from typing import Any

from .context import Headers, RequestContext, query_table
from .entities import DEFAULT_WORKSPACE_ID

__all__ = ["serialize_data"]


def _entity(value: Any) -> Any:
    return value.as_pdk() if hasattr(value, "as_pdk") else value


def serialize_data(
    ctx: RequestContext, status: int, headers: Headers, body_size: int
) -> dict[str, Any]:
    """The table Kong's log timer serializes for this request, final response included."""
    request = ctx.request
    request_headers = request.headers.lua_table()
    for secret in ("authorization", "proxy-authorization"):
        if secret in request_headers:
            request_headers[secret] = "REDACTED"
    request_size = len(request.body) + sum(len(k) + len(v) + 4 for k, v in request.headers)
    request_size += len(request.method) + len(request.request_uri) + 12
    upstream = ctx.upstream if ctx.source == "service" else None
    upstream_uri = ""
    if upstream is not None:
        upstream_uri = upstream.path + (f"?{upstream.raw_query}" if upstream.raw_query else "")
    data: dict[str, Any] = {
        "request": {
            "id": ctx.request_id,
            "uri": request.request_uri,
            "url": f"{request.scheme}://{request.host}:{request.port}{request.request_uri}",
            "querystring": query_table(request.raw_query),
            "method": request.method,
            "headers": request_headers,
            "size": request_size,
        },
        "upstream_uri": upstream_uri,
        "upstream_status": str(ctx.service_response.status) if ctx.service_response else "",
        "response": {
            "status": status,
            "headers": headers.lua_table(),
            "size": body_size + sum(len(k) + len(v) + 4 for k, v in headers),
        },
        "latencies": {
            "kong": ctx.latencies_ms.get("kong", 0),
            "proxy": ctx.latencies_ms.get("proxy", -1),
            "request": ctx.latencies_ms.get("request", 0),
            "receive": 0,
        },
        "client_ip": request.client_ip,
        "started_at": ctx.start_time_ms,
        "source": ctx.source or "error",
        "workspace": DEFAULT_WORKSPACE_ID,
        "workspace_name": "default",
    }
    if upstream is not None:
        data["tries"] = [{"ip": upstream.host, "port": upstream.port,
                          "balancer_start": ctx.start_time_ms, "balancer_latency": 0}]
    credential = _entity(ctx.credential)
    if credential is not None:
        data["authenticated_entity"] = {"id": credential.get("id")}
    for key, value in (("route", ctx.route), ("service", ctx.service),
                       ("consumer", ctx.consumer)):
        if value is not None:
            data[key] = _entity(value)
    for dotted, value in ctx.ngx_ctx.get("serialize_values", {}).items():
        _set_path(data, dotted, value)
    return data


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """`kong.log.set_serialize_value("a.b", v)`: create tables on the way, nil deletes."""
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
