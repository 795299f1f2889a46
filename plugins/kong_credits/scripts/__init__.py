"""The Lua scripts, as package data: each is sent with wallet.lua, its shared functions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

__all__ = ["LuaScript", "load"]


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
    """`name`.lua preceded by wallet.lua (the functions every script shares)."""
    here = files(__package__)
    shared = here.joinpath("wallet.lua").read_text()
    return LuaScript(name, shared + "\n" + here.joinpath(f"{name}.lua").read_text())
