"""A loopback billing backend for tests: speaks each sink's protocol, keeps what it stored,
and injects faults on request.

    with BillingRecorder("lago") as backend:
        backend.fail_next("500", "timeout")        # the next two requests
        backend.chaos(0.2, FAULTS, seed=7)         # then a fifth of all requests
        ... deliver to backend.url ...
        backend.stored        # event id -> Receipt, what the backend holds (deduplicated)
        backend.receipts      # every acceptance, repeats included (backends without dedupe)

Faults: "500" and "429" (with Retry-After) answer without storing; "hang" waits past the
client's timeout without storing; "timeout" stores, then waits past the timeout (the client
cannot know it landed); "drop" closes the connection unanswered without storing;
"drop-after" stores, then closes; "400" refuses for good. Event ids starting with "bad-" are
refused by every vendor the way that vendor refuses an invalid event (until `refuse_bad` is
set to False).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kong_credits.rated_event import RatedEvent
from kong_credits.sinks import SinkConfig

FAULTS = ("500", "429", "hang", "timeout", "drop", "drop-after")
BAD_PREFIX = "bad-"
HANG_S = 0.6
"""How long "hang" and "timeout" wait: longer than the tests' client timeout."""
CLIENT_TIMEOUT_S = 0.3
API_KEY = "test-key"
EVENT_NAME = "api_credits"


@dataclass(frozen=True, slots=True)
class Receipt:
    """One event as the backend understood it."""

    event_id: str
    customer: str
    cost: int
    raw: dict[str, Any] = field(compare=False)


@dataclass(slots=True)
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], Any]
"""status, headers, JSON body (None: empty body)."""


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: dict[str, Receipt] = {}
        self.receipts: list[Receipt] = []
        self.requests: list[Request] = []
        self.inflight: dict[str, int] = {}
        self.overlaps = 0
        self.refuse_bad = True

    def refuses(self, event_id: str) -> bool:
        return self.refuse_bad and event_id.startswith(BAD_PREFIX)

    def keep(self, receipts: Iterable[Receipt]) -> None:
        with self.lock:
            for receipt in receipts:
                self.receipts.append(receipt)
                self.stored.setdefault(receipt.event_id, receipt)

    def has(self, event_id: str) -> bool:
        with self.lock:
            return event_id in self.stored


class Vendor:
    """One backend protocol: `answer` decides, `store` is what a success keeps."""

    path = "/"

    def answer(self, request: Request, store: _Store) -> tuple[Answer, list[Receipt]]:
        raise NotImplementedError


class CloudEventsVendor(Vendor):
    def __init__(self, path: str, status: int) -> None:
        self.path = path
        self.status = status

    def answer(self, request: Request, store: _Store) -> tuple[Answer, list[Receipt]]:
        if request.headers.get("content-type") != "application/cloudevents-batch+json":
            return (415, {}, {"title": "unsupported media type"}), []
        batch = request.json()
        if any(store.refuses(e["id"]) for e in batch):
            return (400, {}, {"title": "invalid event"}), []
        receipts = [Receipt(e["id"], e["subject"], int(e["data"]["cost"]), e) for e in batch]
        return (self.status, {}, None if self.status == 204 else {}), receipts


class LagoVendor(Vendor):
    """Lago's batch endpoint: any invalid or already-stored event fails the whole batch."""

    path = "/api/v1/events/batch"

    def answer(self, request: Request, store: _Store) -> tuple[Answer, list[Receipt]]:
        events = request.json()["events"]
        if len(events) > 100:
            return (422, {}, {"status": 422, "error": "Unprocessable Entity",
                              "code": "validation_errors",
                              "error_details": {"events": ["too_many_events"]}}), []
        errors: dict[str, Any] = {}
        for i, e in enumerate(events):
            if store.refuses(e["transaction_id"]):
                errors[str(i)] = {"code": ["billable_metric_not_found"]}
            elif store.has(e["transaction_id"]):
                errors[str(i)] = {"transaction_id": ["value_already_exist"]}
        if errors:
            return (422, {}, {"status": 422, "error": "Unprocessable Entity",
                              "code": "validation_errors", "error_details": errors}), []
        customer_field = ("external_subscription_id" if "external_subscription_id" in events[0]
                          else "external_customer_id")
        receipts = [Receipt(e["transaction_id"], e[customer_field],
                            int(e["properties"]["cost"]), e) for e in events]
        return (200, {}, {"events": events}), receipts


class StripeVendor(Vendor):
    """Stripe's v1 meter events: one form-encoded event per call, identifiers unique."""

    path = "/v1/billing/meter_events"

    def answer(self, request: Request, store: _Store) -> tuple[Answer, list[Receipt]]:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        customer = form["payload[stripe_customer_id]"]
        with store.lock:
            store.inflight[customer] = store.inflight.get(customer, 0) + 1
            if store.inflight[customer] > 1:
                store.overlaps += 1
        try:
            time.sleep(0.002)  # long enough for overlapping calls to be seen
            identifier = form["identifier"]
            if store.refuses(identifier):
                return (400, {}, {"error": {"type": "invalid_request_error",
                                            "message": f"No such customer: '{customer}'"}}), []
            if store.has(identifier):
                return (400, {}, {"error": {
                    "type": "invalid_request_error",
                    "message": f"An event already exists with identifier {identifier}."}}), []
            receipt = Receipt(identifier, customer, int(form["payload[value]"]), form)
            return (200, {}, {"object": "billing.meter_event", "identifier": identifier,
                              "event_name": form["event_name"], "livemode": False,
                              "payload": {"stripe_customer_id": customer,
                                          "value": form["payload[value]"]},
                              "timestamp": int(form["timestamp"]), "created": 0}), [receipt]
        finally:
            with store.lock:
                store.inflight[customer] -= 1


class OrbVendor(Vendor):
    """Orb's ingest: idempotency keys stored once; a validation failure fails the request."""

    path = "/v1/ingest"

    def answer(self, request: Request, store: _Store) -> tuple[Answer, list[Receipt]]:
        events = request.json()["events"]
        failed = [{"idempotency_key": e["idempotency_key"],
                   "validation_errors": ["Customer does not exist"]}
                  for e in events if store.refuses(e["idempotency_key"])]
        if failed:
            return (400, {}, {"validation_failed": failed}), []
        duplicate = [e["idempotency_key"] for e in events if store.has(e["idempotency_key"])]
        receipts = [Receipt(e["idempotency_key"], e["external_customer_id"],
                            int(e["properties"]["cost"]), e) for e in events]
        ingested = [r.event_id for r in receipts if r.event_id not in duplicate]
        body: dict[str, Any] = {"validation_failed": []}
        if request.query.get("debug") == ["true"]:
            body["debug"] = {"duplicate": duplicate, "ingested": ingested}
        return (200, {}, body), receipts


def vendor_for(sink: str) -> Vendor:
    return {
        "http": lambda: CloudEventsVendor("/ingest", 200),
        "openmeter": lambda: CloudEventsVendor("/api/v1/events", 204),
        "lago": LagoVendor, "stripe": StripeVendor, "orb": OrbVendor,
    }[sink]()


class BillingRecorder:
    """A threaded HTTP server on 127.0.0.1 answering as `sink`'s backend would."""

    def __init__(self, sink: str, *, retry_after: str = "0", delay_s: float = 0.0) -> None:
        self.sink = sink
        self.vendor = vendor_for(sink)
        self.retry_after = retry_after
        self.delay_s = delay_s
        self._store = _Store()
        self._faults: deque[str] = deque()
        self._chaos: tuple[float, tuple[str, ...], random.Random] | None = None
        self.faults_injected: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def url(self) -> str:
        """What to give the sink as --url (the http sink posts to the URL itself)."""
        return self.base_url + "/ingest" if self.sink == "http" else self.base_url

    @property
    def stored(self) -> dict[str, Receipt]:
        with self._store.lock:
            return dict(self._store.stored)

    @property
    def receipts(self) -> list[Receipt]:
        with self._store.lock:
            return list(self._store.receipts)

    @property
    def requests(self) -> list[Request]:
        with self._store.lock:
            return list(self._store.requests)

    @property
    def refuse_bad(self) -> bool:
        """Whether "bad-" event ids are refused (set False to let a replay succeed)."""
        return self._store.refuse_bad

    @refuse_bad.setter
    def refuse_bad(self, refuse: bool) -> None:
        self._store.refuse_bad = refuse

    @property
    def overlaps(self) -> int:
        """Stripe: calls that overlapped another call for the same customer."""
        return self._store.overlaps

    def fail_next(self, *faults: str) -> None:
        self._faults.extend(faults)

    def chaos(self, rate: float, faults: Iterable[str] = FAULTS, *, seed: int = 0) -> None:
        self._chaos = (rate, tuple(faults), random.Random(seed))

    def calm(self) -> None:
        self._chaos = None
        self._faults.clear()

    def _next_fault(self) -> str | None:
        with self._store.lock:
            if self._faults:
                return self._faults.popleft()
            if self._chaos is not None:
                rate, faults, rng = self._chaos
                if rng.random() < rate:
                    return rng.choice(faults)
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 64 * 1024  # one write per response: no Nagle/delayed-ACK stall
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                parts = urlsplit(self.path)
                request = Request(parts.path, parse_qs(parts.query),
                                  {k.lower(): v for k, v in self.headers.items()}, body)
                recorder._serve(self, request)

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, request: Request) -> None:
        with self._store.lock:
            self._store.requests.append(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        fault = self._next_fault()
        if fault:
            with self._store.lock:
                self.faults_injected.append(fault)
        if fault in ("500", "429", "400"):
            headers = {"Retry-After": self.retry_after} if fault == "429" else {}
            return _reply(handler, (int(fault), headers, {"error": f"injected {fault}"}))
        if fault in ("hang", "drop"):
            if fault == "hang":
                time.sleep(HANG_S)
            handler.close_connection = True
            return None
        if request.path != self.vendor.path:
            return _reply(handler, (404, {}, {"error": f"no route {request.path}"}))
        if request.headers.get("authorization") != f"Bearer {API_KEY}" and self.sink not in (
                "http", "openmeter"):
            return _reply(handler, (401, {}, {"error": "unauthorized"}))
        answer, receipts = self.vendor.answer(request, self._store)
        self._store.keep(receipts)
        if fault == "drop-after":
            handler.close_connection = True
            return None
        if fault == "timeout":
            time.sleep(HANG_S)
        return _reply(handler, answer)

    def __enter__(self) -> BillingRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _reply(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
    status, headers, payload = answer
    body = b"" if payload is None else json.dumps(payload).encode()
    try:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if payload is not None:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        handler.close_connection = True


def sink_config(sink: str, url: str, **overrides: Any) -> SinkConfig:
    """A SinkConfig every vendor fake accepts, with the tests' short timeout."""
    settings: dict[str, Any] = {"url": url, "api_key": API_KEY, "event_name": EVENT_NAME,
                                "timeout_s": CLIENT_TIMEOUT_S}
    settings.update(overrides)
    return SinkConfig(**settings)


def sink_args(sink: str, url: str) -> list[str]:
    """The same as forwarder/dlq command-line options."""
    return ["--sink", sink, "--url", url, "--api-key", API_KEY, "--event-name", EVENT_NAME,
            "--timeout-s", str(CLIENT_TIMEOUT_S)]


def make_events(count: int, *, prefix: str = "ev", wallets: int = 3,
                timestamp_ms: int | None = None) -> list[RatedEvent]:
    """`count` distinct events over `wallets` wallets, costs 0..9, timestamps now."""
    now_ms = timestamp_ms or int(time.time() * 1000)
    return [RatedEvent(event_id=f"{prefix}-{i}", wallet=f"wallet-{i % wallets}", cost=i % 10,
                       timestamp_ms=now_ms - i, consumer="alice", route="search",
                       service="api", method="GET", path=f"/search?q={i}")
            for i in range(count)]
