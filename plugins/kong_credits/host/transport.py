"""How the host reaches services: an `Upstream` is any async callable request -> response.

`HttpxUpstream` proxies over HTTP with one pooled `httpx.AsyncClient`; benchmarks and tests
can pass a plain coroutine function instead (`static_upstream(...)`) and skip the network.
Connection failures raise `UpstreamError` with the status Kong would answer (502, or 504 on
a timeout).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from .context import Headers, UpstreamRequest, UpstreamResponse

__all__ = ["HOP_BY_HOP", "HttpxUpstream", "Upstream", "UpstreamError", "static_upstream"]

Upstream = Callable[[UpstreamRequest], Awaitable[UpstreamResponse]]

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "upgrade", "te", "trailer", "proxy-authenticate", "content-length"})


class UpstreamError(Exception):
    """The service could not be reached; `status` is Kong's answer (502 or 504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpxUpstream:
    """Sends upstream requests with httpx; timeouts follow the service's (ms) settings."""

    def __init__(self, client: httpx.AsyncClient | None = None, timeout_s: float = 60.0) -> None:
        self._owned = client is None
        if client is None:
            client = httpx.AsyncClient(
                timeout=timeout_s,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))
            client.headers.clear()  # no httpx User-Agent/Accept-Encoding: forward the client's
        self._client = client

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP]
        try:
            async with self._client.stream(
                request.method, request.url, headers=headers, content=request.body or None
            ) as response:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
        except httpx.TimeoutException as exc:
            raise UpstreamError(504, f"upstream timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(502, f"upstream failed: {exc!r}") from exc
        # raw bytes: the body is passed on still encoded, matching Content-Encoding
        return UpstreamResponse(response.status_code, Headers(response.headers.multi_items()),
                                body)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


def static_upstream(
    status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"{}"
) -> Upstream:
    """An upstream that always answers the same response, for benchmarks and tests."""

    async def answer(request: UpstreamRequest) -> UpstreamResponse:
        return UpstreamResponse(status, Headers((headers or {}).items()), body)

    return answer
