"""The Lua scripts, as package data: each is sent with wallet.lua and plans.lua, the
functions they share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

__all__ = ["SHARED", "LuaScript", "load"]

SHARED = ("wallet", "plans")
"""The files sent before every script, in this order (plans.lua uses wallet.lua's functions)."""


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's full source and its SHA1, computed once, for EVALSHA."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


@cache
def load(name: str) -> LuaScript:
    """`name`.lua preceded by wallet.lua and plans.lua (the functions every script shares)."""
    here = files(__package__)
    shared = "\n".join(here.joinpath(f"{part}.lua").read_text() for part in SHARED)
    return LuaScript(name, shared + "\n" + here.joinpath(f"{name}.lua").read_text())
