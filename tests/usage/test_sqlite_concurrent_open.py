"""Several forwarders (or a forwarder and the admin) opening one new SQLite store at once:
every one of them opens it (two processes switching a new file to WAL together used to get
"database is locked" at once, and the forwarder exited 2)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from kong_credits.usage.store import open_store

PROCESSES = 6
TRIALS = 10  # the race hit about one trial in four before the fix


def _open(url: str, barrier: multiprocessing.synchronize.Barrier,
          results: multiprocessing.Queue) -> None:
    barrier.wait()
    try:
        with open_store(url, create=True) as store:
            results.put(f"ok {store.schema_version()}")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_store_together_all_open_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for trial in range(TRIALS):
        url = f"sqlite:///{tmp_path}/usage-{trial}.db"
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        processes = [context.Process(target=_open, args=(url, barrier, results))
                     for _ in range(PROCESSES)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        outcomes = [results.get(timeout=5) for _ in processes]
        assert len(set(outcomes)) == 1 and outcomes[0].startswith("ok"), (trial, outcomes)
