"""Events: one phase handler each, run as a task, and the table that Kong's Steps find them in.

An event lives from HandleEvent until its handler returns, it calls kong.response.exit/error,
or it has heard nothing from Kong for `timeout_s`. State is keyed by EventId only, never by
connection: Kong may send each Step of one event on a different pooled connection, so each
HandleEvent or Step names the `Waiter` (its connection) and msgid that the event's next
answer goes to, and the handler's next PDK call (or its end) writes that answer at once.

Invariants of Event (they make every path answer Kong exactly once per request):
1. over is True once the event is over; the table no longer holds it.
2. waiter is set <=> Kong waits for this event's next answer (HandleEvent, or a Step after
   which the handler runs); it is cleared as the answer is given.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from .errors import EventFinished, PDKError, PluginServerError
from .ids import id_counter
from .pdk import Kong
from .wire import RET, EventAnswer, pack, pack_answer, pack_error

__all__ = ["TERMINAL_METHODS", "Event", "EventTable", "Handler", "Waiter"]

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


class Waiter(Protocol):
    """Where an event's answer to an RPC goes: the connection that sent the RPC."""

    def answered(self, data: bytes) -> None:
        """Write `data`, the packed answer to the RPC this waiter is waiting on."""


class Event:
    """One phase handler run, bridged to Kong: the handler's PDK calls become our answers."""

    __slots__ = ("_loop", "_table", "deadline", "id", "label", "msgid", "over", "pending",
                 "task", "waiter")

    def __init__(self, event_id: int, label: str, table: EventTable,
                 loop: asyncio.AbstractEventLoop, waiter: Waiter, msgid: Any) -> None:
        self._loop = loop
        self._table = table
        self.id = event_id
        self.label = label
        self.waiter: Waiter | None = waiter
        self.msgid = msgid
        self.over = False
        self.pending: asyncio.Future[Any] | None = None
        self.deadline = loop.time() + table.timeout_s
        self.task: asyncio.Task[None] | None = None

    def call(self, method: str, args: tuple[Any, ...]) -> Awaitable[Any]:
        """Send one PDK call to Kong (the handler side); the awaitable yields Kong's answer."""
        if self.over:
            raise EventFinished(f"{self.label}: {method} after the event ended (exit or timeout)")
        if self.pending is not None:
            raise PDKError(f"{self.label}: {method} while another PDK call is pending; await each")
        data = pack({"Method": method, "Args": args})
        if method in TERMINAL_METHODS:
            self.close(data)
            return _SENT
        self.pending = pending = self._loop.create_future()
        self._answer(data)
        return pending

    def resume(self, data: Any, waiter: Waiter, msgid: Any) -> None:
        """Hand Kong's Step Data to the waiting handler; its next answer goes to `waiter`."""
        pending = self.pending
        if pending is None:
            raise PluginServerError(f"event id {self.id} is not waiting for a PDK result")
        self.pending = None
        self.waiter, self.msgid = waiter, msgid
        self.deadline = self._loop.time() + self._table.timeout_s
        if not pending.done():
            pending.set_result(data)

    def _answer(self, data: bytes) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.answered(pack_answer(self.msgid, EventAnswer(self.id, data)))

    def close(self, outcome: bytes | BaseException) -> None:
        """End the event: answer the RPC waiting for it (if any) and drop it from the table."""
        if self.over:
            return
        self.over = True
        self._table.discard(self)
        if not isinstance(outcome, BaseException):
            self._answer(outcome)
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            message = str(outcome) if isinstance(outcome, PluginServerError) \
                else f"{type(outcome).__name__}: {outcome}"
            waiter.answered(pack_error(self.msgid, message))


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
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop `sweep_forever` runs on: the one serving Kong (spares a get_running_loop,
        a getpid system call, per event)."""

    def __len__(self) -> int:
        return len(self._events)

    @property
    def running(self) -> int:
        return len(self._running)

    def open(self, handler: Handler, label: str, waiter: Waiter, msgid: Any) -> None:
        """Start `handler` as a task; its first PDK call (or end) answers `waiter`'s msgid."""
        loop = self._loop or asyncio.get_running_loop()
        event = Event(next(self._ids), label, self, loop, waiter, msgid)
        self._events[event.id] = event
        self._running.add(event)
        event.task = loop.create_task(self._run(event, handler))

    def skip(self) -> int:
        """An event id for a phase the instance has nothing to do in: answered "ret" at once."""
        return next(self._ids)

    def step(self, event_id: int, data: Any, waiter: Waiter, msgid: Any) -> None:
        """Feed a PDK result to event `event_id`; its next answer goes to `waiter`'s msgid."""
        event = self._events.get(event_id)
        if event is None:
            raise PluginServerError(f"event id {event_id} not found")
        event.resume(data, waiter, msgid)

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
        loop = self._loop = asyncio.get_running_loop()
        interval = min(max(self.timeout_s / 4, 0.01), 5.0)
        try:
            while True:
                await asyncio.sleep(interval)
                self.expire(loop.time())
        finally:
            self._loop = None

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
            if event.pending is not None and not event.over and not event.pending.done():
                logger.warning("%s returned without awaiting its PDK call", event.label)
            event.close(RET)
