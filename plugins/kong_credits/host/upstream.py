"""A tiny httpbin-like upstream for demos and tests (aiohttp, loopback).

- any path: 200 with JSON `{"method", "path", "query", "headers", "body"}` echoing the request;
- `/status/<code>`: that status, same JSON body;
- query `units=N`: response header `X-Units-Used: N` (how a service reports metered usage);
- query `set_header=Name:Value` (repeatable): that response header;
- `/response-headers?Name=Value...`: every query argument as a response header (httpbin);
- `/delay/<seconds>`: answer after the delay (max 10 s), to exercise timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from .http_server import LoopbackServer

__all__ = ["SampleUpstream", "point_services_at"]

UNITS_HEADER = "X-Units-Used"


class SampleUpstream(LoopbackServer):
    """`await SampleUpstream().start()` then send requests to `.url`; `await .stop()`."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(address, port)
        self.requests: list[dict[str, Any]] = []

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        echo = {
            "method": request.method,
            "path": request.rel_url.raw_path,
            "query": {k: v for k, v in request.query.items()},
            "headers": {k: v for k, v in request.headers.items()},
            "body": body.decode(errors="replace"),
        }
        self.requests.append(echo)
        status = 200
        parts = request.rel_url.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
            status = int(parts[1])
        if len(parts) == 2 and parts[0] == "delay":
            with contextlib.suppress(ValueError):
                await asyncio.sleep(min(float(parts[1]), 10.0))
        headers: dict[str, str] = {}
        if "units" in request.query:
            headers[UNITS_HEADER] = request.query["units"]
        if parts == ["response-headers"]:
            headers.update({k: v for k, v in request.query.items()})
        for item in request.query.getall("set_header", []):
            name, _, value = item.partition(":")
            if name:
                headers[name.strip()] = value.strip()
        if status in (204, 304) or request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        return web.json_response(echo, status=status, headers=headers)


def point_services_at(declarative: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Send every service to `base_url`'s scheme, host and port, keeping each service's path."""
    base = urlsplit(base_url)
    services = []
    for service in declarative.get("services") or []:
        if "url" in service:
            path = urlsplit(service["url"]).path
            service = {**service, "url": urlunsplit((base.scheme, base.netloc, path, "", ""))}
        elif "host" in service:  # protocol/host/port/path, as decK writes services
            service = {**service, "protocol": base.scheme, "host": base.hostname,
                       "port": base.port}
        services.append(service)
    return {**declarative, "services": services}
