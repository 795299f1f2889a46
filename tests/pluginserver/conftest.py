"""Kong's side of the plugin protocol, and an in-process plugin server on a temp unix socket."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import uvloop

from kong_credits.pluginserver import PluginServer, load_directory, serve

PLUGINS_DIR = Path(__file__).parent / "plugins"


class KongClient:
    """One of Kong's pooled connections: one request in flight, msgids from a shared counter."""

    def __init__(self, path: str, ids: Iterator[int], timeout_s: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(path)
        self.ids = ids
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def send(self, method: str, arg: Any) -> int:
        msgid = next(self.ids)
        self.sock.sendall(msgpack.packb([0, msgid, method, [arg]], use_bin_type=True))
        return msgid

    def receive(self) -> tuple[int, Any, Any]:
        """(msgid, error, result) of the next response."""
        while True:
            for message in self.unpacker:
                kind, msgid, error, result = message
                assert kind == 1
                assert error is None or isinstance(error, str)
                return msgid, error, result
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("plugin server closed the connection")
            self.unpacker.feed(data)

    def call(self, method: str, arg: Any) -> tuple[Any, Any]:
        """(error, result); asserts the answer carries our msgid, as Kong does."""
        msgid = self.send(method, arg)
        got, error, result = self.receive()
        assert got == msgid
        return error, result

    def ok(self, method: str, arg: Any) -> Any:
        error, result = self.call(method, arg)
        assert error is None, error
        return result

    def start_instance(self, name: str, config: dict[str, Any] | None = None) -> int:
        return self.ok("plugin.StartInstance", {"Name": name, "Config": json.dumps(config or {})})[
            "Id"
        ]

    def handle_event(self, instance_id: int, phase: str) -> tuple[int, Any]:
        answer = self.ok("plugin.HandleEvent", {"InstanceId": instance_id, "EventName": phase})
        return answer["EventId"], answer["Data"]

    def step(self, event_id: int, *data: Any, method: str = "plugin.Step") -> Any:
        """Kong's Step: Data only when the PDK function returned a non-nil first value."""
        arg = {"EventId": event_id, "Data": data[0]} if data else {"EventId": event_id}
        answer = self.ok(method, arg)
        return answer["Data"]

    def status(self) -> dict[str, Any]:
        return self.ok("plugin.GetStatus", {})

    def close(self) -> None:
        self.sock.close()


class ServerThread:
    """A PluginServer served on uvloop in a thread, on a short temp socket path."""

    def __init__(self, *, event_timeout_s: float = 60.0) -> None:
        self.rpc = PluginServer(load_directory(PLUGINS_DIR), event_timeout_s=event_timeout_s)
        self.dir = tempfile.mkdtemp(prefix="ps", dir="/tmp")  # unix paths max 107 bytes
        self.path = f"{self.dir}/test.socket"
        self.ids = itertools.count(1)  # one msgid counter, shared by connections (Kong's way)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._clients: list[KongClient] = []
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await serve(self.rpc, self.path, stop=self._stop, ready=self._ready.set)

    def connect(self) -> KongClient:
        client = KongClient(self.path, self.ids)
        self._clients.append(client)
        return client

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(5), "server did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self._clients:
            client.close()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)
        assert not self._thread.is_alive(), "server thread did not stop"


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerThread]]:
    """start_server(event_timeout_s=...) -> a running ServerThread, stopped after the test."""
    servers: list[ServerThread] = []

    def start(**kwargs: Any) -> ServerThread:
        server = ServerThread(**kwargs)
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def server(start_server: Callable[..., ServerThread]) -> ServerThread:
    return start_server()


@pytest.fixture
def kong(server: ServerThread) -> KongClient:
    """One connection to a fresh server."""
    return server.connect()
