"""Which plugin configurations apply to a request, and in which order: Kong's plugins iterator.

- Order (`sort_by_handler_priority` in `kong/db/dao/plugins.lua`): priority descending; equal
  non-zero priorities by name descending.
- For each plugin name, the most specific enabled config wins (`lookup_cfg` in
  `kong/runloop/plugins_iterator.lua`): route+service+consumer, route+consumer,
  service+consumer, route+service, consumer, route, service, global. The consumer is the one
  authenticated when the plugin's turn comes, so auth plugins of higher priority scope the
  plugins after them.
- The config sent to the plugin server (`get_plugin_config`) is the stored config plus
  `route_id`, `service_id`, `consumer_id`, `plugin_instance_name` (absent when unset),
  `__plugin_id`, `__key__` = `plugins:<name>:<route>:<service>:<consumer>::<ws_id>`,
  `__seq__` (node-wide counter from 1, a new value on every config load) and `__ws_id`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .entities import DEFAULT_WORKSPACE_ID, PluginEntity

__all__ = ["PluginSet", "SeqCounter", "plugin_order"]

Scope = tuple[str | None, str | None, str | None]  # route_id, service_id, consumer_id


class SeqCounter:
    """Kong's `plugins_iterator:__seq__` shm counter: node-wide, from 1."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def next(self) -> int:
        return next(self._next)


def plugin_order(plugins: Sequence[tuple[str, int]]) -> list[str]:
    """Names sorted like Kong: priority descending, ties (non-zero) by name descending."""

    def compare(a: tuple[str, int], b: tuple[str, int]) -> int:
        (name_a, prio_a), (name_b, prio_b) = a, b
        if prio_a == prio_b and prio_a != 0:
            return -1 if name_a > name_b else (1 if name_a < name_b else 0)
        return -1 if prio_a > prio_b else (1 if prio_a < prio_b else 0)

    return [name for name, _ in sorted(plugins, key=functools.cmp_to_key(compare))]


def instance_config(plugin: PluginEntity, seq: int) -> dict[str, Any]:
    """The config Kong sends in StartInstance for `plugin` (before JSON encoding)."""
    conf: dict[str, Any] = {k: v for k, v in plugin.config.items() if v is not None}
    for key, value in (("route_id", plugin.route_id), ("service_id", plugin.service_id),
                       ("consumer_id", plugin.consumer_id),
                       ("plugin_instance_name", plugin.instance_name)):
        if value is not None:
            conf[key] = value
        else:
            conf.pop(key, None)
    conf["__plugin_id"] = plugin.id
    conf["__ws_id"] = DEFAULT_WORKSPACE_ID
    conf["__key__"] = (f"plugins:{plugin.name}:{plugin.route_id or ''}:"
                       f"{plugin.service_id or ''}:{plugin.consumer_id or ''}::"
                       f"{DEFAULT_WORKSPACE_ID}")
    conf["__seq__"] = seq
    return conf


class PluginSet:
    """Enabled plugin configs of one loaded config, indexed for per-request lookup."""

    def __init__(
        self, plugins: Sequence[PluginEntity], priorities: Mapping[str, int], seq: SeqCounter
    ) -> None:
        self._by_name: dict[str, dict[Scope, dict[str, Any]]] = {}
        for plugin in plugins:
            if not plugin.enabled:
                continue
            scope = (plugin.route_id, plugin.service_id, plugin.consumer_id)
            self._by_name.setdefault(plugin.name, {})[scope] = instance_config(plugin,
                                                                               seq.next())
        self.order = plugin_order([(n, priorities.get(n, 0)) for n in self._by_name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def lookup(
        self, name: str, route_id: str | None, service_id: str | None, consumer_id: str | None
    ) -> dict[str, Any] | None:
        """The config of `name` that applies, or None when the plugin does not run."""
        combos = self._by_name.get(name)
        if not combos:
            return None
        r, s, c = route_id, service_id, consumer_id
        for scope in ((r, s, c), (r, None, c), (None, s, c), (r, s, None), (None, None, c),
                      (r, None, None), (None, s, None), (None, None, None)):
            if scope in combos:
                return combos[scope]
        return None
