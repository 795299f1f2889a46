"""The `kong` object phase handlers get: attribute paths become PDK calls sent to Kong."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Kong", "PDKCall"]

PDKCall = Callable[[str, tuple[Any, ...]], Awaitable[Any]]
"""Sends one PDK call ("kong.client.get_consumer", args) and awaits Kong's answer."""

_LOGGABLE = (str, int, list, dict)


class Kong:
    """`await kong.client.get_consumer()` sends {Method: "kong.client.get_consumer", Args: []}.

    Any dotted path below `kong` names a Kong PDK function; calling it returns an awaitable of
    Kong's answer: the function's first return value, None when Kong sent none (Kong drops a
    Lua error value, so there are no (value, err) tuples). `kong.response.exit(...)` and
    `kong.response.error(...)` end the event: they return None at once and any later call
    raises EventFinished. Each call must be awaited before the next one.
    """

    __slots__ = ("_call", "_path")

    def __init__(self, call: PDKCall, path: str = "kong") -> None:
        self._call = call
        self._path = path

    def __getattr__(self, name: str) -> Kong:
        if name.startswith("_"):  # no PDK name does; keeps copy/pickle/inspect probes honest
            raise AttributeError(name)
        return Kong(self._call, f"{self._path}.{name}")

    def __call__(self, *args: Any) -> Awaitable[Any]:
        path = self._path
        if path.startswith("kong.log"):
            # kong-pdk's rule: Kong's log functions tostring() their arguments anyway.
            args = tuple(a if type(a) in _LOGGABLE else str(a) for a in args)
        return self._call(path, args)

    def __repr__(self) -> str:
        return f"<PDK {self._path}>"
