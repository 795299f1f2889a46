"""A thin pipelined asyncio Redis client for the hot path: one EVALSHA per request.

redis.asyncio spends ~60 us of CPU per call. Here a call is packed to RESP (by hiredis), queued
for one socket write per loop iteration and awaits a future that `data_received` resolves:
replies come back in the order commands went out, so any number of concurrent callers share
one connection.
TCP (TLS with an `ssl_context`, as `rediss://` URLs give) or a unix socket, to one node;
Redis Cluster and Sentinel are lanes composed of these (redis_routing.py; `lane_from_url` there
builds the right one for any URL). One reply per command, RESP2: no pub/sub, MONITOR or MULTI;
everything else stays on redis-py. Errors are redis-py's, so callers catch one hierarchy:

    RedisError
    ├── ConnectionError     refused, lost, backing off, in flight behind a timed-out call, or
    │                       a TLS handshake that failed (certificate not verified, client
    │                       certificate missing): the reason is in the message
    │   └── AuthenticationError
    ├── TimeoutError        no reply within timeout_s; the connection is dropped, since a late
    │                       reply would otherwise be handed to the next caller
    └── ResponseError       an error reply; the connection stays usable
        ├── NoScriptError   handled inside `evalsha`: SCRIPT LOAD, then one retry
        ├── MovedError, AskError, TryAgainError, ClusterDownError: a cluster's answers,
        │                   which the cluster lane follows
        └── ReadOnlyError, NoReplicasError: a master being failed over, which the sentinel
                            lane follows
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import ssl
import weakref
from collections import deque
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any, Protocol, TypeAlias, cast

import hiredis
from redis import exceptions as errors

from .errors import InvalidInput
from .redis_url import CLIENT_CERT_HINT, RedisLocation, parse_redis_url

__all__ = ["LaneCounts", "NoReplicasError", "RedisLane", "Script", "command", "wait_command"]

Arg: TypeAlias = bytes | str | int
Reply: TypeAlias = Any  # bytes | int | None | list[Reply]: RESP2 as hiredis parses it

_INCOMPLETE = object()


class NoReplicasError(errors.ResponseError):
    """NOREPLICAS: a master with `min-replicas-to-write` set lacks the replicas it needs, so
    it refused the write (a script: at its first write, before changing anything). A master
    whose replica was just promoted answers this, which is what bounds a failover's loss."""

_ERRORS: dict[str, type[errors.RedisError]] = {  # redis-py's map, minus modules
    "ERR": errors.ResponseError, "NOSCRIPT": errors.NoScriptError,
    "WRONGPASS": errors.AuthenticationError, "NOAUTH": errors.AuthenticationError,
    "NOPERM": errors.NoPermissionError, "READONLY": errors.ReadOnlyError,
    "OOM": errors.OutOfMemoryError, "LOADING": errors.BusyLoadingError,
    "MOVED": errors.MovedError, "ASK": errors.AskError, "TRYAGAIN": errors.TryAgainError,
    "CLUSTERDOWN": errors.ClusterDownError, "NOREPLICAS": NoReplicasError,
}


def _error(reply: errors.ResponseError) -> errors.RedisError:
    code, _, message = str(reply).partition(" ")
    kind = _ERRORS.get(code)
    if kind is None:
        return reply
    try:
        return kind(message)
    except ValueError:  # a MOVED or ASK whose address redis-py cannot parse: as it came
        return reply


class LaneCounts:
    """What lanes count for the plugin server's metrics: events that happen now and then
    (a reconnect, a redirection, a refresh of where Redis is), never once per call. Lanes
    built with the same LaneCounts (every node of a cluster lane) add to it together."""

    __slots__ = ("asked", "moved", "reconnects", "refreshes")

    def __init__(self) -> None:
        self.reconnects = 0
        """Connections opened again after one of the same lane slot was lost or dropped."""
        self.moved = 0
        self.asked = 0
        """MOVED and ASK answers a cluster lane followed."""
        self.refreshes: dict[str, int] = {}
        """Refreshes of where Redis is, by kind: `slot_map` (cluster), `sentinel`."""


_PLAIN = frozenset((bytes, str, int))


def _encode(args: tuple[Arg, ...]) -> bytes:
    """One RESP array of bulk strings. Floats and bools are refused: money is integers.

    Plain bytes, str and int (every hot-path call) are packed by hiredis in C, about 2.5x
    faster than the loop below, which takes int subclasses and refuses everything else.
    """
    if _PLAIN.issuperset(map(type, args)):
        return cast(bytes, hiredis.pack_command(args))
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise errors.DataError(f"invalid argument {arg!r}: use bytes, str or int")
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def command(*args: Arg) -> bytes:
    """One command packed as RESP, for `RedisLane.send`: lanes built on RedisLane pack a call
    once and may send it to several nodes."""
    return _encode(args)


_ASKING = _encode(("ASKING",))


def wait_command(replicas: int, timeout_ms: int) -> bytes:
    """`WAIT replicas timeout_ms` packed, for `RedisLane.send_then_wait`."""
    return _encode(("WAIT", replicas, timeout_ms))


class Script:
    """A Lua script and its SHA1, computed once, so each call sends 40 bytes, not the source."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str | bytes) -> None:
        self.source = source.encode() if isinstance(source, str) else source
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest()


class _Lua(Protocol):
    """What `evalsha` needs: a `Script`, or any object with the same two attributes."""

    @property
    def sha(self) -> str: ...
    @property
    def source(self) -> str | bytes: ...


class _Connection(asyncio.Protocol):
    """One socket: commands go out in call order, replies resolve futures in the same order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(replyError=errors.ResponseError, notEnoughData=_INCOMPLETE)
        self._waiters: deque[tuple[asyncio.Future[Reply], float]] = deque()  # (future, deadline)
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._overdue: asyncio.Future[Reply] | None = None
        self.lost: asyncio.Future[None] = loop.create_future()

    @property
    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def request(self, payload: bytes) -> asyncio.Future[Reply]:
        future = self._loop.create_future()
        deadline = self._loop.time() + self._timeout_s
        self._waiters.append((future, deadline))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check_deadline)
        if not self._out:  # one write (one syscall) for every command queued this iteration
            self._loop.call_soon(self._flush)
        self._out.append(payload)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and out:
            self._transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                return self.abort(f"protocol error: {exc}")
            if reply is _INCOMPLETE:
                return None
            if not self._waiters:
                return self.abort("a reply came with no command waiting for it")
            future = self._waiters.popleft()[0]
            if future.done():  # its caller was cancelled: drop the reply, keep the order
                continue
            if isinstance(reply, errors.ResponseError):
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(f"connection lost: {exc}" if exc else "connection closed by Redis")
        self._transport = None
        if not self.lost.done():
            self.lost.set_result(None)

    def _check_deadline(self) -> None:
        """One timer per connection, aimed at the oldest call: deadlines are FIFO like replies.

        An expired call gets one more I/O poll (1 ms) before the connection is dropped, so a
        loop that was itself blocked past the deadline reads a reply that did arrive in time.
        """
        self._timer = None
        if not self._waiters:
            return
        head, deadline = self._waiters[0]
        now = self._loop.time()
        if deadline > now or self._overdue is not head:
            self._overdue = head if deadline <= now else None
            self._timer = self._loop.call_later(max(deadline - now, 0.001), self._check_deadline)
        else:
            self.abort("an earlier call on this connection timed out", expired_at=now)

    def abort(self, reason: str, *, expired_at: float = -math.inf) -> None:
        """Fail every call in flight and drop the socket: with a reply missing, order is lost."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters, self._out = self._waiters, deque(), []
        for future, deadline in waiters:
            if not future.done():
                future.set_exception(
                    errors.TimeoutError(f"Redis did not reply within {self._timeout_s} s")
                    if deadline <= expired_at
                    else errors.ConnectionError(reason)
                )
        if self._transport is not None:
            self._transport.abort()


class _WaitGroup:
    """The WAITs of one connection, at most one in flight: a call made while one is joins
    the next, sent when it returns (the calls' scripts run only then anyway)."""

    def __init__(self, conn: _Connection, wait: bytes) -> None:
        self._conn = conn
        self._wait = wait
        self._in_flight = False
        self._next: asyncio.Future[Reply] | None = None

    def after(self) -> asyncio.Future[Reply]:
        """The reply of a WAIT sent after everything already queued on the connection."""
        if not self._in_flight:
            self._in_flight = True
            sent = self._conn.request(self._wait)
            sent.add_done_callback(self._returned)
            return sent
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    def _returned(self, _: asyncio.Future[Reply]) -> None:
        waiting, self._next = self._next, None
        if waiting is None or not self._conn.usable:
            self._in_flight = False
            if waiting is not None and not waiting.done():  # their scripts failed with it
                waiting.set_exception(errors.ConnectionError("connection lost before WAIT"))
            return
        sent = self._conn.request(self._wait)
        sent.add_done_callback(self._returned)
        sent.add_done_callback(partial(_copy_outcome, waiting))


def _copy_outcome(target: asyncio.Future[Reply], source: asyncio.Future[Reply]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


class RedisLane:
    """Pipelined Redis calls over `connections` sockets, round-robin, each opened lazily.

    A call takes at most `connect_timeout_s` (if it has to connect) plus `timeout_s`. After a
    failed connect, calls fail at once with ConnectionError for `reconnect_backoff_s`: a dead
    Redis costs requests nothing and sees one connect attempt per backoff, not one per call.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 6379, path: str | None = None,
        username: str | None = None, password: str | None = None, db: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 0.25, connect_timeout_s: float = 0.5,
        reconnect_backoff_s: float = 0.5, connections: int = 1,
        counts: LaneCounts | None = None,
    ) -> None:
        if connections < 1 or timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("connections, timeout_s and connect_timeout_s must be positive")
        self._host, self._port, self._path = host, port, path
        self.address = (host, port)
        """(host, port) of a TCP node: the key cluster and sentinel lanes know it by."""
        self._ssl = ssl_context  # TLS over TCP: rediss://
        self._where = path or f"{host}:{port}"
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_backoff_s = reconnect_backoff_s
        auth = ("AUTH", username, password) if username else ("AUTH", password)
        self._handshake = [_encode(auth)] if password else []  # sent ahead of callers' commands
        self._handshake += [_encode(("SELECT", db))] if db else []
        if ssl_context is not None and not self._handshake:
            # A TLS 1.3 server checks the client's certificate after the handshake and then
            # drops the connection: a first reply proves it was accepted, so that refusal
            # fails the connect (with its backoff and a hint) instead of a caller's command.
            self._handshake = [_encode(("PING",))]
        self._conns: list[_Connection | None] = [None] * connections
        self._opened = [False] * connections  # a slot that had a connection reconnects
        self.counts = counts or LaneCounts()
        self._waits: weakref.WeakKeyDictionary[_Connection, _WaitGroup] = (
            weakref.WeakKeyDictionary())  # evalsha_then_wait's WAITs, per connection
        self._locks = [asyncio.Lock() for _ in range(connections)]
        self._next = 0
        self._retry_at = -math.inf
        self._last_error = ""
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisLane:
        """One node: `redis://`, `rediss://` (TLS) or `unix://`, as redis_url.py parses them.

        InvalidInput (a ValueError) shows the URL with its password masked, and no chained
        error: the plugin server logs it with its traceback and answers it to Kong, which
        logs it too. Cluster and Sentinel URLs are refused here: `redis_routing.lane_from_url`
        takes every form.
        """
        return cls.from_location(parse_redis_url(url), **options)

    @classmethod
    def from_location(cls, at: RedisLocation, **options: Any) -> RedisLane:
        """`from_url` for a URL already parsed."""
        if at.kind != "node":
            raise InvalidInput(
                f"invalid Redis URL {at.masked!r} for RedisLane, which speaks to one node: "
                "redis_routing.lane_from_url builds the lane of a cluster or sentinel URL")
        where: dict[str, Any] = {"path": at.path} if at.path else dict(
            zip(("host", "port"), at.nodes[0], strict=True))
        return cls(**where, db=at.db, username=at.username, password=at.password,
                   ssl_context=at.tls.context() if at.tls else None, **options)

    async def evalsha(
        self, script: _Lua, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Reply:
        """EVALSHA the script; on NOSCRIPT (Redis restarted or flushed) load it and retry once."""
        payload = _encode(("EVALSHA", script.sha, len(keys), *keys, *args))
        try:
            return await self.send(payload)
        except errors.NoScriptError:
            await self.send(_encode(("SCRIPT", "LOAD", script.source)))
            return await self.send(payload)

    async def execute(self, *args: Arg) -> Reply:
        """Any command with exactly one reply (PING, GET, SCRIPT LOAD, ...)."""
        return await self.send(_encode(args))

    async def send_asking(self, payload: bytes) -> Reply:
        """ASKING, then the packed command, back to back on one connection: a cluster node
        lets only the next command of the connection that sent ASKING into a slot it is
        importing (an ASK redirection)."""
        slot = self._next
        self._next = (slot + 1) % len(self._conns)
        conn = await self._connection(slot)
        asking, reply = await asyncio.gather(
            conn.request(_ASKING), conn.request(payload), return_exceptions=True)
        for outcome in (asking, reply):
            if isinstance(outcome, BaseException):
                raise outcome
        return reply

    async def evalsha_then_wait(
        self, script: _Lua, keys: Sequence[Arg] = (), args: Sequence[Arg] = (), *,
        replicas: int, timeout_ms: int,
    ) -> tuple[Reply, int]:
        """EVALSHA, then `WAIT replicas timeout_ms` behind it on the same connection: the
        reply, and how many replicas acknowledged the script's writes (0 too when the WAIT
        failed after the script had run, whose effect stands either way). A Redis 7.0 script
        may not call WAIT. The script's own errors raise as from `evalsha`.

        One round trip: the WAIT goes in the same write, unless one is in flight on that
        connection. A blocked WAIT holds every later command of its connection, so then the
        call joins the next WAIT, sent as the one in flight returns and shared by all calls
        queued meanwhile: a replica that does not answer costs a call at most two WAIT
        timeouts, never a queue of them."""
        payload = _encode(("EVALSHA", script.sha, len(keys), *keys, *args))
        wait = wait_command(replicas, timeout_ms)
        try:
            return await self.send_then_wait(payload, wait)
        except errors.NoScriptError:
            await self.execute("SCRIPT", "LOAD", script.source)
            return await self.send_then_wait(payload, wait)

    async def send_then_wait(self, payload: bytes, wait: bytes, *,
                             asking: bool = False) -> tuple[Reply, int]:
        """`evalsha_then_wait` for a command packed by `command` and a WAIT packed by
        `wait_command` (the same one for every call to this lane), as cluster and sentinel
        lanes send it to the node they chose. With `asking`, ASKING goes right before the
        command (an ASK redirection, as `send_asking`). The command's error is raised."""
        slot = self._next
        self._next = (slot + 1) % len(self._conns)
        conn = self._conns[slot]
        if conn is None or not conn.usable:
            conn = await self._connection(slot)
        group = self._waits.get(conn)
        if group is None:
            group = self._waits[conn] = _WaitGroup(conn, wait)
        # Queued in this order in one loop iteration: ASKING, the command, then its WAIT.
        sent = [conn.request(_ASKING)] if asking else []
        sent += [conn.request(payload), asyncio.shield(group.after())]
        *replies, acked = await asyncio.gather(*sent, return_exceptions=True)
        for outcome in replies:
            if isinstance(outcome, BaseException):
                raise outcome
        return replies[-1], acked if isinstance(acked, int) else 0

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (a call need not connect first)."""
        return any(conn is not None and conn.usable for conn in self._conns)

    async def close(self) -> None:
        """Fail calls in flight with ConnectionError, drop every socket; later calls fail."""
        self._closed = True
        conns = [conn for conn in self._conns if conn is not None]
        for conn in conns:
            conn.abort("RedisLane closed")
        await asyncio.gather(*(conn.lost for conn in conns))

    def send(self, payload: bytes) -> Awaitable[Reply]:
        """A command packed by `command`; its reply, or its error raised.

        The hot path: no coroutine of its own unless the slot has to (re)connect."""
        slot = self._next
        self._next = (slot + 1) % len(self._conns)
        conn = self._conns[slot]
        if conn is not None and conn.usable:
            return conn.request(payload)
        return self._connect_and_send(slot, payload)

    async def _connect_and_send(self, slot: int, payload: bytes) -> Reply:
        return await (await self._connection(slot)).request(payload)

    async def _connection(self, slot: int) -> _Connection:
        async with self._locks[slot]:  # callers arriving mid-connect share its outcome
            conn = self._conns[slot]
            if conn is None or not conn.usable:
                conn = self._conns[slot] = await self._connect()
                if self._opened[slot]:
                    self.counts.reconnects += 1
                self._opened[slot] = True
        return conn

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._closed or loop.time() < self._retry_at:
            raise errors.ConnectionError(
                "RedisLane is closed" if self._closed
                else f"Redis at {self._where} is unreachable: {self._last_error}")
        factory = partial(_Connection, loop, self._timeout_s)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await (
                    loop.create_unix_connection(factory, self._path) if self._path
                    else loop.create_connection(
                        factory, self._host, self._port, ssl=self._ssl,
                        server_hostname=self._host if self._ssl else None))
                await asyncio.gather(*(conn.request(command) for command in self._handshake))
            if self._closed:  # closed while connecting
                raise errors.ConnectionError("RedisLane is closed")
            return conn
        except BaseException as exc:
            if conn is not None:  # failed or cancelled: leave no half-open socket behind
                conn.abort("connect failed")
            if self._closed or not isinstance(exc, (OSError, errors.RedisError)):
                raise
            # OSError covers the builtin TimeoutError, raised by asyncio.timeout with no message
            self._last_error = str(exc) or f"connect timed out after {self._connect_timeout_s} s"
            self._retry_at = loop.time() + self._reconnect_backoff_s
            if conn is not None and self._ssl is not None and type(exc) is errors.ConnectionError:
                self._last_error += CLIENT_CERT_HINT  # dropped after a TLS handshake it passed
            elif isinstance(exc, errors.ConnectionError):
                raise
            raise errors.ConnectionError(f"Redis at {self._where}: {self._last_error}") from exc
