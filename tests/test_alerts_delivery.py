"""`kong-credits alerts`: signed webhooks to a receiver that fails and recovers; no loss."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from kong_credits import wallets
from kong_credits.alerts import SIGNATURE_HEADER, sign, verify_signature
from kong_credits.cli import main
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.keys import alert_streams

SECRET = "whsec_test"


class Receiver:
    """Loopback webhook endpoint: fails the first requests, refuses wallet `refused` for good,
    checks every signature, and records what it accepted."""

    def __init__(self, failures: list[int]) -> None:
        self.failures = list(failures)
        self.accepted: list[dict] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    if not verify_signature(SECRET, self.headers[SIGNATURE_HEADER], body):
                        receiver.bad_signatures += 1
                        status = 401
                    elif receiver.failures:
                        status = receiver.failures.pop(0)
                    elif json.loads(body)["wallet"] == "refused":
                        status = 400
                    else:
                        receiver.accepted.append(json.loads(body))
                        status = 200
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_alerts(r, wallet_names: list[str]) -> set[str]:
    engine = Engine(r)
    for name in wallet_names:
        wallets.grant(r, name, 100)
        for i in range(10):  # 100% used: four threshold alerts each
            engine.authorize(AuthorizeRequest(f"{name}-{i}", name, "c", 10))
    return {f["alert_id"] for stream in alert_streams() for _, f in r.xrange(stream)}


def deliver(redis_url: str, url: str):
    return CliRunner().invoke(main, [
        "alerts", "--url", url, "--hmac-secret", SECRET, "--drain", "--redis-url", redis_url,
        "--backoff-base-ms", "5", "--backoff-max-ms", "20", "--max-attempts", "30",
        "--claim-idle-ms", "500", "--block-ms", "50", "--log-level", "error"])


def test_signature_round_trip_and_tamper_detection():
    body = b'{"id":"a1"}'
    header = sign(SECRET, body, 1_700_000_000)
    assert verify_signature(SECRET, header, body, now_s=1_700_000_100)
    assert not verify_signature(SECRET, header, body + b" ", now_s=1_700_000_100)
    assert not verify_signature("other", header, body, now_s=1_700_000_100)
    assert not verify_signature(SECRET, header, body, now_s=1_700_001_000)  # too old
    assert not verify_signature(SECRET, "v1=abc", body)


def test_every_alert_arrives_once_per_id_through_failures(r, redis_url):
    expected = make_alerts(r, [f"w{i}" for i in range(12)])
    assert len(expected) == 48
    receiver = Receiver([500, 503, 429, 500, 502])
    try:
        result = deliver(redis_url, receiver.url)
    finally:
        receiver.close()
    assert result.exit_code == 0, result.output
    ids = Counter(a["id"] for a in receiver.accepted)
    assert set(ids) == expected and max(ids.values()) == 1
    assert receiver.bad_signatures == 0
    first = next(a for a in receiver.accepted if a["type"] == "balance_threshold")
    assert {"threshold_pct", "granted"} <= set(first["data"])
    assert first["created_at"].endswith("Z")
    pending = sum(r.xpending(stream, "alerts:webhook")["pending"] for stream in alert_streams())
    assert pending == 0


def test_refused_alerts_go_to_the_dead_letter_stream(r, redis_url):
    make_alerts(r, ["fine", "refused"])
    receiver = Receiver([])
    try:
        result = deliver(redis_url, receiver.url)
    finally:
        receiver.close()
    assert result.exit_code == 0, result.output
    assert {a["wallet"] for a in receiver.accepted} == {"fine"}
    letters = CliRunner().invoke(main, ["dlq", "list", "--group", "alerts:webhook", "--json",
                                        "--redis-url", redis_url])
    dead = json.loads(letters.output)
    assert len(dead) == 4 and all("HTTP 400" in d["reason"] for d in dead)


@pytest.mark.parametrize("args", [["--url", "http://127.0.0.1:1"], ["--hmac-secret", "x"]])
def test_missing_options_exit_2(args, redis_url):
    result = CliRunner().invoke(main, ["alerts", *args, "--redis-url", redis_url],
                                env={"KONG_CREDITS_WEBHOOK_SECRET": ""})
    assert result.exit_code == 2
