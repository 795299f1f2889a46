"""A scripted msgpack-RPC plugin server on a unix socket, to see exactly what the host sends."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

# A responder gets (method, arg) and returns ("ok", result), ("err", message), ("eof",),
# ("bad_msgid",) or ("hang",).
Responder = Callable[[str, Any], tuple]


@dataclass
class Request:
    connection: int
    msgid: int
    method: str
    args: list[Any]


@dataclass
class FakePluginServer:
    path: str
    responder: Responder
    server_pid: int | None = None  # sent as [2, "serverPid", pid] before every answer
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = next(self._ids)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        try:
            while data := await reader.read(65536):
                unpacker.feed(data)
                for kind, msgid, method, args in unpacker:
                    assert kind == 0
                    self.requests.append(Request(connection, msgid, method, args))
                    answer = self.responder(method, args[0])
                    if answer[0] == "eof":
                        writer.close()
                        return
                    if answer[0] == "hang":
                        await asyncio.sleep(3600)
                    if self.server_pid is not None:
                        writer.write(msgpack.packb([2, "serverPid", self.server_pid]))
                    if answer[0] == "bad_msgid":
                        writer.write(msgpack.packb([1, msgid + 1000, None, None]))
                    elif answer[0] == "err":
                        writer.write(msgpack.packb([1, msgid, answer[1], None]))
                    else:
                        writer.write(msgpack.packb([1, msgid, None, answer[1]],
                                                   use_bin_type=True))
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
