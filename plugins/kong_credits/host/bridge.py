"""One phase of one external plugin: Kong's `Rpc:handle_event` and `bridge_loop`.

`plugin.HandleEvent {InstanceId, EventName}` answers `{EventId, Data}`; until Data is
`"ret"`, Data is a PDK call `{Method, Args}` that the host answers with `plugin.<Step>
{EventId[, Data]}`, keeping the first EventId. Outcomes, as in Kong:
- `"ret"`: the phase is over;
- `kong.response.exit/error`: PdkExit propagates; nothing more is sent for the event;
- a PDK function raising, a broken answer or a failed StartInstance: PluginError (a Lua
  error: the caller turns it into Kong's 500 in access/rewrite/response, a log line in log);
- an error answer containing `no plugin instance` (any case): the plugin's cached instances
  are forgotten and the phase reruns from StartInstance, repeating PDK calls already made;
- any other error answer, `no data` (EOF/timeout) included: logged, and the request goes on
  as if the phase had finished.
Deviation: Kong restarts without limit; the host gives up after `max_restarts` (logged as an
error, phase treated as finished) so a server that keeps losing instances cannot hang a test.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .context import RequestContext
from .instances import InstanceCache, InstanceStartError
from .pdk import Pdk, PdkRaised
from .protocol import RpcClient, RpcError, RpcProtocolError

__all__ = ["ExternalPlugin", "PluginError", "run_phase"]

_logger = logging.getLogger("kong_credits.host")


class PluginError(Exception):
    """A Lua error in Kong's plugin handler (not an RPC error answer)."""


@dataclass(frozen=True)
class ExternalPlugin:
    """A plugin served by a plugin server: what `query_cmd` told, plus its RPC client."""

    name: str
    priority: int
    version: str
    phases: tuple[str, ...]
    schema: Mapping[str, Any]
    rpc: RpcClient


async def run_phase(
    plugin: ExternalPlugin,
    conf: Mapping[str, Any],
    phase: str,
    ctx: RequestContext,
    *,
    instances: InstanceCache,
    pdk: Pdk,
    max_restarts: int = 3,
) -> None:
    """Run `phase` of `plugin` for `ctx`; raises PdkExit or PluginError, see module doc."""
    restarts = 0
    while True:
        try:
            instance_id = await instances.instance_id(plugin.rpc, plugin.name, conf)
            await _bridge_loop(plugin, conf, instance_id, phase, ctx, pdk)
            return
        except InstanceStartError as exc:
            raise PluginError(str(exc)) from exc
        except RpcProtocolError as exc:
            raise PluginError(str(exc)) from exc
        except RpcError as exc:
            message = exc.message
        if "no plugin instance" not in message.lower():
            _log_error(ctx, f"[{plugin.name}] {message}")
            return
        instances.reset_plugin(plugin.name)
        _logger.warning("[%s] %s", plugin.name, message)
        restarts += 1
        if restarts > max_restarts:
            _log_error(ctx, f"[{plugin.name}] {message} (gave up after {max_restarts} "
                            "instance restarts)")
            return


async def _bridge_loop(
    plugin: ExternalPlugin,
    conf: Mapping[str, Any],
    instance_id: int,
    phase: str,
    ctx: RequestContext,
    pdk: Pdk,
) -> None:
    step_in = await plugin.rpc.call(
        "plugin.HandleEvent", {"InstanceId": instance_id, "EventName": phase})
    if step_in is None:
        return
    event_id = _field(step_in, "EventId")
    while True:
        data = _field(step_in, "Data")
        if data == "ret":
            return
        if not isinstance(data, Mapping) or not isinstance(data.get("Method"), str):
            raise PluginError(f"unexpected event data from {plugin.name}: {data!r}")
        try:
            answer = pdk.call(ctx, plugin.name, conf["__plugin_id"], phase, data["Method"],
                              data.get("Args"))
        except PdkRaised as exc:
            raise PluginError(str(exc)) from exc
        step: dict[str, Any] = {"EventId": event_id}
        if answer.has_data:
            step["Data"] = answer.data
        step_in = await plugin.rpc.call(answer.method, step)
        if step_in is None:
            return


def _field(answer: Any, name: str) -> Any:
    if not isinstance(answer, Mapping):
        raise PluginError(f"expected a map answer, got {answer!r}")
    return answer.get(name)


def _log_error(ctx: RequestContext, message: str) -> None:
    ctx.errors.append(message)
    _logger.error("%s", message)
