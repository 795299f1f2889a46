"""`kong-credits admin` as a real process on a free loopback port, for the API tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_TOKEN = "admin-test-token-0123456789abcdef"
SECOND_ADMIN_TOKEN = "second-admin-token-fedcba9876543210"
_CLI = "from kong_credits.launch import main; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", _CLI, "admin", *args]


@dataclass
class AdminProcess:
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def run_admin(redis_url: str, log_dir: Path, *args: str,
              tokens: str | None = f"{ADMIN_TOKEN},{SECOND_ADMIN_TOKEN}",
              listen_host: str = "127.0.0.1", env: dict[str, str] | None = None,
              ready: str = "/healthz") -> Iterator[AdminProcess]:
    """Start the command, wait until `ready` answers 200, stop it (SIGTERM) on the way out."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k != "KONG_CREDITS_ADMIN_TOKEN"}
    environment.update(env or {})
    if tokens is not None:
        environment["KONG_CREDITS_ADMIN_TOKEN"] = tokens
    log = log_dir / f"admin-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            admin_argv("--listen", f"{listen_host}:{port}", "--redis-url", redis_url,
                       "--log-level", "info", *args),
            stdout=sink, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{url}{ready}", process, log)
        yield AdminProcess(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 30
                  ) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"admin exited {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"admin not healthy within {timeout_s} s: {log.read_text()}")
