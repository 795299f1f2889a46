"""Plugin instances started on plugin servers: Kong's `running_instances` of one worker.

Rules from `get_instance_id` in `kong/runloop/plugin_servers/plugin.lua` (3.9; same in 3.7+):
- cached by plugin id (`kong.plugin.get_id()`), reused while `__seq__` and `__plugin_id`
  are unchanged;
- otherwise the caller claims the slot, sends `plugin.StartInstance {Name, Config}` (Config
  = cjson of the plugin config) and only then `plugin.CloseInstance <old id>` (answer
  ignored); requests arriving meanwhile wait for the claim (Kong polls every 0.1 s, up to
  10 s; here they await the claim, same bound);
- a failed StartInstance removes the claim and is raised (Kong's `error(err)`);
- `reset_plugin` forgets every instance of a plugin without closing it (`no plugin
  instance`), `server_pid` drops those of a plugin server whose pid changed (`serverPid`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .codec import cjson_encode
from .protocol import RpcClient, RpcError, RpcProtocolError

__all__ = ["InstanceCache", "InstanceStartError"]


class InstanceStartError(Exception):
    """StartInstance failed or the claim timed out: a Lua error in Kong (500 in access)."""


@dataclass
class _Instance:
    plugin_name: str
    conf: Mapping[str, Any]
    seq: Any
    rpc: RpcClient
    id: int | None = None
    ready: asyncio.Future[None] | None = None


@dataclass
class InstanceCache:
    """Started instances of one worker, shared by all plugins of the host."""

    claim_timeout_s: float = 10.0
    starts: int = 0
    closes: int = 0
    _entries: dict[str, _Instance] = field(default_factory=dict)
    _pids: dict[int, int] = field(default_factory=dict)

    def cached_id(self, plugin_id: str) -> int | None:
        entry = self._entries.get(plugin_id)
        return entry.id if entry else None

    async def instance_id(self, rpc: RpcClient, plugin_name: str, conf: Mapping[str, Any]) -> int:
        """The instance id serving `conf` (which carries `__plugin_id` and `__seq__`)."""
        key = conf["__plugin_id"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.claim_timeout_s
        entry = self._entries.get(key)
        while entry is not None and entry.id is None and entry.ready is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._entries.pop(key, None)
                raise InstanceStartError(
                    f"Could not claim instance_id for {plugin_name} (key: {key})")
            await asyncio.wait([entry.ready], timeout=remaining)
            entry = self._entries.get(key)
        if (entry is not None and entry.id is not None and entry.seq == conf["__seq__"]
                and entry.conf.get("__plugin_id") == key):
            return entry.id
        old_id = entry.id if entry is not None else None
        claim = _Instance(plugin_name, conf, conf["__seq__"], rpc, ready=loop.create_future())
        self._entries[key] = claim
        try:
            status = await rpc.call("plugin.StartInstance",
                                    {"Name": plugin_name, "Config": cjson_encode(conf)})
            if not isinstance(status, Mapping) or not isinstance(status.get("Id"), int):
                raise RpcProtocolError(f"StartInstance answered without an Id: {status!r}")
            claim.id = status["Id"]
        except (RpcError, RpcProtocolError) as exc:
            raise InstanceStartError(f"starting instance: {exc}") from exc
        finally:
            if claim.id is None and self._entries.get(key) is claim:
                del self._entries[key]  # remove the claim: another request may succeed
            claim.ready.set_result(None)
        self.starts += 1
        if old_id is not None:
            self.closes += 1
            # Kong ignores the answer: another worker may have closed it first
            with contextlib.suppress(RpcError, RpcProtocolError):
                await rpc.call("plugin.CloseInstance", old_id)
        return claim.id

    def reset_plugin(self, plugin_name: str) -> None:
        """Forget every instance of `plugin_name` (no CloseInstance: the server lost them)."""
        for key in [k for k, e in self._entries.items() if e.plugin_name == plugin_name]:
            del self._entries[key]

    def server_pid(self, rpc: RpcClient, pid: int) -> None:
        """A `serverPid` notification: a new pid means every instance there is gone."""
        previous = self._pids.get(id(rpc))
        if previous is not None and previous != pid:
            for key in [k for k, e in self._entries.items() if e.rpc is rpc]:
                del self._entries[key]
        self._pids[id(rpc)] = pid
