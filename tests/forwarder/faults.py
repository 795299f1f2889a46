"""Helpers of the fault tests: waiting on a condition, a forwarder run in a thread, a webhook
receiver, alerts made by the real engine, and `kong-credits` started as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.forwarder import Forwarder
from kong_credits.keys import alert_streams

ALERTS_GROUP = "alerts:webhook"
SECRET = "whsec_test"


class Running:
    """A forwarder's run() in a thread: its exit code, or the exception that ended it."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.code = self.forwarder.run()
        except BaseException as exc:
            self.error = exc

    def redis_errors(self, kind: str) -> float:
        """kong_credits_forwarder_redis_errors_total for this kind of error."""
        value = self.forwarder.metrics.registry.get_sample_value(
            "kong_credits_forwarder_redis_errors_total",
            {"sink": self.forwarder.sink.name, "kind": kind})
        return value or 0.0


@contextmanager
def running(forwarder: Forwarder) -> Iterator[Running]:
    """Run `forwarder` in a thread; stop it and wait for it on exit."""
    run = Running(forwarder)
    run.thread.start()
    try:
        yield run
    finally:
        forwarder.stop.set()
        run.thread.join(timeout=30)
        assert not run.thread.is_alive(), "the forwarder did not stop"


class WebhookReceiver:
    """A loopback endpoint that accepts every alert and counts each id it received."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        lock = threading.Lock()
        received = self.ids

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    received[json.loads(body)["id"]] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_alerts(client: redis.Redis, wallet_names: list[str]) -> set[str]:
    """Spend each wallet's grant in full: four used-share alerts each; returns their ids."""
    engine = Engine(client)
    for name in wallet_names:
        wallets.grant(client, name, 100)
        for i in range(10):
            engine.authorize(AuthorizeRequest(f"{name}-{i}", name, "c", 10))
    return {fields["alert_id"] for stream in alert_streams()
            for _, fields in client.xrange(stream)}


def alerts_pending(client: redis.Redis) -> int:
    return sum(client.xpending(stream, ALERTS_GROUP)["pending"] for stream in alert_streams())


def start_alerts(redis_url: str, url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`kong-credits alerts --drain` as a process, its output in `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from kong_credits.cli import main; main()", "alerts",
             "--url", url, "--hmac-secret", SECRET, "--drain", "--redis-url", redis_url,
             "--backoff-base-ms", "5", "--backoff-max-ms", "50", "--block-ms", "50", *args],
            env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
