"""Events: one phase handler each, run as a task, and the table that Kong's Steps find them in.

An event lives from HandleEvent until its handler returns, it calls kong.response.exit/error,
or it has heard nothing from Kong for `timeout_s`. State is keyed by EventId only, never by
connection: Kong may send each Step of one event on a different pooled connection.

Invariants of Event (they make every path answer Kong exactly once per request):
1. reply is None once the event is over; the table no longer holds it.
2. reply is done <=> a PDK call was sent and pending awaits Kong's Step, or the event is over.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .errors import EventFinished, PDKError, PluginServerError
from .ids import id_counter
from .pdk import Kong
from .wire import RET, pack

__all__ = ["TERMINAL_METHODS", "Event", "EventTable", "Handler"]

logger = logging.getLogger(__name__)

Handler = Callable[[Kong], Any]
"""A bound phase method: `async def access(self, kong)` (or a plain function)."""

TERMINAL_METHODS = frozenset(("kong.response.exit", "kong.response.error"))
"""Kong answers these with nothing, ever: the request is short-circuited or the PDK raised."""


class _Sent:
    """Awaitable result of a terminal call: None, at once, from any event loop."""

    __slots__ = ()

    def __await__(self) -> Iterator[None]:
        return iter(())


_SENT = _Sent()


class Event:
    """One phase handler run, bridged to Kong: the handler's PDK calls become our answers."""

    __slots__ = ("_loop", "_table", "deadline", "id", "label", "pending", "reply", "task")

    def __init__(self, event_id: int, label: str, table: EventTable) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._table = table
        self.id = event_id
        self.label = label
        self.reply: asyncio.Future[bytes] | None = loop.create_future()
        self.pending: asyncio.Future[Any] | None = None
        self.deadline = loop.time() + table.timeout_s
        self.task: asyncio.Task[None] | None = None

    def call(self, method: str, args: tuple[Any, ...]) -> Awaitable[Any]:
        """Send one PDK call to Kong (the handler side); the awaitable yields Kong's answer."""
        reply = self.reply
        if reply is None or reply.cancelled():
            raise EventFinished(f"{self.label}: {method} after the event ended (exit or timeout)")
        if self.pending is not None:
            raise PDKError(f"{self.label}: {method} while another PDK call is pending; await each")
        data = pack({"Method": method, "Args": args})
        if method in TERMINAL_METHODS:
            self.close(data)
            return _SENT
        self.pending = pending = self._loop.create_future()
        reply.set_result(data)
        return pending

    def resume(self, data: Any) -> asyncio.Future[bytes]:
        """Hand Kong's Step Data to the waiting handler; return the future of the next answer."""
        pending = self.pending
        if pending is None:
            raise PluginServerError(f"event id {self.id} is not waiting for a PDK result")
        self.pending = None
        self.reply = reply = self._loop.create_future()
        self.deadline = self._loop.time() + self._table.timeout_s
        if not pending.done():
            pending.set_result(data)
        return reply

    def close(self, outcome: bytes | BaseException) -> None:
        """End the event: answer the RPC waiting for it (if any) and drop it from the table."""
        reply = self.reply
        if reply is None:
            return
        self.reply = None
        self._table.discard(self)
        if not reply.done():
            if isinstance(outcome, BaseException):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)


class EventTable:
    """Live events by id, the running handler tasks, and the idle-timeout sweep.

    `len(table)` counts events Kong may still Step; `running` counts handler tasks, which
    outlive their event after kong.response.exit until the handler returns.
    """

    def __init__(self, *, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._events: dict[int, Event] = {}
        self._running: set[Event] = set()
        self._ids = id_counter()

    def __len__(self) -> int:
        return len(self._events)

    @property
    def running(self) -> int:
        return len(self._running)

    def open(self, handler: Handler, label: str) -> tuple[int, asyncio.Future[bytes]]:
        """Start `handler` as a task; return the event id and the future of the first answer."""
        event = Event(next(self._ids), label, self)
        reply = event.reply
        assert reply is not None
        self._events[event.id] = event
        self._running.add(event)
        event.task = event._loop.create_task(self._run(event, handler))
        return event.id, reply

    def skip(self) -> int:
        """An event id for a phase the instance has nothing to do in: answered "ret" at once."""
        return next(self._ids)

    def step(self, event_id: int, data: Any) -> asyncio.Future[bytes]:
        """Feed a PDK result to event `event_id`; return the future of its next answer."""
        event = self._events.get(event_id)
        if event is None:
            raise PluginServerError(f"event id {event_id} not found")
        return event.resume(data)

    def discard(self, event: Event) -> None:
        self._events.pop(event.id, None)

    def expire(self, now: float) -> int:
        """Drop events idle past their deadline and cancel their handlers; return how many."""
        stale = [event for event in self._events.values() if event.deadline < now]
        for event in stale:
            event.close(PluginServerError(f"event id {event.id} expired after {self.timeout_s}s"))
            if event.task is not None:
                event.task.cancel()
        if stale:
            logger.warning("dropped %d events idle for %ss", len(stale), self.timeout_s)
        return len(stale)

    async def sweep_forever(self) -> None:
        """Run expire() a few times per timeout, for as long as the server runs."""
        loop = asyncio.get_running_loop()
        interval = min(max(self.timeout_s / 4, 0.01), 5.0)
        while True:
            await asyncio.sleep(interval)
            self.expire(loop.time())

    def cancel_all(self) -> None:
        """Cancel every running handler and answer the RPCs waiting on them (shutdown)."""
        for event in list(self._running):
            event.close(PluginServerError("plugin server is shutting down"))
            if event.task is not None:
                event.task.cancel()
        self._running.clear()  # a task cancelled before its first step never reaches finally

    async def _run(self, event: Event, handler: Handler) -> None:
        """The boundary no handler exception crosses: it becomes the event's error answer."""
        try:
            outcome = handler(Kong(event.call))
            if inspect.isawaitable(outcome):
                await outcome
        except EventFinished as exc:
            logger.warning("%s", exc)
        except Exception as exc:
            logger.exception("%s raised", event.label)
            event.close(PluginServerError(f"{event.label} failed: {type(exc).__name__}: {exc}"))
        finally:
            self._running.discard(event)
            if event.pending is not None and event.reply is not None and not event.pending.done():
                logger.warning("%s returned without awaiting its PDK call", event.label)
            event.close(RET)
