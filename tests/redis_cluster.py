"""A Redis Cluster of 3 masters and 3 replicas on loopback ports, made by `redis-cli --cluster
create`, for the whole test session (conftest.py's `redis_cluster`).

Tests that kill a master or move a slot leave the cluster changed: `ready()`, which the
`cluster` fixture calls before each test, restarts any node that is down (it rejoins as a
replica of whoever took its slots), waits until every node agrees on a healthy cluster
(3 masters, each with a replica in sync) and empties it. A small cluster-node-timeout keeps a
failover within a few seconds.
"""

from __future__ import annotations

import ctypes
import itertools
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis
from waits import wait_until

from kong_credits.keys import event_streams
from kong_credits.redis_routing import slot_of
from kong_credits.redis_server import _free_port, find_redis_server
from kong_credits.redis_url import redis_client

NODE_TIMEOUT_MS = 1000


def die_with_parent() -> None:
    """preexec_fn of the servers: SIGKILL them when the test process dies, so a run that is
    itself killed (a CI timeout) leaves no cluster behind (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("the cluster tests need redis-cli (Debian's redis-tools, which "
                           "redis-server depends on)")
    return found


class LocalCluster:
    def __init__(self, masters: int = 3, replicas_per_master: int = 1) -> None:
        self.masters_wanted = masters
        self.replicas_per_master = replicas_per_master
        self.ports = [_free_port() for _ in range(masters * (1 + replicas_per_master))]
        self._bus = {port: _free_port() for port in self.ports}
        self._dir = tempfile.TemporaryDirectory(prefix="kong-credits-cluster-")
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The seeds as the plugin and the CLI take them: every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def seed_url(self, port: int | None = None) -> str:
        """One node, as `redis://` (for `--cluster`) ."""
        return f"redis://127.0.0.1:{port or self.ports[0]}/0"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def client(self) -> redis.RedisCluster:
        return redis_client(self.url, decode_responses=True)  # type: ignore[return-value]

    # -- processes ----------------------------------------------------------------------

    def _spawn(self, port: int) -> None:
        folder = Path(self._dir.name) / str(port)
        folder.mkdir(exist_ok=True)
        with open(folder / "server.log", "ab") as log:
            self._processes[port] = subprocess.Popen(
                [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-port", str(self._bus[port]),
                 "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                 "--cluster-replica-validity-factor", "0",
                 "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0",
                 "--dir", str(folder),
                 "--loglevel", "warning"],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

    def _pings(self, port: int) -> bool:
        process = self._processes[port]
        if process.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited:\n" + self.log(port))
        try:
            return bool(self.node(port).ping())
        except redis.ConnectionError:
            return False

    def log(self, port: int) -> str:
        return (Path(self._dir.name) / str(port) / "server.log").read_text(errors="replace")[-2000:]

    def start(self) -> LocalCluster:
        try:
            for port in self.ports:
                self._spawn(port)
            for port in self.ports:
                wait_until(lambda p=port: self._pings(p), interval_s=0.02)
            subprocess.run(
                [redis_cli(), "--cluster", "create",
                 *(f"127.0.0.1:{port}" for port in self.ports),
                 "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"],
                check=True, capture_output=True, timeout=120)
            self.ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        self._processes.clear()
        self._dir.cleanup()

    def kill(self, port: int) -> None:
        """SIGKILL: no goodbye to its clients or to the cluster."""
        process = self._processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def alive(self) -> list[int]:
        return [port for port, process in self._processes.items() if process.poll() is None]

    # -- what the cluster looks like ----------------------------------------------------

    def nodes(self, port: int | None = None) -> list[dict[str, str]]:
        """CLUSTER NODES as one live node sees it: id, port, flags, master (id or '-'),
        link, slots."""
        seen = self.node(port or self.alive()[0]).execute_command("CLUSTER", "NODES")
        rows = []
        for line in seen.splitlines():
            fields = line.split()
            rows.append({"id": fields[0], "port": fields[1].split("@")[0].rsplit(":", 1)[1],
                         "flags": fields[2], "master": fields[3], "link": fields[7],
                         "slots": " ".join(fields[8:])})
        return rows

    def owner(self, slot: int, port: int | None = None) -> int:
        """The port of the master serving `slot`, as one live node sees it."""
        for start, end, master, *_ in self.node(port or self.alive()[0]).execute_command(
                "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(f"no master serves slot {slot}")

    def owner_or_none(self, slot: int) -> int | None:
        """`owner`, or None while no master serves the slot (mid-failover)."""
        try:
            return self.owner(slot)
        except LookupError:
            return None

    def owner_of(self, key: str) -> int:
        return self.owner(slot_of(key))

    def masters(self) -> list[int]:
        return sorted({int(row["port"]) for row in self.nodes() if "master" in row["flags"]
                       and row["slots"]})

    def id_of(self, port: int) -> str:
        return next(row["id"] for row in self.nodes() if int(row["port"]) == port)

    def _healthy(self) -> bool:
        try:
            views = []
            for port in self.ports:
                info = self.node(port).cluster("info")
                if (info["cluster_state"] != "ok"
                        or int(info["cluster_known_nodes"]) != len(self.ports)
                        or int(info["cluster_slots_ok"]) != 16384):
                    return False
                rows = self.nodes(port)
                if any("fail" in row["flags"] or row["link"] != "connected" for row in rows):
                    return False
                masters = {row["id"] for row in rows if "master" in row["flags"]}
                replicas = sorted(row["master"] for row in rows if "slave" in row["flags"])
                views.append((masters, replicas))
                role = self.node(port).info("replication")
                if role["role"] == "slave" and (role["master_link_status"] != "up"
                                                or role.get("master_sync_in_progress")):
                    return False
            masters, replicas = views[0]
            return (all(view == views[0] for view in views)
                    and len(masters) == self.masters_wanted
                    and replicas == sorted(list(masters) * self.replicas_per_master)
                    and all(self._replicates(port) for port in self.masters()))
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False

    def _replicates(self, port: int) -> bool:
        """A write on this master reaches its replicas (WAIT). A replica whose link is up
        may not get the stream yet: right after a resync a master can hold it back for up
        to a second, and killing it then loses every write since (seen with 7.0)."""
        slots = {slot for start, end, master, *_ in self.node(port).execute_command(
                 "CLUSTER", "SLOTS") if int(master[1]) == port for slot in range(start, end + 1)}
        probe = next(key for key in (f"probe-{n}" for n in itertools.count())
                     if slot_of(key) in slots)
        node = self.node(port)
        node.set(probe, 1)
        return int(node.execute_command("WAIT", self.replicas_per_master, 100)) == (
            self.replicas_per_master)

    def ready(self, timeout_s: float = 60) -> None:
        """Restart nodes that are down; wait until every node agrees all is well."""
        for port in self.ports:
            if port not in self.alive():
                self._spawn(port)
        wait_until(self._healthy, timeout_s=timeout_s, interval_s=0.05)

    def flush(self) -> None:
        """Empty every master (replicas follow) and reset every node's statistics."""
        for port in self.masters():
            self.node(port).flushall()
        for port in self.ports:
            self.node(port).config_resetstat()

    def calls(self, command: str = "evalsha") -> int:
        """Calls of `command` summed over every node (INFO commandstats)."""
        total = 0
        for port in self.alive():
            stats = self.node(port).info("commandstats")
            total += stats.get(f"cmdstat_{command}", {}).get("calls", 0)
        return total

    def shard_slots(self) -> dict[int, int]:
        """shard -> slot of its hash tag, for every shard of keys.py."""
        return {shard: slot_of(stream) for shard, stream in enumerate(event_streams())}
