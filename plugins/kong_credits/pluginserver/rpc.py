"""The plugin.* RPC methods Kong calls, and the one border where failures become error strings."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .errors import PluginServerError, ProtocolError
from .events import EventTable
from .instances import InstanceTable
from .loader import PluginModule
from .wire import EventAnswer, pack_answer, pack_error

__all__ = ["PluginServer"]

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


class PluginServer:
    """Plugins, their instances and live events, behind Kong's MessagePack-RPC methods.

    No I/O here: a transport feeds decoded requests to `answer()` and writes the bytes back.
    """

    def __init__(self, plugins: Iterable[PluginModule], *, event_timeout_s: float = 60.0) -> None:
        self.plugins = {plugin.name: plugin for plugin in plugins}
        self.instances = InstanceTable(self.plugins)
        self.events = EventTable(timeout_s=event_timeout_s)
        methods: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "plugin.GetStatus": self.get_status,
            "plugin.GetPluginInfo": self.get_plugin_info,
            "plugin.StartInstance": self.start_instance,
            "plugin.InstanceStatus": self.instance_status,
            "plugin.CloseInstance": self.close_instance,
            "plugin.HandleEvent": self.handle_event,
        }
        methods.update(dict.fromkeys(_STEP_METHODS, self.step))
        self._methods = methods

    async def answer(self, message: Any) -> bytes:
        """Packed answer to one request `[0, msgid, method, [arg]]`: a result or an error string.

        Raises ProtocolError only when the message is not a request at all.
        """
        try:
            kind, msgid, method, args = message
        except (TypeError, ValueError):
            raise ProtocolError(f"not a MessagePack-RPC request: {message!r:.200}") from None
        if kind != 0:
            raise ProtocolError(f"not a MessagePack-RPC request: {message!r:.200}")
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

    async def handle_event(self, arg: dict[str, Any]) -> EventAnswer:
        """{InstanceId, EventName} -> {EventId, Data}: the handler's first PDK call or "ret"."""
        instance = self.instances.get(arg["InstanceId"])
        phase = arg["EventName"]
        entry = instance.handlers.get(phase)
        if entry is None:
            raise PluginServerError(f"{instance.module.name} has no {phase} phase")
        event_id, reply = self.events.open(*entry)
        return EventAnswer(event_id, await reply)

    async def step(self, arg: dict[str, Any]) -> EventAnswer:
        """{EventId, Data} -> {EventId, Data}: the result goes in, the next call comes out."""
        event_id = arg["EventId"]
        return EventAnswer(event_id, await self.events.step(event_id, arg.get("Data")))

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
        """kong-pdk's status, plus Events (live events) and RunningHandlers (handler tasks)."""
        return {
            "Pid": os.getpid(),
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
