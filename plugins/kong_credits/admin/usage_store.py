"""The admin process's handle on the usage store: opened on first use, reopened after a
failure, so an admin started before the store exists (or while PostgreSQL restarts) serves
usage as soon as it can, and answers 503 until then."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from ..usage.store import Store, StoreError, open_store

__all__ = ["UsageStore"]

T = TypeVar("T")


class UsageStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._store: Store | None = None
        self._lock = threading.Lock()

    def _open(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.url)
            return self._store

    def query(self, read: Callable[[Store], T]) -> T:
        """`read(store)`; StoreError when the store cannot be opened or fails (then the
        connection is dropped, and the next call opens a new one)."""
        store = self._open()
        try:
            return read(store)
        except StoreError:
            with self._lock:
                if self._store is store:
                    self._store = None
            store.close()
            raise

    def check(self) -> None:
        """Raises StoreError unless the store answers a query."""
        self.query(lambda store: store.rows("SELECT 1"))

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
