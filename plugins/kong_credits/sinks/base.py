"""The sink contract: deliver rated events to a billing backend and say what became of each.

    SinkError                   one delivery attempt failed
    +-- RetryableSinkError      send the same events again later: timeout, connection error,
    |                           HTTP 408, 409, 425, 429 or 5xx (with the server's Retry-After)
    +-- PermanentSinkError      the backend refused for good (any other status): dead-letter

`Sink.deliver()` does not raise these. It returns a `Delivery`: the events delivered, the
events rejected for good with their reason, and, for the rest, why and when to retry. A batch
refused as a whole is split in halves, down to single events, so one bad event does not take
the others to the dead-letter stream. Vendor modules only say what differs: body, endpoint, auth,
and rules such as "a duplicate counts as delivered". HTTP statuses and transport errors map
to the two exceptions here, in `check_status` and `Sink.post`, and nowhere else.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from .. import __version__
from ..customers import CustomerMap
from ..errors import InvalidInput
from ..rated_event import RatedEvent
from ..retry import parse_retry_after

__all__ = ["RETRYABLE_STATUSES", "Delivery", "PermanentSinkError", "RetryableSinkError",
           "Sink", "SinkConfig", "SinkError", "check_status", "http_client"]

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
"""Client errors that say "later", not "never"; every 5xx is retryable too."""
_EXCERPT = 300


class SinkError(Exception):
    """A delivery attempt failed; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableSinkError(SinkError):
    """Nothing is known to be delivered: send the same events again after a backoff."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class PermanentSinkError(SinkError):
    """The backend refused and will refuse again: the events go to the dead-letter stream."""


def _excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def check_status(response: httpx.Response) -> None:
    """Return on 2xx; raise RetryableSinkError or PermanentSinkError for anything else."""
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = f"HTTP {status} from {response.request.url.path}: {_excerpt(response)}"
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise RetryableSinkError(
            reason, retry_after_s=parse_retry_after(response.headers.get("Retry-After")))
    raise PermanentSinkError(reason)


@contextlib.contextmanager
def _transport_errors() -> Iterator[None]:
    """Timeouts, refused and dropped connections: the request may or may not have landed."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RetryableSinkError(f"timeout: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise RetryableSinkError(f"connection error: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """Everything a sink may need; each sink reads its part and checks `Sink.requires`."""

    url: str | None = None
    """Base URL of the backend; None: the sink's `default_url`."""
    api_key: str | None = None
    event_name: str | None = None
    """CloudEvents type, Lago billable metric code, Stripe meter event name, Orb event name."""
    source: str = "kong-credits"
    """CloudEvents source."""
    hmac_secret: str | None = None
    signature_header: str = "X-Signature-256"
    customers: CustomerMap = field(default_factory=CustomerMap)
    lago_id_field: str = "external_subscription_id"
    concurrency: int = 4
    """Stripe: customers sent to at once (each customer's events go one at a time)."""
    timeout_s: float = 10.0
    store: str | None = None
    """usage: the usage store's URL (None: $KONG_CREDITS_USAGE_URL, else the SQLite default)."""
    usage_retention: tuple[str, ...] = ()
    """usage: LEVEL=SPAN overrides of the retention defaults (usage/retention.py)."""


def http_client(config: SinkConfig) -> httpx.Client:
    """The one client all requests share: pooled keep-alive connections, bounded timeouts."""
    return httpx.Client(
        timeout=httpx.Timeout(config.timeout_s, connect=min(config.timeout_s, 5.0)),
        limits=httpx.Limits(max_connections=max(8, config.concurrency * 2),
                            max_keepalive_connections=max(4, config.concurrency)),
        headers={"User-Agent": f"kong-credits/{__version__}"},
        follow_redirects=False,
    )


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of the events of one `deliver` call. Events in neither `delivered` nor
    `rejected` are unresolved: retry them, after `retry_after_s` when the backend said so."""

    delivered: frozenset[str] = frozenset()
    rejected: Mapping[str, str] = field(default_factory=dict)
    """event id -> why the backend refused it for good"""
    retry_reason: str | None = None
    retry_after_s: float | None = None

    @classmethod
    def of(cls, events: Sequence[RatedEvent]) -> Delivery:
        return cls(delivered=frozenset(e.event_id for e in events))

    @classmethod
    def retry(cls, error: RetryableSinkError) -> Delivery:
        return cls(retry_reason=error.reason, retry_after_s=error.retry_after_s)

    def merge(self, other: Delivery) -> Delivery:
        waits = [w for w in (self.retry_after_s, other.retry_after_s) if w is not None]
        return Delivery(
            delivered=self.delivered | other.delivered,
            rejected={**self.rejected, **other.rejected},
            retry_reason=self.retry_reason or other.retry_reason,
            retry_after_s=max(waits) if waits else None,
        )

    def unresolved(self, events: Sequence[RatedEvent]) -> list[RatedEvent]:
        return [e for e in events
                if e.event_id not in self.delivered and e.event_id not in self.rejected]


class Sink(ABC):
    """A billing backend. Subclasses set `name`, `max_batch`, `default_url`, `requires` and
    implement `send`; the forwarder owns the injected `httpx.Client` and closes it."""

    name: ClassVar[str]
    max_batch: ClassVar[int]
    default_batch: ClassVar[int] = 100
    """The forwarder's --batch-size when none is given (at most max_batch)."""
    default_url: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    """SinkConfig fields that must be set (reported as the CLI options --api-key, ...)."""
    destination: str | None = None
    """Set by a sink whose every destination must receive every event (the usage store):
    the forwarder's default consumer group then names it (group_names.group_name)."""

    def __init__(self, client: httpx.Client, config: SinkConfig) -> None:
        missing = [name for name in self.requires if not getattr(config, name)]
        url = config.url or self.default_url
        if url is None:
            missing.insert(0, "url")
        if missing:
            options = ", ".join("--" + name.replace("_", "-") for name in missing)
            raise InvalidInput(f"sink {self.name} needs {options}")
        self.client = client
        self.config = config
        self.base_url = url.rstrip("/")

    def customer(self, event: RatedEvent) -> str:
        """The id this backend bills the event's wallet under (config/customers.yaml)."""
        return self.config.customers.customer(event.wallet, self.name)

    def deliver(self, events: Sequence[RatedEvent]) -> Delivery:
        """Deliver 1..max_batch events with distinct ids; never raises a SinkError."""
        if not events:
            return Delivery()
        if len(events) > self.max_batch:
            raise ValueError(f"{len(events)} events exceed {self.name}'s batch of {self.max_batch}")
        try:
            return self.send(events)
        except RetryableSinkError as exc:
            return Delivery.retry(exc)
        except PermanentSinkError as exc:
            if len(events) == 1:
                return Delivery(rejected={events[0].event_id: exc.reason})
        return self._bisect(events)

    def _bisect(self, events: Sequence[RatedEvent]) -> Delivery:
        """After a whole batch was refused: send each half on its own, down to single events,
        so the culprits are found and the others delivered in few requests. A half that
        fails transiently stays unresolved while the other half is still tried, unless the
        backend asked to wait (Retry-After)."""
        middle = len(events) // 2
        outcome = Delivery()
        for half in (events[:middle], events[middle:]):
            try:
                part = self.send(half)
            except RetryableSinkError as exc:
                part = Delivery.retry(exc)
            except PermanentSinkError as exc:
                part = (Delivery(rejected={half[0].event_id: exc.reason}) if len(half) == 1
                        else self._bisect(half))
            outcome = outcome.merge(part)
            if part.retry_after_s is not None:
                break
        return outcome

    @abstractmethod
    def send(self, events: Sequence[RatedEvent]) -> Delivery:
        """One attempt. Raise RetryableSinkError/PermanentSinkError for the batch as a whole,
        or return a Delivery when the backend answered per event."""

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST on the shared client; transport failures become RetryableSinkError."""
        with _transport_errors():
            return self.client.post(url, **kwargs)

    def housekeeping(self) -> None:  # noqa: B027 - most sinks keep nothing to tidy
        """Called by the forwarder every ~10 s and on exit: periodic work of the sink's own
        (the usage store prunes expired rows). Must not raise."""

    def close(self) -> None:  # noqa: B027 - most sinks hold nothing of their own
        """Release what the sink holds itself (not the shared client)."""
