"""A TCP proxy in front of a real Redis that the test can take down and bring back."""

from __future__ import annotations

import contextlib
import socket
import threading


class RedisProxy:
    """Forwards 127.0.0.1:`port` to Redis. `down()` closes every connection and stops
    listening (clients see connection refused); `up()` listens again on the same port.
    While `replies` is False, Redis runs what clients send but its replies are dropped: a
    call that ran with its reply lost, as when Redis dies just after running it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.replies = True
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.port = 0

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> RedisProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                # shutdown wakes the thread blocked in accept(): close() alone would not
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets.update((client, upstream))
            for source, target, replies in ((client, upstream, False),
                                            (upstream, client, True)):
                threading.Thread(target=self._pump, args=(source, target, replies),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if self.replies or not replies:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
