"""One consumer of a Redis consumer group over the event streams: read, reclaim, ack.

An entry stays in the group's pending list (PEL) from XREADGROUP until XACK, so a consumer
that dies mid-batch loses nothing: XAUTOCLAIM hands its entries, once idle long enough, to
another consumer. A consumer named hostname-pid (the default, `consumer_name()`) whose
process is gone from this host has nothing in flight, so its entries are taken over at once
(`process_gone`, `take_over`). Every call names one stream or pipelines one command per
stream, except `read_new` on a single Redis, which names all streams in one XREADGROUP; with
`per_shard` it reads stream by stream, which is what Redis Cluster needs (each stream in its
own slot). Needs a client with decode_responses=True and Redis 7.0 or newer.
"""

from __future__ import annotations

import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..keys import dead_letter_stream, event_streams, shard_of_stream
from ..shards import check_shards
from .dlq import dead_letter_fields

__all__ = ["Backlog", "ConsumerGroup", "StreamEntry", "consumer_name", "process_gone"]

_FORGET_IF_IDLE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
"""Delete consumer ARGV[2] of group ARGV[1] on stream KEYS[1] unless it holds entries; in one
script, so entries read under that name meanwhile are never dropped with it."""


def consumer_name() -> str:
    """A process's default consumer name, hostname-pid: unique while the process lives, and
    a restart comes back under a new one (whose pid tells whether the old one is gone)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def process_gone(consumer: str) -> bool:
    """True when `consumer` is named hostname-pid for this host and no process has that pid:
    it died, so nothing is in flight under its name. A pid that exists is not provably dead
    (a live forwarder, or the pid reused by anything): False, and the idle rule applies. So
    does any other name: another host's consumer, or one named with --consumer. Assumes
    hostname-pid names one process (a host, or a container with its own hostname)."""
    host, _, pid = consumer.rpartition("-")
    if (os.name != "posix" or host != socket.gethostname()
            or not (pid.isascii() and pid.isdigit()) or int(pid) <= 0):
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # exists but is not ours to signal; or no valid pid
        return False
    return False


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry as read: where it lives and its string fields."""

    stream: str
    entry_id: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class Backlog:
    """Events the group has not finished: `lag` never read (None: Redis cannot tell),
    `pending` read but not acknowledged."""

    lag: int | None
    pending: int


def _by_stream(entries: Iterable[StreamEntry]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        ids[entry.stream].append(entry.entry_id)
    return ids


def _stream_id(text: str) -> tuple[int, int]:
    """"1700000000000-3" -> (1700000000000, 3): stream ids compare as number pairs."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _entries(reply: Any) -> list[StreamEntry]:
    """Decode XREADGROUP: RESP2 [[stream, entries], ...], RESP3 {stream: [entries]}."""
    if not reply:
        return []
    if isinstance(reply, dict):
        pairs = [(stream, value[0] if value else []) for stream, value in reply.items()]
    else:
        pairs = reply
    return [StreamEntry(stream, entry_id, fields or {})
            for stream, items in pairs for entry_id, fields in items]


class ConsumerGroup:
    """`consumer` in `group` on `streams` (all shards' event streams by default)."""

    def __init__(self, client: redis.Redis, group: str, consumer: str,
                 streams: Sequence[str] | None = None, *, per_shard: bool = False) -> None:
        self.client = client
        self.group = group
        self.consumer = consumer
        self.streams = list(streams if streams is not None else event_streams())
        self.per_shard = per_shard
        self._cursors = dict.fromkeys(self.streams, "0-0")
        self._next_shard = 0
        self._forget_if_idle = client.register_script(_FORGET_IF_IDLE)

    def ensure(self) -> None:
        """Create the group on every stream that lacks it (from the first entry: nothing is
        skipped). Only reads when every stream has it, so it passes on a Redis that refuses
        writes it does not need (OOM), and it is cheap to call again after any Redis error
        (a Redis restarted without persistence has lost the group: NOGROUP). First checks the
        deployment's shard count (shards.py): ShardsMismatch, not a Redis error, when Redis
        records another, since this process would read streams the plugin does not write."""
        check_shards(self.client)
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
        for stream, groups in zip(self.streams, pipe.execute(raise_on_error=False), strict=True):
            if not isinstance(groups, Exception) and any(
                    g["name"] == self.group for g in groups):
                continue
            try:
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_own_pending(self, count: int) -> list[StreamEntry]:
        """Entries this consumer name read earlier and never acknowledged (a restart)."""
        out: list[StreamEntry] = []
        for stream in self.streams:
            after = "0"
            while True:
                got = _entries(self.client.xreadgroup(
                    self.group, self.consumer, {stream: after}, count=count))
                if not got:
                    break
                out.extend(e for e in got if e.fields)  # no fields: deleted, see reclaim()
                after = got[-1].entry_id
        return out

    def read_new(self, count: int, block_ms: int | None) -> list[StreamEntry]:
        """New entries for this consumer. One XREADGROUP over all streams (up to `count`
        per stream, blocking up to `block_ms`), or with `per_shard` one non-blocking call per
        stream, rotating the first, until `count` entries are in hand."""
        if not self.per_shard:
            return _entries(self.client.xreadgroup(
                self.group, self.consumer, dict.fromkeys(self.streams, ">"),
                count=count, block=block_ms))
        out: list[StreamEntry] = []
        start = self._next_shard
        self._next_shard = (start + 1) % len(self.streams)
        for i in range(len(self.streams)):
            stream = self.streams[(start + i) % len(self.streams)]
            out.extend(_entries(self.client.xreadgroup(
                self.group, self.consumer, {stream: ">"}, count=count - len(out))))
            if len(out) >= count:
                break
        return out

    def reclaim(self, min_idle_ms: int, count: int) -> tuple[list[StreamEntry], int]:
        """XAUTOCLAIM entries idle at least `min_idle_ms` (a dead or stuck consumer's), one
        step per stream from where the last call stopped. Returns them and the number of
        pending entries whose data was deleted from the stream (Redis drops those from the
        PEL: they can no longer be delivered)."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xautoclaim(stream, self.group, self.consumer, min_idle_ms,
                            start_id=self._cursors[stream], count=count)
        out: list[StreamEntry] = []
        deleted = 0
        for stream, reply in zip(self.streams, pipe.execute(), strict=True):
            self._cursors[stream] = reply[0]
            out.extend(StreamEntry(stream, entry_id, fields) for entry_id, fields in reply[1]
                       if entry_id is not None and fields is not None)
            deleted += len(reply[2]) if len(reply) > 2 else 0
        return out, deleted

    def touch(self, entries: Sequence[StreamEntry]) -> list[StreamEntry]:
        """Reset the idle time of entries this consumer is still working on, so nobody
        reclaims them; returns those still pending (another consumer may have acked some)."""
        ids = _by_stream(entries)
        pipe = self.client.pipeline(transaction=False)
        for stream, entry_ids in ids.items():
            pipe.xclaim(stream, self.group, self.consumer, 0, entry_ids, justid=True)
        still = {(stream, entry_id) for stream, claimed in zip(ids, pipe.execute(), strict=True)
                 for entry_id in claimed}
        return [e for e in entries if (e.stream, e.entry_id) in still]

    def ack(self, entries: Sequence[StreamEntry]) -> None:
        """XACK delivered entries: they leave the pending list for good."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for stream, entry_ids in _by_stream(entries).items():
            pipe.xack(stream, self.group, *entry_ids)
        pipe.execute()

    def dead_letter(self, rejected: Sequence[tuple[StreamEntry, str]], sink: str) -> None:
        """Copy each entry with its reason to its shard's dead-letter stream and ack it, in
        one MULTI per shard: the entry is in exactly one of the two lists at any time."""
        by_stream: dict[str, list[tuple[StreamEntry, str]]] = defaultdict(list)
        for entry, reason in rejected:
            by_stream[entry.stream].append((entry, reason))
        now_ms = int(time.time() * 1000)
        for stream, items in by_stream.items():
            pipe = self.client.pipeline(transaction=True)
            for entry, reason in items:
                pipe.xadd(dead_letter_stream(shard_of_stream(stream)), dead_letter_fields(
                    entry.fields, reason=reason, sink=sink, group=self.group,
                    source=stream, source_id=entry.entry_id, at_ms=now_ms))
            pipe.xack(stream, self.group, *(entry.entry_id for entry, _ in items))
            pipe.execute()

    def pending(self) -> int:
        """Entries read by any consumer of the group and not acknowledged yet."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xpending(stream, self.group)
        return sum(int(reply["pending"]) for reply in pipe.execute())

    def trim_delivered(self, retain_ms: int, *, now_ms: int | None = None) -> int:
        """Drop entries every consumer group of a stream is done with, once older than
        `retain_ms`; returns how many went. Done means acknowledged (or dead-lettered): an
        entry stays while any group has not read it or holds it pending, so this never
        loses an event some group still has to deliver. A stream without groups is kept
        whole. Groups only move forward, so a group that advances meanwhile is no risk; a
        group created later starts from the oldest entry still kept."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = (max(now_ms - retain_ms, 0), 0)
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
        groups_of = dict(zip(self.streams, pipe.execute(raise_on_error=False), strict=True))
        for stream, groups in groups_of.items():
            if isinstance(groups, Exception):  # no such stream yet
                groups_of[stream] = []
        pipe = self.client.pipeline(transaction=False)
        holders = [(stream, g["name"]) for stream, groups in groups_of.items()
                   for g in groups if int(g.get("pending") or 0) > 0]
        for stream, name in holders:
            pipe.xpending(stream, name)
        oldest_pending: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for (stream, _), summary in zip(holders, pipe.execute() if holders else [], strict=True):
            if summary.get("min"):
                oldest_pending[stream].append(_stream_id(summary["min"]))
        pipe = self.client.pipeline(transaction=False)
        trimmed = []
        for stream, groups in groups_of.items():
            if not groups:
                continue
            # Entries before a group's first pending one, and up to its last delivered one,
            # are done for that group: keep from the first entry some group still needs.
            needed = [*oldest_pending[stream]]
            for g in groups:
                ms, seq = _stream_id(str(g["last-delivered-id"]))
                needed.append((ms, seq + 1))
            keep_from = min(*needed, cutoff)
            if keep_from > (0, 1):
                pipe.xtrim(stream, minid=f"{keep_from[0]}-{keep_from[1]}", approximate=False)
                trimmed.append(stream)
        return sum(pipe.execute()) if trimmed else 0

    def holders(self) -> dict[str, int]:
        """Every consumer of the group (any stream) and how many entries it holds."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_consumers(stream, self.group)
        held: dict[str, int] = defaultdict(int)
        for consumers in pipe.execute(raise_on_error=False):
            for c in [] if isinstance(consumers, Exception) else consumers:
                held[c["name"]] += int(c["pending"])
        return dict(held)

    def take_over(self, consumer: str, count: int) -> list[StreamEntry]:
        """Claim up to `count` entries per stream that `consumer` (known dead) holds, however
        briefly idle. Each XCLAIM asks for the idle time XPENDING just reported, so of two
        forwarders taking over at once one gets each entry: the other finds it just claimed.
        An entry deleted from the stream meanwhile leaves the pending list unreturned."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xpending_range(stream, self.group, "-", "+", count, consumername=consumer)
        held = [(stream, pending)
                for stream, pending in zip(self.streams, pipe.execute(), strict=True) if pending]
        if not held:
            return []
        pipe = self.client.pipeline(transaction=False)
        for stream, pending in held:
            pipe.xclaim(stream, self.group, self.consumer,
                        min(int(p["time_since_delivered"]) for p in pending),
                        [p["message_id"] for p in pending])
        return [StreamEntry(stream, entry_id, fields)
                for (stream, _), claimed in zip(held, pipe.execute(), strict=True)
                for entry_id, fields in claimed if fields is not None]

    def forget(self, consumer: str) -> bool:
        """Delete `consumer` from the group on every stream where it holds nothing; True when
        it is gone from all of them."""
        return all([self._forget_if_idle(keys=[stream], args=[self.group, consumer])
                    for stream in self.streams])

    def forget_idle_consumers(self, idle_ms: int) -> int:
        """Remove the group's consumers that hold nothing and were idle longer than
        `idle_ms` (forwarders restarted under new names); returns how many. One holding
        entries stays, so XAUTOCLAIM can still hand them on."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_consumers(stream, self.group)
        gone = [(stream, c["name"])
                for stream, consumers in zip(self.streams, pipe.execute(raise_on_error=False),
                                             strict=True)
                if not isinstance(consumers, Exception)
                for c in consumers
                if c["name"] != self.consumer and int(c["pending"]) == 0
                and int(c["idle"]) > idle_ms]
        # Checked again in the deleting script: one may have read entries since XINFO.
        return sum(self._forget_if_idle(keys=[stream], args=[self.group, name])
                   for stream, name in gone)

    def backlog(self) -> Backlog:
        """Lag and pending over all streams, from XINFO GROUPS."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
        lag: int | None = 0
        pending = 0
        for groups in pipe.execute():
            mine = next((g for g in groups if g.get("name") == self.group), None)
            if mine is None:
                continue
            pending += int(mine.get("pending") or 0)
            stream_lag = mine.get("lag")
            lag = None if lag is None or stream_lag is None else lag + int(stream_lag)
        return Backlog(lag=lag, pending=pending)
