"""The plugin.* RPC methods Kong calls, and the one border where failures become error strings."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from .errors import PluginServerError, ProtocolError
from .events import EventTable, Waiter
from .instances import InstanceTable
from .loader import PluginModule
from .wire import RET, EventAnswer, pack_answer, pack_error

__all__ = ["PendingAnswer", "PluginServer"]

logger = logging.getLogger(__name__)

_STEP_METHODS = (
    "plugin.Step",
    "plugin.StepError",
    "plugin.StepCredential",
    "plugin.StepConsumer",
    "plugin.StepRoute",
    "plugin.StepService",
    "plugin.StepMemoryStats",
    "plugin.StepMultiMap",
)
"""Kong picks the Step name by PDK method; kong-pdk treats them all as Step, and so do we
(Kong never sends StepError: it drops Lua error values)."""


_NO_PHASE: Any = object()  # instance.handlers has no entry for the phase


def _request(message: Any) -> tuple[Any, Any, Any]:
    """(msgid, method, args) of `[0, msgid, method, args]`; ProtocolError for anything else."""
    try:
        kind, msgid, method, args = message
    except (TypeError, ValueError):
        raise ProtocolError(f"not a MessagePack-RPC request: {message!r:.200}") from None
    if kind != 0:
        raise ProtocolError(f"not a MessagePack-RPC request: {message!r:.200}")
    return msgid, method, args


class PendingAnswer:
    """An answer not ready yet: `future` completes, then `packed()` is the answer to write.

    For the methods other than HandleEvent and Steps: `answer()` runs as a task, whose result
    is already the packed answer.
    """

    __slots__ = ("future", "method", "msgid")

    def __init__(self, future: asyncio.Future[bytes], msgid: Any, method: str) -> None:
        self.future = future
        self.msgid = msgid
        self.method = method

    def packed(self) -> bytes:
        future = self.future
        if future.cancelled():
            return pack_error(self.msgid, f"{self.method} was cancelled")
        exc = future.exception()
        if exc is None:
            return future.result()
        if isinstance(exc, PluginServerError):
            return pack_error(self.msgid, str(exc))
        logger.error("rpc #%s %s failed", self.msgid, self.method, exc_info=exc)
        return pack_error(self.msgid, f"{self.method} failed: {type(exc).__name__}: {exc}")


class _FutureWaiter:
    """A Waiter that completes a future: `answer()`'s way to await an event's answer."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def answered(self, data: bytes) -> None:
        if not self.future.done():
            self.future.set_result(data)


class PluginServer:
    """Plugins, their instances and live events, behind Kong's MessagePack-RPC methods.

    No I/O here: a transport feeds decoded requests to `dispatch()` (or `answer()`) and
    writes the bytes back.
    """

    def __init__(self, plugins: Iterable[PluginModule], *, event_timeout_s: float = 60.0) -> None:
        self.plugins = {plugin.name: plugin for plugin in plugins}
        self.instances = InstanceTable(self.plugins)
        self.events = EventTable(timeout_s=event_timeout_s)
        self.server_pid = os.getpid()
        """The process Kong started: the parent of `--workers N` processes, else this one."""
        self.worker_index: int | None = None
        """Which of the `--workers N` processes this is (None: the only one)."""
        methods: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "plugin.GetStatus": self.get_status,
            "plugin.GetPluginInfo": self.get_plugin_info,
            "plugin.StartInstance": self.start_instance,
            "plugin.InstanceStatus": self.instance_status,
            "plugin.CloseInstance": self.close_instance,
        }
        self._methods = methods
        self._events = dict.fromkeys(_STEP_METHODS, self._step)
        self._events["plugin.HandleEvent"] = self._open_event

    def dispatch(self, message: Any, waiter: Waiter) -> bytes | PendingAnswer | None:
        """Like `answer()`, without a coroutine when it can: the packed answer; None when an
        event will give `waiter` its answer (`waiter.answered(...)`); or a PendingAnswer to
        write once its future is done.

        HandleEvent and Step (every message of a request but StartInstance) are handed to
        their event with the waiter; the other methods run `answer()` as a task. Raises
        ProtocolError like answer().
        """
        msgid, method, args = _request(message)
        handle = self._events.get(method)
        if handle is None:
            task = asyncio.get_running_loop().create_task(self.answer(message))
            return PendingAnswer(task, msgid, str(method))
        try:
            return handle(args[0] if args else None, waiter, msgid)
        except PluginServerError as exc:
            return pack_error(msgid, str(exc))
        except Exception as exc:
            logger.exception("rpc #%s %s failed", msgid, method)
            return pack_error(msgid, f"{method} failed: {type(exc).__name__}: {exc}")

    def _open_event(self, arg: dict[str, Any], waiter: Waiter, msgid: Any) -> bytes | None:
        """HandleEvent {InstanceId, EventName} -> {EventId, Data}: the handler's first PDK
        call or "ret", given to `waiter` by the event (None) or at once (the answer)."""
        instance = self.instances.get(arg["InstanceId"])
        phase = arg["EventName"]
        entry = instance.handlers.get(phase, _NO_PHASE)
        if entry is None:  # nothing to do in this phase for this instance
            return pack_answer(msgid, EventAnswer(self.events.skip(), RET))
        if entry is _NO_PHASE:
            raise PluginServerError(f"{instance.module.name} has no {phase} phase")
        self.events.open(*entry, waiter, msgid)
        return None

    def _step(self, arg: dict[str, Any], waiter: Waiter, msgid: Any) -> None:
        """Step {EventId, Data} -> {EventId, Data}: the result goes in, the next call comes
        out, to `waiter`."""
        self.events.step(arg["EventId"], arg.get("Data"), waiter, msgid)

    async def answer(self, message: Any) -> bytes:
        """Packed answer to one request `[0, msgid, method, [arg]]`: a result or an error string.

        Raises ProtocolError only when the message is not a request at all.
        """
        msgid, method, args = _request(message)
        if method in self._events:
            waiter = _FutureWaiter()
            now = self.dispatch(message, waiter)
            return cast(bytes, now) if now is not None else await waiter.future
        try:
            fn = self._methods.get(method)
            if fn is None:
                raise PluginServerError(f"method {method} is not supported")
            return pack_answer(msgid, await fn(args[0] if args else None))
        except PluginServerError as exc:
            return pack_error(msgid, str(exc))
        except Exception as exc:
            logger.exception("rpc #%s %s failed", msgid, method)
            return pack_error(msgid, f"{method} failed: {type(exc).__name__}: {exc}")

    async def start_instance(self, arg: dict[str, Any]) -> dict[str, Any]:
        """{Name, Config (JSON string)} -> {Name, Id, Config, StartTime}; Kong reads only Id."""
        return self.instances.start(arg["Name"], arg["Config"]).status()

    async def close_instance(self, instance_id: int) -> dict[str, Any]:
        """Bare instance id -> {Name, Id, Config} (Kong ignores the answer)."""
        instance = await self.instances.close(instance_id)
        return {"Name": instance.module.name, "Id": instance.id, "Config": instance.config}

    async def instance_status(self, instance_id: int) -> dict[str, Any]:
        return self.instances.get(instance_id).status()

    async def get_plugin_info(self, arg: str | dict[str, Any]) -> dict[str, Any]:
        """Plugin name (or {Name}) -> the --dump-all-plugins entry. Kong never calls it."""
        name = arg["Name"] if isinstance(arg, dict) else arg
        plugin = self.plugins.get(name)
        if plugin is None:
            raise PluginServerError(f"{name} not initialized")
        return plugin.info()

    async def get_status(self, _arg: Any = None) -> dict[str, Any]:
        """kong-pdk's status, plus Events (live events) and RunningHandlers (handler tasks);
        with `--workers N`, Pid is the server Kong started and Worker/WorkerPid say which of
        its processes answers."""
        workers = {} if self.worker_index is None else {
            "Worker": self.worker_index, "WorkerPid": os.getpid()}
        return {
            "Pid": self.server_pid,
            **workers,
            "Plugins": {
                name: {
                    "Name": name,
                    "Modtime": plugin.mtime,
                    "LoadTime": plugin.load_time,
                    "Instances": [i.status() for i in self.instances if i.module is plugin],
                    "LastStartInstance": plugin.last_start_instance_time,
                    "LastCloseInstance": plugin.last_close_instance_time,
                }
                for name, plugin in self.plugins.items()
            },
            "Events": len(self.events),
            "RunningHandlers": self.events.running,
        }
