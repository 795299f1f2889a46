"""MessagePack-RPC client to one plugin server, as Kong's `mp_rpc.lua` speaks it.

Wire: a unix stream socket carrying concatenated msgpack values. A call sends
`[0, msgid, "plugin.<Method>", [arg]]` and reads until `[1, msgid, error, result]`, handing any
`[2, label, args]` notification read before it to `on_notification`.

Kong's rules kept here:
- one msgid counter per client from 1, shared by all connections (ids on one connection
  rise with gaps);
- a keepalive pool: a call takes an idle connection or opens one, sends one request, reads one
  response and puts it back (256 idle kept, 60 s idle timeout): one request in flight per
  connection, no pipelining, so HandleEvent and the Steps of one event may use different
  connections;
- a response of another type or msgid is a Lua `assert` failure in Kong: RpcProtocolError;
- EOF or a timeout while reading is Kong's `"no data"` error; an error answer is a string.
Pooled connections the server closed are dropped before reuse, as OpenResty's keepalive pool
does (it watches idle connections and closes them on EOF).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import msgpack

__all__ = ["RpcClient", "RpcError", "RpcProtocolError"]

Notification = Callable[[str, Any], None]

_READ_CHUNK = 65536


class RpcError(Exception):
    """A failed call: the server's error string, `no data`, or a connect/send error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RpcProtocolError(Exception):
    """The server broke the protocol (Kong's asserts): wrong response type or msgid."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.idle_since = time.monotonic()

    def usable(self, now: float, idle_timeout_s: float) -> bool:
        return (not self.reader.at_eof() and not self.writer.is_closing()
                and now - self.idle_since < idle_timeout_s)

    async def read_message(self, timeout_s: float) -> Any:
        while True:
            with contextlib.suppress(StopIteration):
                return next(self.unpacker)
            data = await asyncio.wait_for(self.reader.read(_READ_CHUNK), timeout_s)
            if not data:
                raise EOFError
            self.unpacker.feed(data)

    def close(self) -> None:
        self.writer.close()


class RpcClient:
    """Calls `plugin.*` methods on the plugin server listening at `socket_path`."""

    def __init__(
        self,
        socket_path: str,
        *,
        timeout_s: float = 60.0,
        max_idle: int = 256,
        idle_timeout_s: float = 60.0,
        on_notification: Notification | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self.idle_timeout_s = idle_timeout_s
        self.on_notification = on_notification
        self._msgid = 0
        self._idle: list[_Connection] = []
        self._closed = False

    @property
    def last_msgid(self) -> int:
        """The msgid of the latest request sent (0 before the first)."""
        return self._msgid

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def call(self, method: str, arg: Any) -> Any:
        """Send one request and return its result; raise RpcError or RpcProtocolError."""
        self._msgid += 1
        msgid = self._msgid
        try:
            conn = await self._acquire()
        except (OSError, TimeoutError) as exc:
            raise RpcError(f"trying to connect: {exc}") from exc
        payload = msgpack.packb([0, msgid, method, [arg]], use_bin_type=True)
        try:
            conn.writer.write(payload)
            await asyncio.wait_for(conn.writer.drain(), self.timeout_s)
        except (OSError, TimeoutError) as exc:
            conn.close()
            raise RpcError(f"send: {exc}") from exc
        try:
            message = await self._read_response(conn, msgid)
        except (OSError, TimeoutError, EOFError, ValueError, msgpack.UnpackException) as exc:
            conn.close()
            raise RpcError("no data") from exc
        except RpcProtocolError:
            conn.close()
            raise
        self._release(conn)
        if message[2] is not None:
            raise RpcError(str(message[2]))
        return message[3]

    async def _read_response(self, conn: _Connection, msgid: int) -> list[Any]:
        while True:
            message = await conn.read_message(self.timeout_s)
            if not isinstance(message, list | tuple) or not message:
                raise RpcProtocolError("RPC response expected from Go plugin server")
            if message[0] == 2 and len(message) >= 3:
                if self.on_notification is not None:
                    self.on_notification(str(message[1]), message[2])
                continue
            if message[0] != 1 or len(message) != 4:
                raise RpcProtocolError("RPC response expected from Go plugin server")
            if message[1] != msgid:
                raise RpcProtocolError("unexpected RPC response ID from Go plugin server")
            return list(message)

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now, self.idle_timeout_s):
                return conn
            conn.close()
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(self.socket_path), self.timeout_s
        )
        return _Connection(reader, writer)

    def _release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def close(self) -> None:
        """Close idle connections; calls in flight close theirs when they end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
