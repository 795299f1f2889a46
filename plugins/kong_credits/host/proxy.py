"""HTTP listener for the host (aiohttp): real requests in, `Host.handle_request` out.

    server = ProxyServer(host, "127.0.0.1", 8000)
    await server.start()          # curl -H 'apikey: KEY' http://127.0.0.1:8000/route
    ...
    await server.stop()

Loopback by default; it is a test and development tool, not a gateway.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from .context import ClientRequest, Headers
from .host import Host
from .http_server import LoopbackServer

__all__ = ["ProxyServer"]

_SKIP = {"content-length", "transfer-encoding", "connection"}


class ProxyServer(LoopbackServer):
    """Serves `host` on `address:port` (port 0 picks a free one; see `.port`)."""

    def __init__(self, host: Host, address: str = "127.0.0.1", port: int = 8000) -> None:
        super().__init__(address, port)
        self.host = host

    async def start(self) -> str:
        url = await super().start()
        self.host.listen_port = self.port
        return url

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        client_request = ClientRequest(
            method=request.method,
            path=request.rel_url.raw_path,
            raw_query=request.rel_url.raw_query_string,
            headers=Headers((k.decode("latin-1"), v.decode("latin-1"))
                            for k, v in request.raw_headers),
            body=body,
            scheme="http",
            host=(request.host or self.address).rsplit(":", 1)[0].lower(),
            port=self.port,
            client_ip=request.remote or "127.0.0.1",
            client_port=peer[1] if isinstance(peer, tuple) and len(peer) > 1 else 0,
            http_version=float(f"{request.version.major}.{request.version.minor}"),
        )
        result = await self.host.handle_request(client_request)
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in result.headers if k.lower() not in _SKIP)
        return web.Response(status=result.status, body=result.body, headers=headers)
