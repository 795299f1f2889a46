"""Sentinel-managed replication on loopback ports, for the whole test session (conftest.py's
`redis_sentinel`): 1 master, 1 replica, 3 sentinels (quorum 2) watching them as `kc-master`.

A `SENTINEL FAILOVER` swaps the two data nodes' roles, and Sentinel demotes the old master
only seconds later (it waits 4 publish periods, 8 s, before reconfiguring an instance it sees
claiming the master role; shortening them with SENTINEL DEBUG made the sentinels demote the
next promoted replica before the failover's leader saw it promoted). `ready()`, called before
each test, waits for that, then sets
`min-replicas-to-write 1` on whichever node is master and 0 on the replica: the master
refuses writes (NOREPLICAS) as soon as its replica is promoted and leaves it, so no write
lands on the old master after the promotion and is lost when it resyncs. The README
recommends the same setting.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
from pathlib import Path

import redis
from redis_cluster import die_with_parent
from waits import wait_until

from kong_credits.redis_server import _free_port, find_redis_server

NAME = "kc-master"
DOWN_AFTER_MS = 1000


class LocalSentinel:
    def __init__(self) -> None:
        self.data_ports = [_free_port(), _free_port()]
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self._dir = tempfile.TemporaryDirectory(prefix="kong-credits-sentinel-")
        self._processes: dict[str, subprocess.Popen[bytes]] = {}  # by name: port, sentinel-port

    @property
    def url(self) -> str:
        return ("redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
                + f"/{NAME}")

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def _spawn(self, name: str, args: list[str]) -> None:
        folder = Path(self._dir.name) / name
        folder.mkdir(exist_ok=True)
        with open(folder / "server.log", "ab") as log:
            self._processes[name] = subprocess.Popen(
                [find_redis_server(), *args, "--bind", "127.0.0.1", "--dir", str(folder),
                 "--loglevel", "warning"], stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent)

    def _pings(self, port: int) -> bool:
        if any(process.poll() is not None for process in self._processes.values()):
            raise RuntimeError(f"a server of {self._dir.name} exited")
        try:
            return bool(self.node(port).ping())
        except redis.ConnectionError:
            return False

    def start(self) -> LocalSentinel:
        master, replica = self.data_ports
        try:
            for port in self.data_ports:
                self._spawn(str(port), ["--port", str(port), "--save", "", "--appendonly", "no",
                                        "--repl-diskless-sync-delay", "0",
                                        *(["--replicaof", "127.0.0.1", str(master)]
                                          if port == replica else [])])
            for port in self.data_ports:
                wait_until(lambda p=port: self._pings(p), interval_s=0.02)
            # The sentinels find the replica in the master's INFO, asked at once and then
            # every 10 s: start them once the replica is attached.
            wait_until(lambda: self.node(master).info("replication")["connected_slaves"] == 1,
                       interval_s=0.02)
            for port in self.sentinel_ports:
                config = Path(self._dir.name) / f"sentinel-{port}.conf"
                config.write_text(
                    f"sentinel monitor {NAME} 127.0.0.1 {master} 2\n"
                    f"sentinel down-after-milliseconds {NAME} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {NAME} 10000\n")
                self._spawn(f"sentinel-{port}", [str(config), "--sentinel", "--port", str(port)])
            for port in self.sentinel_ports:
                wait_until(lambda p=port: self._pings(p), interval_s=0.02)
            self.ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        self._processes.clear()
        self._dir.cleanup()

    def named_master(self, sentinel: int | None = None) -> int | None:
        """The master's port as one sentinel names it."""
        reply = self.node(sentinel or self.sentinel_ports[0]).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)
        return int(reply[1]) if reply else None

    def master(self) -> int:
        port = self.named_master()
        assert port is not None
        return port

    def replica(self) -> int:
        return next(port for port in self.data_ports if port != self.master())

    def _healthy(self) -> bool:
        try:
            named = {self.named_master(port) for port in self.sentinel_ports}
            if len(named) != 1 or None in named:
                return False
            master = named.pop()
            replica = next(port for port in self.data_ports if port != master)
            if self.node(master).info("replication")["role"] != "master":
                return False
            link = self.node(replica).info("replication")
            if link["role"] != "slave" or link["master_port"] != master or (
                    link["master_link_status"] != "up"):
                return False
            for port in self.sentinel_ports:
                sentinel = self.node(port)
                flags = sentinel.sentinel_master(NAME)["flags"]
                good = [r for r in sentinel.sentinel_slaves(NAME) if r["flags"] == "slave"]
                others = sentinel.sentinel_sentinels(NAME)
                if flags != "master" or len(good) != 1 or len(others) != 2:
                    return False
            # The stream flows (a replica whose link is up may not get it yet, see
            # redis_cluster.py): a write on the master reaches the replica.
            node = self.node(master)
            node.set("probe", 1)
            return int(node.execute_command("WAIT", 1, 100)) == 1
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False

    def kill(self, port: int) -> None:
        """SIGKILL a data node: no goodbye to its clients, replica or sentinels."""
        process = self._processes[str(port)]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def _restart_killed(self, timeout_s: float) -> None:
        """A killed data node back, as the replica of the master the sentinels promoted."""
        for port in self.data_ports:
            if self._processes[str(port)].poll() is None:
                continue
            wait_until(lambda p=port: self.named_master() not in (p, None),
                       timeout_s=timeout_s, interval_s=0.05)
            master = self.master()
            self._spawn(str(port), ["--port", str(port), "--save", "", "--appendonly", "no",
                                    "--repl-diskless-sync-delay", "0",
                                    "--replicaof", "127.0.0.1", str(master)])

    def ready(self, timeout_s: float = 60) -> None:
        """Wait until the sentinels agree, the replica is in sync and nothing is failing over
        (a killed node restarted as the new master's replica); then make the master refuse
        writes without its replica (see the module's doc)."""
        self._restart_killed(timeout_s)
        wait_until(self._healthy, timeout_s=timeout_s, interval_s=0.05)
        master = self.master()
        self.node(master).config_set("min-replicas-to-write", 1)
        self.node(self.replica()).config_set("min-replicas-to-write", 0)
        for port in self.data_ports:
            self.node(port).config_set("min-replicas-max-lag", 10)

    def flush(self) -> None:
        self.node(self.master()).flushall()
        for port in self.data_ports:
            self.node(port).config_resetstat()

    def failover(self) -> int:
        """SENTINEL FAILOVER: promote the replica without asking the other sentinels; the
        port of the new master, once the sentinels name it."""
        old = self.master()
        self.node(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", NAME)
        try:
            wait_until(lambda: self.named_master() not in (old, None), timeout_s=30,
                       interval_s=0.02)
        except AssertionError:
            raise AssertionError(f"no failover within 30 s:\n{self.logs()}") from None
        return self.master()

    def logs(self) -> str:
        return "\n".join(f"== {log}\n{log.read_text(errors='replace')[-3000:]}"
                         for log in sorted(Path(self._dir.name).glob("*/server.log")))
