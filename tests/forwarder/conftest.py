"""Fixtures of the forwarder tests; the vendor fakes live with the sink tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# billing_recorder.py (the loopback billing backend) is shared with tests/sinks.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sinks"))

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn(tmp_path: Path, redis_url: str) -> Iterator[Spawn]:
    """Start `kong-credits forwarder ...` processes (fast backoff and polling, a summary
    every 0.5 s); all are killed after the test. Logs: tmp_path/forwarder-N.log."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"forwarder-{len(processes)}.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "kong_credits.forwarder.cli", "forwarder", *args,
                 "--backoff-base-ms", "5", "--backoff-max-ms", "50", "--block-ms", "100",
                 "--summary-interval-s", "0.5"],
                cwd=tmp_path, env={**os.environ, "KONG_CREDITS_REDIS_URL": redis_url},
                stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
