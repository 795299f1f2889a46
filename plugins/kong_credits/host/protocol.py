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
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import msgpack

__all__ = ["RpcClient", "RpcError", "RpcProtocolError"]

Notification = Callable[[str, Any], None]

_pack = msgpack.Packer(use_bin_type=True).pack  # resets after every call: safe to share
_NOT_A_RESPONSE = "RPC response expected from Go plugin server"


class RpcError(Exception):
    """A failed call: the server's error string, `no data`, or a connect/send error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RpcProtocolError(Exception):
    """The server broke the protocol (Kong's asserts): wrong response type or msgid."""


class _Connection(asyncio.Protocol):
    """One pooled socket with at most one call in flight: a Protocol, so a response wakes its
    caller straight from `data_received` (no stream reader, no timeout task per read)."""

    def __init__(self, client: RpcClient) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        # 16 KiB, not msgpack's 1 MiB: feed() walks the whole buffer, so all of it ends up
        # resident, for each of up to 256 pooled connections (it grows for bigger messages).
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, read_size=16 * 1024)
        self._received: deque[Any] = deque()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[list[Any]] | None = None
        self._msgid = 0
        self._eof = False
        self.idle_since = time.monotonic()

    def usable(self, now: float, idle_timeout_s: float) -> bool:
        return (not self._eof and self._transport is not None
                and not self._transport.is_closing() and now - self.idle_since < idle_timeout_s)

    async def request(self, payload: bytes, msgid: int, timeout_s: float) -> list[Any]:
        """Send one request; its response, or TimeoutError/EOFError/RpcProtocolError/
        unpacking errors (the caller then closes this connection)."""
        assert self._transport is not None and self._waiter is None
        waiter = self._waiter = self._loop.create_future()
        self._msgid = msgid
        timer = self._loop.call_later(timeout_s, self._expire, waiter)
        try:
            self._transport.write(payload)
            self._deliver()  # a response (or EOF) may already be buffered
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        try:
            self._received.extend(self._unpacker)
        except (ValueError, msgpack.UnpackException) as exc:
            self._fail(exc)
            return
        self._deliver()

    def eof_received(self) -> bool:
        self._eof = True
        self._fail(EOFError())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._fail(exc or EOFError())

    def _deliver(self) -> None:
        """Hand the buffered messages to the waiting call: notifications, then its response."""
        waiter = self._waiter
        while self._received and waiter is not None and not waiter.done():
            message = self._received.popleft()
            if not isinstance(message, list | tuple) or not message:
                waiter.set_exception(RpcProtocolError(_NOT_A_RESPONSE))
            elif message[0] == 2 and len(message) >= 3:
                if self._client.on_notification is not None:
                    self._client.on_notification(str(message[1]), message[2])
            elif message[0] != 1 or len(message) != 4:
                waiter.set_exception(RpcProtocolError(_NOT_A_RESPONSE))
            elif message[1] != self._msgid:
                waiter.set_exception(
                    RpcProtocolError("unexpected RPC response ID from Go plugin server"))
            else:
                waiter.set_result(list(message))
        if self._eof:
            self._fail(EOFError())

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _expire(self, waiter: asyncio.Future[list[Any]]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    def close(self) -> None:
        self._eof = True
        if self._transport is not None:
            self._transport.close()


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
        conn = self._reuse()
        if conn is None:
            try:
                conn = await self._connect()
            except (OSError, TimeoutError) as exc:
                raise RpcError(f"trying to connect: {exc}") from exc
        try:
            message = await conn.request(_pack([0, msgid, method, [arg]]), msgid, self.timeout_s)
        except (OSError, TimeoutError, EOFError, ValueError, msgpack.UnpackException) as exc:
            conn.close()
            raise RpcError("no data") from exc
        except BaseException:  # RpcProtocolError, or the caller was cancelled mid-call
            conn.close()
            raise
        self._release(conn)
        if message[2] is not None:
            raise RpcError(str(message[2]))
        return message[3]

    def _reuse(self) -> _Connection | None:
        """An idle pooled connection still open, dropping those the server closed."""
        if not self._idle:
            return None
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now, self.idle_timeout_s):
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_unix_connection(lambda: _Connection(self), self.socket_path),
            self.timeout_s,
        )
        return conn

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
        await asyncio.sleep(0)  # let the transports finish closing
