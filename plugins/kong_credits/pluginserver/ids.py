"""Instance and event ids that a restarted server does not hand out again."""

from __future__ import annotations

import itertools
import time

__all__ = ["id_counter"]


def id_counter() -> itertools.count[int]:
    """Count from (milliseconds clock mod 2**31) * 2**16, so ids stay below 2**53.

    kong-pdk counts from 0 in every process; Kong caches instance ids per worker and this
    protocol has no restart signal (kong-pdk sends no serverPid), so after a respawn Kong's
    cached instance #0 would silently name whichever instance the new process started first.
    Starting elsewhere makes stale ids miss and get `no plugin instance`, Kong's restart cue.
    Ids stay below 2**53 because Kong's Lua numbers are doubles.
    """
    return itertools.count((time.time_ns() // 1_000_000 % 2**31) << 16)
