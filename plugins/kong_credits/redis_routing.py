"""The hot path on Redis Cluster and on Sentinel: lanes made of RedisLanes, one per node.

`lane_from_url` builds the lane for any Redis URL (redis_url.py): a RedisLane for one node, a
ClusterLane for `redis[s]+cluster://`, a SentinelLane for `redis[s]+sentinel://`. All three
take `evalsha(script, keys, args)`, `evalsha_then_wait` (the EVALSHA followed by a WAIT on
the same connection, for `redis_wait_replicas`, replica_wait.py) and `close()`, and in the
steady state each call is one EVALSHA written to the node that serves it, pipelined with the
other calls to that node in one round trip: what RedisLane does for one node, done per node.

A routed lane never resends a command that may have run (its connection was lost or its reply
was late): it finds where Redis is now and raises, so the caller's retry, which the plugin
makes once with the same request id (redis_pool.py), goes to the right node. It does resend
what Redis refused without running (a redirection, a slot mid-migration, a cluster or master
that is down or read-only for the moment of a failover, a node that never saw the script)
within the call's deadline: 2 x timeout_s from its start, the plugin's bound, after which
the last error is raised. A refused call is not resent with less than half a timeout left,
so a reply is rarely cut off by the deadline (the call would have run, and its request been
refused by on_redis_error yet charged).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias

from redis import exceptions as errors
from redis.crc import key_slot

from .redis_lane import (
    Arg,
    LaneCounts,
    NoReplicasError,
    RedisLane,
    Reply,
    _encode,
    _Lua,
    command,
    wait_command,
)
from .redis_url import RedisLocation, parse_redis_url

__all__ = ["ClusterLane", "Lane", "SentinelLane", "lane_from_url", "slot_of"]

Address: TypeAlias = tuple[str, int]
SLOTS = 16384
_PAUSE_S = (0.005, 0.1)  # after TRYAGAIN, CLUSTERDOWN or READONLY: first pause, longest
_LOST = (errors.ConnectionError, errors.TimeoutError)  # the command may have run
_Send: TypeAlias = Callable[[RedisLane, bool], Awaitable[Any]]
"""How a call goes to the node routing chose (with ASKING first when True): its EVALSHA
alone (`evalsha`) or followed by a WAIT (`evalsha_then_wait`); the routing is the same."""


class Lane(Protocol):
    """What the plugin needs of a Redis client: scripts, and closing."""

    async def evalsha(self, script: _Lua, keys: Sequence[Arg] = (),
                      args: Sequence[Arg] = ()) -> Reply: ...

    async def close(self) -> None: ...


def lane_from_url(url: str, **options: Any) -> Lane:
    """The lane for any Redis URL. `options` are RedisLane's (timeout_s, connect_timeout_s,
    reconnect_backoff_s, connections), applied to every node. InvalidInput, with the password
    masked, for a malformed URL; nothing connects yet."""
    at = parse_redis_url(url)
    if at.kind == "cluster":
        return ClusterLane.from_location(at, **options)
    if at.kind == "sentinel":
        return SentinelLane.from_location(at, **options)
    return RedisLane.from_location(at, **options)


def slot_of(key: Arg) -> int:
    """The cluster slot of a key: CRC16 of its hash tag (`{s7}`), or of the whole key."""
    return key_slot(key.encode() if isinstance(key, str) else
                    key if isinstance(key, bytes) else b"%d" % key)


_cached_slot_of = functools.lru_cache(maxsize=65_536)(slot_of)
"""slot_of for the hot path: a call's first key is its wallet's state key, and hot wallets
repeat (~0.1 µs instead of ~0.5)."""


class _Routed:
    """What cluster and sentinel lanes share: node options, the call's deadline, and a
    refresh of where Redis is that runs once at a time and at most once per
    `refresh_interval_s` (while a node is down every call fails, and must not each ask)."""

    _refresh_kind = "where"  # its name in LaneCounts.refreshes

    def __init__(self, *, timeout_s: float, refresh_interval_s: float,
                 counts: LaneCounts | None = None, **node_options: Any) -> None:
        self.counts = counts or LaneCounts()
        """Shared with every node's RedisLane: reconnects, redirections, refreshes."""
        self._node_options: dict[str, Any] = {"timeout_s": timeout_s, "counts": self.counts,
                                              **node_options}
        self._budget_s = 2 * timeout_s
        self._reply_s = timeout_s / 2  # left for the reply of a call resent
        self._refresh_interval_s = refresh_interval_s
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = -math.inf
        self._last_error = "not asked yet"
        self._closed = False
        self.refreshes = 0
        """Refreshes of where Redis is (slot maps or sentinel answers) done so far."""

    def _node(self, address: Address, **options: Any) -> RedisLane:
        host, port = address
        return RedisLane(host=host, port=port, **{**self._node_options, **options})

    async def _load(self) -> None:
        raise NotImplementedError

    def _refresh_soon(self) -> asyncio.Task[None] | None:
        """Start a refresh unless one runs or one ended less than refresh_interval_s ago."""
        if self._refreshing is None and not self._closed and (
                time.monotonic() >= self._refreshed_at + self._refresh_interval_s):
            self._refreshing = asyncio.get_running_loop().create_task(self._run_load())
        return self._refreshing

    async def _refresh(self) -> None:
        """Wait for the refresh `_refresh_soon` started, if any. A caller whose deadline
        passes stops waiting; the refresh goes on for the others."""
        task = self._refresh_soon()
        if task is not None:
            await asyncio.shield(task)

    async def _run_load(self) -> None:
        try:
            await self._load()
        except errors.RedisError as exc:
            self._last_error = str(exc)
        finally:
            self.refreshes += 1
            refreshes = self.counts.refreshes
            refreshes[self._refresh_kind] = refreshes.get(self._refresh_kind, 0) + 1
            self._refreshed_at = time.monotonic()
            self._refreshing = None

    async def _pause(self, pause: float, deadline: float, error: errors.RedisError) -> float:
        """Wait before resending a call that Redis refused without running it; the next pause.

        Raise `error` instead when less than half a timeout would be left for the reply: a
        call resent just before its deadline could run with its reply cut off, and then a
        request on_redis_error answered would have been charged."""
        if deadline - time.monotonic() - pause < self._reply_s:
            raise error
        await asyncio.sleep(pause)
        return min(2 * pause, _PAUSE_S[1])

    async def _within(self, deadline: float, follow: Callable[[], Awaitable[Any]]) -> Any:
        """`follow()` cut at the deadline: a TimeoutError saying what went wrong last."""
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                return await follow()
        except TimeoutError:  # the builtin one, raised by asyncio.timeout
            raise errors.TimeoutError(
                f"Redis did not answer within {self._budget_s} s: {self._last_error}") from None

    async def _close_all(self, lanes: Sequence[RedisLane]) -> None:
        self._closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
        await asyncio.gather(*(lane.close() for lane in lanes))


class ClusterLane(_Routed):
    """Redis Cluster: a RedisLane per master, each call to its slot's master.

    The slot map comes from CLUSTER SLOTS; a call's slot from its first key, whose hash tag
    every key of a kong-credits script shares (keys.py). What the cluster answers otherwise:

        MOVED       the slot has a new owner: take it from the reply, resend there, refresh
                    the map in the background (a failover or a reshard moves many slots)
        ASK         the slot is migrating and the keys are not here: ASKING then the call on
                    the node named, on one connection; the map stays as it is
        TRYAGAIN    the call's keys are split mid-migration; CLUSTERDOWN: a master failed and
                    no replica took over yet: resent after a pause (5 ms, doubling to 100)
                    while half a timeout is left before the deadline
        NOSCRIPT    a node that never ran the script (promoted, restarted): SCRIPT LOAD there,
                    then resend
        connection lost, refused or late: the map is refreshed from the first node that
                    answers (masters, then the other known nodes, then the seeds) and the
                    error raised; masters no longer in the map are dropped

    `redirections` and `refreshes` count MOVED/ASK answers and slot-map refreshes (and
    `counts`, for metrics, with the reconnects of every node).
    """

    _refresh_kind = "slot_map"

    def __init__(self, seeds: Sequence[Address], *, timeout_s: float = 0.25,
                 refresh_interval_s: float = 0.1, **node_options: Any) -> None:
        if not seeds:
            raise ValueError("a cluster lane needs at least one seed node")
        super().__init__(timeout_s=timeout_s, refresh_interval_s=refresh_interval_s,
                         **node_options)
        self._seeds = list(dict.fromkeys(seeds))
        self._owners: list[RedisLane | None] = [None] * SLOTS
        self._masters: dict[Address, RedisLane] = {}
        self._known: list[Address] = []  # every node of the last map
        self.redirections = 0

    @classmethod
    def from_location(cls, at: RedisLocation, **options: Any) -> ClusterLane:
        return cls(at.nodes, username=at.username, password=at.password,
                   ssl_context=at.tls.context() if at.tls else None, **options)

    async def evalsha(self, script: _Lua, keys: Sequence[Arg] = (),
                      args: Sequence[Arg] = ()) -> Reply:
        """EVALSHA on the master of the first key's slot (keyless: slot 0's).

        The steady state (the slot's master known, the call answered) is this coroutine
        alone, as RedisLane.evalsha: `_route`'s fast path, inlined."""
        payload = _encode(("EVALSHA", script.sha, len(keys), *keys, *args))
        slot = _cached_slot_of(keys[0]) if keys else 0
        node = self._owners[slot]
        if node is not None:
            started = time.monotonic()
            try:
                return await node.send(payload)
            except (errors.ResponseError, *_LOST) as exc:
                error: errors.RedisError | None = exc
        else:
            started, error = time.monotonic(), None
        return await self._within(started + self._budget_s, lambda: self._follow(
            script, self._send_packed(payload), slot, node, error, started + self._budget_s))

    @staticmethod
    def _send_packed(payload: bytes) -> _Send:
        return lambda node, asking: (
            node.send_asking(payload) if asking else node.send(payload))

    async def evalsha_then_wait(self, script: _Lua, keys: Sequence[Arg] = (),
                                args: Sequence[Arg] = (), *, replicas: int,
                                timeout_ms: int) -> tuple[Reply, int]:
        """`evalsha`, routed the same way, with `WAIT replicas timeout_ms` behind the EVALSHA
        on the same connection of the slot's master (RedisLane.evalsha_then_wait): the reply,
        and how many of that master's replicas acknowledged the script's writes."""
        payload = _encode(("EVALSHA", script.sha, len(keys), *keys, *args))
        wait = wait_command(replicas, timeout_ms)
        return await self._route(script, keys, lambda node, asking: (
            node.send_then_wait(payload, wait, asking=asking)))

    async def _route(self, script: _Lua, keys: Sequence[Arg], send: _Send) -> Any:
        slot = _cached_slot_of(keys[0]) if keys else 0
        started = time.monotonic()
        node = self._owners[slot]
        error: errors.RedisError | None = None
        if node is not None:
            try:
                return await send(node, False)
            except (errors.ResponseError, *_LOST) as exc:
                error = exc
        deadline = started + self._budget_s
        return await self._within(
            deadline, lambda: self._follow(script, send, slot, node, error, deadline))

    async def _follow(self, script: _Lua, send: _Send, slot: int, node: RedisLane | None,
                      error: errors.RedisError | None, deadline: float) -> Any:
        asking: RedisLane | None = None
        pause = _PAUSE_S[0]
        while True:
            if error is None:
                node = asking or self._owners[slot] or await self._owner(slot)
                try:
                    return await send(node, asking is not None)
                except (errors.ResponseError, *_LOST) as exc:
                    error = exc
            assert node is not None  # the node a failed send went to
            if isinstance(error, errors.AskError):  # MOVED is an AskError too
                self.redirections += 1
                host, port = error.node_addr
                target = self._master((host or node.address[0], port))
                if isinstance(error, errors.MovedError):
                    self.counts.moved += 1
                    self._owners[slot], asking = target, None
                    self._refresh_soon()
                else:
                    self.counts.asked += 1
                    asking = target
            elif isinstance(error, errors.TryAgainError | errors.ClusterDownError):
                self._last_error = str(error)
                if isinstance(error, errors.ClusterDownError):
                    self._refresh_soon()
                asking = None
                pause = await self._pause(pause, deadline, error)
            elif isinstance(error, errors.NoScriptError):
                await node.send(command("SCRIPT", "LOAD", script.source))
            elif isinstance(error, _LOST):
                self._last_error = f"{node.address[0]}:{node.address[1]}: {error}"
                await self._refresh()
                raise error
            else:
                raise error
            error = None

    async def _owner(self, slot: int) -> RedisLane:
        """The slot's master, after a refresh: no map yet, or the slot had no master."""
        await self._refresh()
        owner = self._owners[slot]
        if owner is not None:
            return owner
        if not self._known:
            raise errors.ConnectionError(
                f"no node of the Redis Cluster answered: {self._last_error}")
        raise errors.ClusterDownError(f"no master serves slot {slot}")

    def _master(self, address: Address) -> RedisLane:
        lane = self._masters.get(address)
        if lane is None:
            lane = self._masters[address] = self._node(address)
        return lane

    async def _load(self) -> None:
        """CLUSTER SLOTS from the first node that answers: masters with an open connection,
        the other masters, the other known nodes, the seeds."""
        masters = sorted(self._masters.values(), key=lambda lane: not lane.connected)
        others = [a for a in dict.fromkeys([*self._known, *self._seeds])
                  if a not in self._masters]
        for source in [*(lane.address for lane in masters), *others]:
            lane = self._masters.get(source)
            asked = lane or self._node(source, reconnect_backoff_s=0)
            try:
                reply = await asked.execute("CLUSTER", "SLOTS")
            except errors.RedisError as exc:
                self._last_error = f"{source[0]}:{source[1]}: {exc}"
                continue
            finally:
                if lane is None:
                    await asked.close()
            await self._install(reply, source)
            return

    async def _install(self, reply: list[Any], source: Address) -> None:
        owners: list[RedisLane | None] = [None] * SLOTS
        known: list[Address] = []
        served: set[Address] = set()
        for start, end, *nodes in reply:
            addresses = [self._address(node, source) for node in nodes]
            master = self._master(addresses[0])
            served.add(addresses[0])
            owners[start:end + 1] = [master] * (end + 1 - start)
            known += addresses
        self._owners, self._known = owners, list(dict.fromkeys(known))
        gone = [self._masters.pop(a) for a in list(self._masters) if a not in served]
        await asyncio.gather(*(lane.close() for lane in gone))  # dead or demoted: dropped

    @staticmethod
    def _address(node: list[Any], source: Address) -> Address:
        """A node of CLUSTER SLOTS; an unknown endpoint ('' or '?') is the node asked."""
        host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
        return (source[0] if host in ("", "?") else host), int(node[1])

    async def close(self) -> None:
        """Fail calls in flight, drop every connection; later calls fail."""
        await self._close_all(list(self._masters.values()))


_NOT_RUN_ON_MASTER = (errors.ReadOnlyError, NoReplicasError)  # a master being failed over


class SentinelLane(_Routed):
    """The master that Sentinel names, followed across failovers.

    The sentinels are asked (SENTINEL GET-MASTER-ADDR-BY-NAME, first answer wins, that
    sentinel is asked first next time) on the first call, every `check_interval_s` after
    that, and at once whenever the master's connection is lost or late or it answers
    READONLY (demoted) or NOREPLICAS (its replica was promoted, with min-replicas-to-write
    set): on a new address the lane to the old one is closed. The periodic check bounds how
    long calls go to a master that a `SENTINEL FAILOVER` left running and accepting writes
    (Sentinel demotes it only seconds later), writes the promoted replica never sees.
    READONLY, NOREPLICAS and NOSCRIPT are resent until the deadline (the call did not run);
    a lost or late call is raised once Sentinel was asked.
    """

    _refresh_kind = "sentinel"

    def __init__(self, sentinels: Sequence[Address], master: str, *,
                 sentinel_password: str | None = None, timeout_s: float = 0.25,
                 refresh_interval_s: float = 0.1, check_interval_s: float = 1.0,
                 **node_options: Any) -> None:
        if not sentinels:
            raise ValueError("a sentinel lane needs at least one sentinel")
        super().__init__(timeout_s=timeout_s, refresh_interval_s=refresh_interval_s,
                         **node_options)
        self._name = master
        sentinel_options = {"username": None, "password": sentinel_password, "db": 0}
        self._sentinels = [self._node(a, **sentinel_options) for a in dict.fromkeys(sentinels)]
        self._master: RedisLane | None = None
        self._check_interval_s = check_interval_s
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def from_location(cls, at: RedisLocation, **options: Any) -> SentinelLane:
        assert at.master is not None  # parse_redis_url requires it
        return cls(at.nodes, at.master, sentinel_password=at.sentinel_password,
                   username=at.username, password=at.password, db=at.db,
                   ssl_context=at.tls.context() if at.tls else None, **options)

    @property
    def master(self) -> Address | None:
        """Where calls go now: the master the sentinels last named (None before a call)."""
        return self._master.address if self._master is not None else None

    async def evalsha(self, script: _Lua, keys: Sequence[Arg] = (),
                      args: Sequence[Arg] = ()) -> Reply:
        """EVALSHA on the master."""
        payload = _encode(("EVALSHA", script.sha, len(keys), *keys, *args))
        return await self._route(script, lambda master, _: master.send(payload))

    async def evalsha_then_wait(self, script: _Lua, keys: Sequence[Arg] = (),
                                args: Sequence[Arg] = (), *, replicas: int,
                                timeout_ms: int) -> tuple[Reply, int]:
        """`evalsha`, routed the same way, with `WAIT replicas timeout_ms` behind the EVALSHA
        on the same connection of the master (RedisLane.evalsha_then_wait): the reply, and
        how many replicas acknowledged the script's writes."""
        payload = _encode(("EVALSHA", script.sha, len(keys), *keys, *args))
        wait = wait_command(replicas, timeout_ms)
        return await self._route(
            script, lambda master, _: master.send_then_wait(payload, wait))

    async def _route(self, script: _Lua, send: _Send) -> Any:
        started = time.monotonic()
        master = self._master
        error: errors.RedisError | None = None
        if master is not None:
            try:
                return await send(master, False)
            except (errors.NoScriptError, *_NOT_RUN_ON_MASTER, *_LOST) as exc:
                error = exc
        deadline = started + self._budget_s
        return await self._within(
            deadline, lambda: self._follow(script, send, master, error, deadline))

    async def _follow(self, script: _Lua, send: _Send, master: RedisLane | None,
                      error: errors.RedisError | None, deadline: float) -> Any:
        pause = _PAUSE_S[0]
        while True:
            if error is None:
                master = self._master or await self._located()
                try:
                    return await send(master, False)
                except (errors.NoScriptError, *_NOT_RUN_ON_MASTER, *_LOST) as exc:
                    error = exc
            assert master is not None  # the node a failed send went to
            if isinstance(error, errors.NoScriptError):
                await master.send(command("SCRIPT", "LOAD", script.source))
            elif isinstance(error, _NOT_RUN_ON_MASTER):
                self._last_error = f"{self._name} at {master.address}: {error}"
                self._refresh_soon()
                pause = await self._pause(pause, deadline, error)
            else:
                self._last_error = f"{self._name} at {master.address}: {error}"
                await self._refresh()
                raise error
            error = None

    async def _located(self) -> RedisLane:
        await self._refresh()
        if self._master is None:
            raise errors.ConnectionError(
                f"no sentinel named the master {self._name!r}: {self._last_error}")
        return self._master

    async def _watching(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            self._refresh_soon()

    async def _load(self) -> None:
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watching())
        for sentinel in list(self._sentinels):
            where = f"sentinel {sentinel.address[0]}:{sentinel.address[1]}"
            try:
                reply = await sentinel.execute(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self._name)
            except errors.RedisError as exc:
                self._last_error = f"{where}: {exc}"
                continue
            if not reply:
                self._last_error = f"{where} knows no master named {self._name!r}"
                continue
            self._sentinels.remove(sentinel)
            self._sentinels.insert(0, sentinel)
            address = (reply[0].decode(), int(reply[1]))
            old = self._master
            if old is None or old.address != address:
                self._master = self._node(address)
                if old is not None:
                    await old.close()
            return

    async def close(self) -> None:
        """Fail calls in flight, drop every connection; later calls fail."""
        if self._watch is not None:
            self._watch.cancel()
        await self._close_all([*self._sentinels, *([self._master] if self._master else [])])
