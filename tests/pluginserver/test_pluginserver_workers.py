"""`kong-credits pluginserver --workers N`: several nginx workers (driver processes, each its
own pid) against several server processes behind one socket."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from nginx_worker import Connection
from waits import wait_until

from kong_credits import wallets
from kong_credits.pluginserver.workers import Assignments

PLUGINS_DIR = Path(__file__).parent / "plugins"
DRIVER = Path(__file__).with_name("nginx_worker.py")
IDS = itertools.count(1)  # this test process is one more nginx worker: one msgid counter


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped counts: it serves nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Server:
    """`python -m kong_credits.pluginserver --workers N` on a short temp socket path."""

    def __init__(self, workers: int, *extra: str, launcher: list[str] | None = None,
                 stale: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="psw", dir="/tmp")
        self.path = f"{self.dir}/credits.socket"
        if stale:  # a socket file left behind by a killed server
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
                old.bind(self.path)
        self.log = open(f"{self.dir}/server.log", "wb")  # noqa: SIM115 - closed in close()
        cmd = [sys.executable, "-m", "kong_credits.pluginserver", "-p", self.dir,
               "-d", str(PLUGINS_DIR), "--workers", str(workers), *extra]
        self.proc = subprocess.Popen([*(launcher or []), *cmd], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def connect(self) -> Connection:
        def attempt() -> Connection | None:
            try:
                return Connection(self.path, IDS)
            except (FileNotFoundError, ConnectionRefusedError):  # not listening yet
                return None

        return wait_until(attempt, interval_s=0.02)

    def status(self) -> dict[str, Any]:
        conn = self.connect()
        try:
            error, status = conn.call("plugin.GetStatus", {})
        finally:
            conn.sock.close()
        assert error is None, error
        return status

    def output(self) -> str:
        return Path(f"{self.dir}/server.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as Kong stops it: every process exits, the socket file goes."""
        workers = children(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(10) == 0, self.output()
        assert all(gone(pid) for pid in workers)
        assert not os.path.exists(self.path)

    def close(self) -> None:
        if self.proc.poll() is None:
            for pid in children(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def start() -> Iterator[Any]:
    servers: list[Server] = []

    def start(workers: int, *extra: str, **kwargs: Any) -> Server:
        servers.append(Server(workers, *extra, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class Drivers:
    """nginx_worker.py processes: each one nginx worker, alive until released."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, path: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(DRIVER), path, *args], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    @staticmethod
    def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()  # the driver's sockets time out: this cannot hang
        assert line, proc.stderr.read()
        return json.loads(line)

    def release(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(BrokenPipeError):
                assert proc.stdin is not None
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


@pytest.fixture
def drivers() -> Iterator[Drivers]:
    group = Drivers()
    yield group
    group.release()


@pytest.mark.parametrize("workers", [2, 3])
def test_each_nginx_worker_is_served_whole_by_one_process(start, drivers, workers) -> None:
    server = start(workers, stale=True)  # replaced, as with one process
    status = server.status()
    assert status["Pid"] == server.proc.pid
    processes = children(server.proc.pid)
    assert len(processes) == workers and status["WorkerPid"] in processes

    procs = [drivers.start(server.path, "--events", "200") for _ in range(2 * workers)]
    results = [drivers.result(proc) for proc in procs]

    for result in results:
        assert result["errors"] == []  # no "event id not found", no "no plugin instance"
        assert result["events"] == 200
        # StartInstance + per pair of events: 2 HandleEvent + 4 Steps (access), 2 + 2 (log)
        assert result["answered"] == 1 + 100 * 10
        assert len(set(result["worker_pids"])) == 1, result  # all its connections, new ones too
    served = collections.Counter(r["worker_pids"][0] for r in results)
    assert set(served) == processes
    assert sorted(served.values()) == [2] * workers  # least loaded first: balanced
    drivers.release()
    server.stop()


def test_killed_worker_is_restarted_and_its_nginx_workers_served_again(start,
                                                                        drivers) -> None:
    server = start(2)
    mine = server.connect()
    instance_id = mine.call("plugin.StartInstance", {"Name": "echo", "Config": "{}"})[1]["Id"]
    before = mine.call("plugin.GetStatus", {})[1]
    other = drivers.start(server.path, "--events", "20")
    other_pid = drivers.result(other)["worker_pids"][0]
    assert other_pid != before["WorkerPid"]  # the other nginx worker, the other process

    os.kill(before["WorkerPid"], signal.SIGKILL)
    with pytest.raises(ConnectionError):  # its connections are lost, as with one process
        mine.call("plugin.GetStatus", {})

    def restarted() -> dict[str, Any] | None:
        try:
            status = server.status()  # a new connection of this same nginx worker
        except ConnectionError:  # handed to the process before it was gone: lost too
            return None
        return status if status["WorkerPid"] != before["WorkerPid"] else None

    after = wait_until(restarted)
    assert after["Worker"] == before["Worker"]  # the same slot serves this nginx worker
    assert children(server.proc.pid) == {after["WorkerPid"], other_pid}  # other untouched
    conn = server.connect()
    error, _ = conn.call("plugin.HandleEvent", {"InstanceId": instance_id,
                                                "EventName": "access"})
    assert error == f"no plugin instance #{instance_id}"  # Kong's cue to start it again
    error, started = conn.call("plugin.StartInstance", {"Name": "echo", "Config": "{}"})
    assert error is None and started["Id"] != instance_id
    error, answer = conn.call("plugin.HandleEvent", {"InstanceId": started["Id"],
                                                     "EventName": "access"})
    assert error is None and answer["Data"]["Method"] == "kong.request.get_header"
    conn.sock.close()

    again = drivers.result(drivers.start(server.path, "--events", "20"))
    assert again["errors"] == [] and again["worker_pids"][0] in (after["WorkerPid"], other_pid)
    drivers.release()
    server.stop()


def test_one_worker_is_the_single_process_server(start) -> None:
    server = start(1)
    status = server.status()
    assert status["Pid"] == server.proc.pid and "Worker" not in status
    assert children(server.proc.pid) == set()  # no parent, no handover
    server.stop()


def test_workers_stop_when_kong_goes_away(start) -> None:
    """Kong killed without stopping its plugin server: the server and its workers stop."""
    kong = [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])"]
    server = start(2, launcher=kong)
    server_pid = wait_until(lambda: children(server.proc.pid))  # kong's one child
    (server_pid,) = server_pid
    assert server.status()["Pid"] == server_pid
    workers = children(server_pid)
    assert len(workers) == 2
    server.proc.kill()
    server.proc.wait()
    wait_until(lambda: gone(server_pid) and all(gone(pid) for pid in workers))
    assert not os.path.exists(server.path)


def test_forked_workers_charge_every_request_once(start, drivers, redis_url) -> None:
    """Request ids are per process: a worker forked with its parent's id prefix would repeat
    its sibling's ids, and authorize would answer those from the stored answer, uncharged."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    wallets.grant(client, "payer", 1000)
    server = start(2, "-m", "credits=kong_credits.plugin")
    server.status()  # ready; this test process is a third nginx worker
    config = json.dumps({"cost": 1, "redis_url": redis_url})
    procs = [drivers.start(server.path, "--credits", config, "--events", "50")
             for _ in range(2)]
    results = [drivers.result(proc) for proc in procs]
    assert [r["errors"] for r in results] == [[], []]
    assert len({r["worker_pids"][0] for r in results}) == 2  # one on each process
    assert wallets.balance(client, "payer").balance == 1000 - 2 * 50
    drivers.release()
    server.stop()


def test_assignment_is_sticky_balanced_and_forgets_gone_pids() -> None:
    alive = {10, 11, 12}
    assignments = Assignments(2, alive=alive.__contains__)
    assert [assignments.worker_for(pid) for pid in (10, 11, 12, 10, 11)] == [0, 1, 0, 0, 1]
    alive.discard(11)  # an nginx worker gone (kong reload): its place is free again
    alive.add(20)
    assert assignments.worker_for(20) == 1
    assert assignments.worker_for(12) == 0
