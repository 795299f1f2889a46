"""Plugin instances: one Plugin(config) per StartInstance, kept until CloseInstance."""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import PluginServerError
from .events import Handler
from .ids import id_counter
from .loader import PluginModule

__all__ = ["Instance", "InstanceTable"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Instance:
    """A started plugin config: the Plugin object and its phase handlers with log labels.

    A handler is None when the Plugin object set that phase's attribute to None: this config
    has nothing to do in that phase (the `credits` plugin's log without `cost_header`), so
    the event is answered "ret" at once, with no task.
    """

    id: int
    module: PluginModule
    config: dict[str, Any]
    plugin: Any
    handlers: dict[str, tuple[Handler, str] | None]
    start_time: float

    def status(self) -> dict[str, Any]:
        """kong-pdk's instance_status shape."""
        return {
            "Name": self.module.name,
            "Id": self.id,
            "Config": self.config,
            "StartTime": self.start_time,
        }


class InstanceTable:
    """Instances by id. Kong caches them per worker and closes them on config changes."""

    def __init__(self, plugins: dict[str, PluginModule]) -> None:
        self._plugins = plugins
        self._instances: dict[int, Instance] = {}
        self._ids = id_counter()

    def __iter__(self) -> Iterator[Instance]:
        return iter(self._instances.values())

    def get(self, instance_id: Any) -> Instance:
        instance = self._instances.get(instance_id)
        if instance is None:
            # Kong matches "no plugin instance" to restart the instance: keep this text.
            raise PluginServerError(f"no plugin instance #{instance_id}")
        return instance

    def start(self, name: str, config_json: str | dict[str, Any]) -> Instance:
        """Plugin(config) for a config Kong sends as a JSON string; errors name the plugin."""
        module = self._plugins.get(name)
        if module is None:
            raise PluginServerError(f"{name} not initialized")
        raw = config_json if isinstance(config_json, str) else json.dumps(config_json)
        try:
            config = json.loads(raw)
            plugin = module.cls(json.loads(raw))  # its own copy: what it mutates is not echoed
        except Exception as exc:
            logger.exception("failed to start an instance of %s", name)
            raise PluginServerError(
                f"failed to start an instance of {name}: {type(exc).__name__}: {exc}"
            ) from exc
        instance_id = next(self._ids)
        handlers = {
            phase: None if getattr(plugin, phase) is None
            else (getattr(plugin, phase), f"{name} #{instance_id} {phase}")
            for phase in module.phases
        }
        instance = Instance(instance_id, module, config, plugin, handlers, time.time())
        self._instances[instance_id] = instance
        module.last_start_instance_time = instance.start_time
        logger.info("instance #%d of %s started", instance_id, name)
        return instance

    async def close(self, instance_id: Any) -> Instance:
        """Forget the instance, then run its optional close() (sync or async); errors are logged.

        Events already running on it finish normally: they hold their own reference.
        """
        instance = self.get(instance_id)
        del self._instances[instance.id]
        instance.module.last_close_instance_time = time.time()
        close = getattr(instance.plugin, "close", None)
        if close is not None:
            try:
                outcome = close()
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("close() of %s #%d raised", instance.module.name, instance.id)
        logger.info("instance #%d of %s closed", instance.id, instance.module.name)
        return instance
