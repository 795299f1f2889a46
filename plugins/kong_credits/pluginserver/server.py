"""Unix-socket transport: one asyncio task per Kong connection, its requests answered in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from collections.abc import Callable

import msgpack

from .errors import PluginServerError, ProtocolError
from .rpc import PluginServer
from .wire import new_unpacker

__all__ = ["Listener", "run", "serve"]

logger = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024


class Listener:
    """Accepts Kong's connections on a unix socket and feeds their requests to a PluginServer.

    Kong keeps one request in flight per connection, so each connection is a plain loop:
    read, unpack, await the answer, write. Event state is not here: it lives in the
    PluginServer, because one event's Steps may arrive on different connections.
    """

    def __init__(self, rpc: PluginServer, path: str, *, backlog: int = 4096) -> None:
        self.rpc = rpc
        self.path = path
        self.backlog = backlog
        self._server: asyncio.Server | None = None
        self._closing = False
        self._connections: set[asyncio.Task[None]] = set()
        self._idle: set[asyncio.StreamWriter] = set()  # waiting for a request, none in flight

    async def start(self) -> None:
        """Listen on path, replacing a stale socket file left by a previous run."""
        _remove_stale_socket(self.path)
        self._server = await asyncio.start_unix_server(
            self._serve_connection, path=self.path, backlog=self.backlog
        )
        logger.info("plugin server listening on %s (pid %d)", self.path, os.getpid())

    async def close(self, *, grace_s: float = 1.0) -> None:
        """Stop listening, answer requests in flight, close connections, remove the socket.

        Idle connections close at once; busy ones close after writing their answer (up to
        grace_s, then they are cancelled), so no Kong worker waits for a reply that never comes.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._idle:
            writer.close()
        if self._connections:
            _, late = await asyncio.wait(self._connections, timeout=grace_s)
            for task in late:
                task.cancel()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        answer = self.rpc.answer
        unpacker = new_unpacker()
        idle = self._idle
        try:
            while not self._closing:
                idle.add(writer)
                data = await reader.read(_READ_SIZE)
                idle.discard(writer)
                if not data:
                    break
                unpacker.feed(data)
                for message in unpacker:
                    # One answer per request and one request in flight: the write buffer
                    # stays small, so no drain() on the hot path.
                    writer.write(await answer(message))
        except ConnectionError:
            pass
        except (ProtocolError, ValueError, msgpack.UnpackException) as exc:
            logger.warning("closing a connection that does not speak MessagePack-RPC: %s", exc)
        finally:
            idle.discard(writer)
            self._connections.discard(task)
            writer.close()


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
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT with handle_signals), then clean up.

    watch_parent: also stop when the parent process goes away (Kong was killed without
    stopping us; a new Kong would start a new server on the same socket), like kong-pdk.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    listener = Listener(rpc, path, backlog=backlog)
    await listener.start()
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
    """Serve on uvloop when importable, until SIGTERM/SIGINT or the parent process exits."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(rpc, path, backlog=backlog, handle_signals=True, watch_parent=True))
