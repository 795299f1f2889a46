"""Values as Kong's Lua side encodes them: msgpack shapes for PDK answers, cjson for JSON.

Kong packs PDK return values with lua-MessagePack after `fix_mmap`/`fix_raw` (see
`kong/runloop/plugin_servers/rpc/mp_rpc.lua`), and JSON with lua-cjson. The plugin server only
ever sees those shapes, so the host produces exactly them here and nowhere else:

- whole numbers become integers, other numbers stay floats;
- an empty Lua table is packed as an empty *array* (`[]`), except multimaps, which are `{}`;
- multimaps (`get_headers`, `get_query`) send name -> array of strings: `s` -> `[s]`,
  a valueless query argument (`true`) -> `[]`;
- raw bodies are msgpack **bin** (Python `bytes`);
- `cjson.encode` is compact, escapes `/` and writes whole numbers without a fraction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["cjson_encode", "lua_value", "multimap", "raw_bytes", "whole_numbers"]


def whole_numbers(value: Any) -> Any:
    """Return `value` with every finite whole float turned into an int, recursively.

    Lua has one number type; lua-MessagePack and cjson both write `5.0` as `5`.
    """
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [whole_numbers(v) for v in value]
    return value


def lua_value(value: Any) -> Any:
    """Shape a PDK return value as Kong's msgpack packer would send it.

    Whole floats become ints and empty tables (empty dicts and lists alike) become `[]`:
    an empty Lua table has no way to say it was a map.
    """
    if isinstance(value, float):
        return whole_numbers(value)
    if isinstance(value, Mapping):
        if not value:
            return []
        return {k: lua_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [lua_value(v) for v in value]
    return value


def multimap(table: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Kong's `fix_mmap`: every value becomes an array of strings; empty stays a map."""
    out: dict[str, list[str]] = {}
    for name, value in (table or {}).items():
        if value is True:
            out[name] = []
        elif isinstance(value, str):
            out[name] = [value]
        else:
            out[name] = list(value)
    return out


def raw_bytes(body: bytes | str | None) -> bytes:
    """Kong's `fix_raw`: a body is always sent as msgpack bin."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    return bytes(body)


def cjson_encode(value: Any) -> str:
    """Encode like `cjson.encode`: compact, `/` escaped, whole numbers without a fraction.

    Keys that hold None are kept as `null`; callers drop them first where Kong has no field.
    """
    text = json.dumps(whole_numbers(value), separators=(",", ":"), ensure_ascii=False)
    # `/` can only occur inside JSON strings, so a plain replace is exact.
    return text.replace("/", "\\/")
