"""Unix-socket transport: each Kong connection an asyncio Protocol, its requests answered in
order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import stat
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

import msgpack

from .errors import PluginServerError, ProtocolError
from .rpc import PendingAnswer, PluginServer
from .wire import new_unpacker

__all__ = ["Listener", "run", "run_on_uvloop", "serve"]

logger = logging.getLogger(__name__)


class _KongConnection(asyncio.Protocol):
    """One of Kong's connections: requests answered one at a time, in the order they came.

    Kong keeps one request in flight per connection, so the queue is almost always empty; it
    keeps a client that pipelines anyway answered in order. No task per connection and no
    coroutine per request: `data_received` dispatches; an event writes its answer through
    `answered()` as its handler makes its next PDK call (or ends), and any other pending
    answer is written from its future's callback. Event state is not here: it lives in the
    PluginServer, because one event's Steps may arrive on different connections.
    """

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._dispatch = listener.rpc.dispatch
        self._unpacker = new_unpacker()
        self._queue: deque[Any] = deque()
        self._transport: asyncio.Transport | None = None
        self.pending: PendingAnswer | bool | None = None
        """The request being answered: an event's (True) or a PendingAnswer; None if idle."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()
        self._listener.connection_gone(self)

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        try:
            self._queue.extend(self._unpacker)
        except (ValueError, msgpack.UnpackException) as exc:
            self._refuse(exc)
            return
        if self.pending is None:
            self._answer_queued()

    def _answer_queued(self) -> None:
        transport = self._transport
        while self._queue and transport is not None:
            try:
                answer = self._dispatch(self._queue.popleft(), self)
            except ProtocolError as exc:
                self._refuse(exc)
                return
            if type(answer) is bytes:
                transport.write(answer)
                continue
            if answer is None:  # its event calls answered()
                self.pending = True
                return
            answer = cast(PendingAnswer, answer)
            self.pending = answer
            answer.future.add_done_callback(self._answered_later)
            return
        if self._listener.closing:
            self.close()

    def answered(self, data: bytes) -> None:
        """The answer to the request in flight (events.Waiter): written at once."""
        self.pending = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            # One answer per request and one request in flight: the write buffer stays
            # small, so there is no flow control to wait for.
            transport.write(data)
            self._answer_queued()

    def _answered_later(self, _future: asyncio.Future[bytes]) -> None:
        pending = self.pending
        if isinstance(pending, PendingAnswer):
            self.answered(pending.packed())

    def _refuse(self, exc: Exception) -> None:
        logger.warning("closing a connection that does not speak MessagePack-RPC: %s", exc)
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if isinstance(self.pending, PendingAnswer):
            self.pending.future.cancel()
        if self._transport is not None:
            self._transport.abort()


class Listener:
    """Accepts Kong's connections on a unix socket and feeds their requests to a PluginServer."""

    def __init__(self, rpc: PluginServer, path: str, *, backlog: int = 4096) -> None:
        self.rpc = rpc
        self.path = path
        self.backlog = backlog
        self.closing = False
        self.connections: set[_KongConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._all_gone: asyncio.Event | None = None
        self._owns_path = False
        self._adopting: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Listen on path, replacing a stale socket file left by a previous run."""
        _remove_stale_socket(self.path)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _KongConnection(self), path=self.path, backlog=self.backlog
        )
        self._owns_path = True
        logger.info("plugin server listening on %s (pid %d)", self.path, os.getpid())

    def receive_from(self, channel: socket.socket, on_eof: Callable[[], None]) -> None:
        """Serve the connections another process accepted and hands over on `channel`.

        `--workers N`: the parent sends each connection's fd with one byte (SCM_RIGHTS);
        from then on it is an ordinary connection of this process. EOF on the channel means
        the parent is gone: `on_eof()`.
        """
        channel.setblocking(False)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            for _ in range(64):  # a burst of new connections does not starve the others
                try:
                    data, fds, _flags, _addr = socket.recv_fds(channel, 1, 1)
                except BlockingIOError:
                    return
                except OSError as exc:
                    logger.error("connection handover channel failed: %s", exc)
                    data, fds = b"", []
                for fd in fds:
                    self.adopt(socket.socket(fileno=fd))
                if not data:
                    loop.remove_reader(channel.fileno())
                    on_eof()
                    return

        loop.add_reader(channel.fileno(), readable)

    def adopt(self, sock: socket.socket) -> None:
        """Serve `sock`, a connection accepted by another process."""
        if self.closing:
            sock.close()
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.connect_accepted_socket(lambda: _KongConnection(self), sock))
        self._adopting.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[Any]) -> None:
        self._adopting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("cannot serve a handed-over connection", exc_info=task.exception())

    async def close(self, *, grace_s: float = 1.0) -> None:
        """Stop listening, answer requests in flight, close connections, remove the socket.

        Idle connections close at once; busy ones close after writing their answer (up to
        grace_s, then they are aborted), so no Kong worker waits for a reply that never comes.
        """
        self.closing = True
        if self._server is not None:
            self._server.close()
            self._server = None
        self._all_gone = asyncio.Event()
        for conn in list(self.connections):
            if conn.pending is None:
                conn.close()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), grace_s)
            for conn in list(self.connections):
                conn.abort()
        if self._owns_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def connection_gone(self, conn: _KongConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_gone is not None:
            self._all_gone.set()


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file at path; refuse to delete anything that is not a socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise PluginServerError(f"{path} exists and is not a socket; not replacing it")
    os.unlink(path)


async def serve(
    rpc: PluginServer,
    path: str,
    *,
    backlog: int = 4096,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
    handle_signals: bool = False,
    watch_parent: bool = False,
    handed: socket.socket | None = None,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT with handle_signals), then clean up.

    watch_parent: also stop when the parent process goes away (Kong was killed without
    stopping us; a new Kong would start a new server on the same socket), like kong-pdk.
    handed: serve the connections handed over on this channel (a worker of `--workers N`)
    instead of listening on path, until the channel's other end (the parent) closes.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    listener = Listener(rpc, path, backlog=backlog)
    if handed is None:
        await listener.start()
    else:
        listener.receive_from(handed, stop.set)
    background = [loop.create_task(rpc.events.sweep_forever())]
    if watch_parent:
        background.append(loop.create_task(_watch_parent(stop)))
    if ready is not None:
        ready()
    try:
        await stop.wait()
        logger.info("stopping the plugin server")
    finally:
        rpc.events.cancel_all()  # waiting RPCs get an error answer before connections close
        if handed is not None:
            loop.remove_reader(handed.fileno())
        await listener.close()
        for task in background:
            task.cancel()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)


async def _watch_parent(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    logger.info("parent process %d is gone, stopping", parent)
    stop.set()


def run(rpc: PluginServer, path: str, *, backlog: int = 4096) -> None:
    """Serve on uvloop when importable, until SIGTERM/SIGINT or the parent process exits.

    Everything imported so far (plugins, redis-py, click: ~100k objects) is frozen out of
    the garbage collector first, so a full collection walks only live request state: it is
    then well under a millisecond instead of a ~10 ms stall in the middle of requests.
    """
    gc.collect()
    gc.freeze()
    run_on_uvloop(serve(rpc, path, backlog=backlog, handle_signals=True, watch_parent=True))


def run_on_uvloop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to completion on a new uvloop event loop (asyncio's when uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main)
