"""Wait for a condition, with a deadline, rather than sleep a fixed time and hope it happened.

The deadline only bounds a hang: these assert that something happens, never how fast.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float = 10.0,
               interval_s: float = 0.01) -> T:
    """Call `predicate` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout_s} s")
        time.sleep(interval_s)
    return result


async def wait_until_async(predicate: Callable[[], T | Awaitable[T]], timeout_s: float = 10.0,
                           interval_s: float = 0.005) -> T:
    """`wait_until` for a running event loop: `predicate` may be a plain or async function."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout_s} s")
        await asyncio.sleep(interval_s)

