"""Measuring tools shared by the load/ benchmarks: CPU and memory from /proc, Redis's own
statistics, percentiles, the machine's description and the marked sections of RESULTS.md.

Linux only (/proc). Nothing here counts on our own code's counters: CPU time comes from the
kernel, Redis commands from Redis (INFO commandstats, and MONITOR for the exact round trips).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

__all__ = [
    "CpuClock",
    "MonitorCount",
    "RedisSnapshot",
    "describe_machine",
    "machine_busy_s",
    "percentile",
    "rss_mib",
    "wait_for_quiet",
    "write_section",
]

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), for the noise figure."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def wait_for_quiet(busy_below: float = 0.1, window_s: float = 0.3, timeout_s: float = 30.0
                   ) -> float:
    """Wait until the whole machine is at most `busy_below` cores busy over `window_s`
    (our own processes idle between passes, so this waits out other processes' bursts).
    Returns the seconds waited; gives up after `timeout_s` (the pass then reports the noise).
    """
    started = time.monotonic()
    while True:
        before = machine_busy_s()
        time.sleep(window_s)
        if (machine_busy_s() - before) / window_s <= busy_below:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            return time.monotonic() - started


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


class CpuClock:
    """CPU seconds of named processes (and of the whole machine) between start() and stop().

    `redis` is read from Redis's own INFO cpu, so it works for a Redis that is not our child.
    """

    def __init__(self, pids: dict[str, int], admin: redis.Redis | None = None) -> None:
        self.pids = pids
        self.admin = admin
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: _cpu_of(pid) for name, pid in self.pids.items()}
        if self.admin is not None:
            info = self.admin.info("cpu")
            now["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        now["machine"] = machine_busy_s()
        return now

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        """Seconds per process since start(); `other` is the machine's busy time nobody here
        accounts for (other processes on the box: a noisy neighbour shows up there)."""
        end = self._now()
        spent = {name: end[name] - self._start[name] for name in end}
        ours = sum(v for k, v in spent.items() if k != "machine")
        spent["other"] = max(0.0, spent.pop("machine") - ours)
        return spent


@dataclass(frozen=True)
class RedisSnapshot:
    """INFO stats + commandstats at one instant, read with one command."""

    calls: dict[str, int]
    connections_received: int

    @classmethod
    def take(cls, admin: redis.Redis) -> RedisSnapshot:
        info = admin.execute_command("INFO", "stats", "commandstats")
        calls = {key.removeprefix("cmdstat_"): int(value["calls"])
                 for key, value in info.items() if key.startswith("cmdstat_")}
        return cls(calls, int(info["total_connections_received"]))

    def delta(self, later: RedisSnapshot) -> Counter[str]:
        """Calls per command between two snapshots, our own INFO left out.

        Commands that scripts run inside count here too (HGET, XADD, ...); EVALSHA and EVAL
        cannot be called from a script, so their counts are client round trips.
        """
        out: Counter[str] = Counter()
        for name, calls in later.calls.items():
            diff = calls - self.calls.get(name, 0)
            if diff and name != "info":
                out[name] = diff
        return out


class MonitorCount:
    """Commands clients sent to Redis (not those scripts ran) while the block runs: MONITOR.

    MONITOR prints every command with its source; a script's own calls carry `lua`. So the
    commands left are exactly the round trips clients made. MONITOR costs Redis time: use it
    on a short counting pass, never while measuring throughput.
    """

    _END = "kong-credits-bench-monitor-end"

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._admin = redis.Redis.from_url(url)
        self.commands: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def __enter__(self) -> MonitorCount:
        self._admin.ping()  # connect now, so its handshake is not counted
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._admin.echo(self._END)
        assert self._thread is not None
        self._thread.join(30)
        self._admin.close()
        self._client.close()

    def _read(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            while True:
                seen = monitor.next_command()
                command = seen["command"]
                if command == f"ECHO {self._END}":
                    return
                if seen.get("client_type") == "lua":
                    continue
                self.commands[command.split(" ", 1)[0].upper()] += 1

    @property
    def total(self) -> int:
        return sum(self.commands.values())


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of the (sorted) values fall; nan when empty."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def _first_line(command: Sequence[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def describe_machine(redis_info: dict[str, object] | None = None) -> list[str]:
    """Markdown bullet lines: CPU, cores, memory, kernel, Python, key packages, git state."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
    from importlib.metadata import PackageNotFoundError, version

    packages = []
    for name in ("uvloop", "msgpack", "hiredis", "kong-pdk", "gevent"):
        with contextlib.suppress(PackageNotFoundError):
            packages.append(f"{name} {version(name)}")
    root = Path(__file__).resolve().parent.parent
    rev = _first_line(["git", "-C", str(root), "describe", "--always", "--dirty"])
    lines = [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem_kib / 1024 / 1024:.0f} GiB; "
        f"kernel {platform.release()}",
        f"- Python {platform.python_version()}; {', '.join(packages)}",
        f"- code: git {rev}",
    ]
    if redis_info:
        lines.append(f"- Redis {redis_info.get('redis_version')} "
                     f"({redis_info.get('executable') or 'external'}), loopback TCP")
    return lines


def write_section(path: Path, name: str, lines: Iterable[str]) -> None:
    """Replace the block between `<!-- name:begin -->` and `<!-- name:end -->` in `path`
    (appending it when absent), so generated tables live beside hand-written analysis."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, *lines, end])
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    path.write_text(text)
