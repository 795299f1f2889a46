"""The spools of this plugin-server process: one per Redis, appended to by the plugins.

Fsync policy (`spool_fsync`): every line is written whole with one write(2) before the
request passes, so a crash or SIGKILL of the plugin server loses nothing. What an OS crash or
power loss may lose depends on the policy: `always` syncs each line before the request
passes (nothing lost, one fsync per spooled request), `interval` (the default) syncs once a
second (up to a second of spooled requests lost), `never` leaves it to the kernel (up to its
writeback delay, ~30 s on Linux). Syncs run in a thread: the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from ..redact import mask_url
from .metrics import SPOOL_METRICS
from .records import Record, SettledPrice, encode_line
from .segments import SegmentWriter, directory_bytes, prepare_directory, spool_directory

__all__ = ["DEFAULT_PREFIX", "SPOOLS", "FsyncPolicy", "Spool", "SpoolRegistry"]

DEFAULT_PREFIX = "/usr/local/kong"
"""Kong's default prefix: the spool's home when the server was not told one (`-p`)."""

logger = logging.getLogger("kong_credits.spool")


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"
    INTERVAL = "interval"
    NEVER = "never"


class Spool:
    """One Redis's spool in this process: appends lines to this process's segment.

    The size bound counts every segment of the directory (all processes), measured once a
    second by the replayer, plus what this process appended since: processes sharing it may
    together pass the bound by what they append within that second.
    """

    def __init__(self, directory: Path, redis_url: str,
                 wake_replay: Callable[[], None] = lambda: None) -> None:
        self.directory = directory
        self.redis_url = redis_url
        self.where = mask_url(redis_url)
        self._writer = SegmentWriter(directory)
        self._prepared = False
        self._measured = 0
        self._appended = 0
        self._unsynced = False
        self.spooling = False
        """Whether this process spooled since the spool was last seen empty (for the logs)."""
        self.replayed = 0
        """Requests this process charged from the spool since it was last empty."""
        self.pinned: set[str] = set()
        """Spooled requests whose stored answers this process kept (replay.py `_pin`)."""
        self.answered = 0
        """Live calls to this Redis answered (`note_answered`): the replay yields to their
        rate (replay.Pace)."""
        self._wake_replay = wake_replay
        self._wake_on_answer = False
        SPOOL_METRICS.watch(self)

    def note_answered(self) -> None:
        """A live call to this Redis was answered. The first after this process spooled
        wakes the replay at once: its pins (replay.py `_pin`) read the wallets' ledgers,
        which the wallets' live traffic, back too, starts pushing old entries out of."""
        self.answered += 1
        if self._wake_on_answer:
            self._wake_on_answer = False
            self._wake_replay()

    @property
    def size_bytes(self) -> int:
        return self._measured + self._appended

    async def append_durably(self, record: Record, *, max_bytes: int,
                             fsync: FsyncPolicy) -> bool:
        """`append`, then with fsync `always` wait for the disk (off the event loop)."""
        if not self.append(record, max_bytes=max_bytes, fsync=fsync):
            return False
        if fsync is FsyncPolicy.ALWAYS:
            try:
                await self._writer.sync_off_loop()
            except OSError as exc:
                logger.error("credits: cannot sync the spool %s: %s", self.directory, exc)
        return True

    def append(self, record: Record, *, max_bytes: int, fsync: FsyncPolicy) -> bool:
        """Write one record; False when the spool is full or cannot be written (the caller
        falls back to on_redis_error=allow), counted as dropped. Syncs per `fsync` but for
        `always`, which `append_durably` does off the event loop (tools call `sync`).

        A settled price is written even past the bound: its request is spooled already,
        and without it the request would be charged its estimate.
        """
        line = encode_line(record)
        if not isinstance(record, SettledPrice) and self.size_bytes + len(line) > max_bytes:
            SPOOL_METRICS.dropped += 1
            return False
        try:
            if not self._prepared:
                prepare_directory(self.directory, self.redis_url)
                self._prepared = True
            self._writer.append(line)
            if fsync is not FsyncPolicy.NEVER:
                self._unsynced = True  # `always`: append_durably syncs; this is the backstop
        except OSError as exc:
            SPOOL_METRICS.dropped += 1
            logger.error("credits: cannot write the spool %s: %s", self.directory, exc)
            return False
        self._appended += len(line)
        self._wake_on_answer = True
        SPOOL_METRICS.spooled += not isinstance(record, SettledPrice)
        if not self.spooling:
            self.spooling = True
            logger.warning("credits: Redis %s unavailable: spooling requests to %s "
                           "(on_redis_error=spool)", self.where, self.directory)
        return True

    async def sync_if_due(self) -> None:
        """The `interval` policy's sync, called once a second, off the event loop."""
        if self._unsynced:
            self._unsynced = False
            try:
                await self._writer.sync_off_loop()
            except OSError as exc:
                logger.error("credits: cannot sync the spool %s: %s", self.directory, exc)

    def measure(self) -> int:
        self._measured, self._appended = directory_bytes(self.directory), 0
        return self._measured

    @property
    def writing(self) -> bool:
        return self._writer.is_open

    def seal(self) -> None:
        """Close this process's segment so that it can be replayed; later appends start a
        new one (tools and tests; the server uses `seal_off_loop`)."""
        self._unsynced = False
        self._writer.seal()

    async def seal_off_loop(self) -> None:
        self._unsynced = False
        await self._writer.seal_off_loop()


ReplayLoop = Callable[["SpoolRegistry"], Awaitable[None]]


class SpoolRegistry:
    """The process's spools by Redis URL, under one Kong prefix, and their replay task.

    The plugin server sets the prefix from its `-p` before serving (`configure`); the
    replay task starts with the first spool-mode plugin instance, on the server's loop, so
    a restarted server replays what the previous one left even if nothing new is spooled.
    """

    def __init__(self) -> None:
        self.prefix = DEFAULT_PREFIX
        self._spools: dict[str, Spool] = {}
        self._engines: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        """Set to start the replay's next round now; made with the task, on its loop."""

    def configure(self, prefix: str | os.PathLike[str]) -> None:
        self.prefix = os.fspath(prefix)

    def get(self, redis_url: str, engine: Any) -> Spool:
        """The spool of `redis_url`, replayed through `engine` (an AsyncEngine)."""
        spool = self._spools.get(redis_url)
        if spool is None:
            spool = self._spools[redis_url] = Spool(
                spool_directory(self.prefix, redis_url), redis_url, self._wake_replay)
            self._engines[redis_url] = engine
        self._start_replay()
        return spool

    def _wake_replay(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def next_round(self, interval_s: float) -> None:
        """Wait `interval_s`, or less if a spool woke the replay (`Spool.note_answered`)."""
        wake = self._wake
        assert wake is not None, "next_round is the replay task's"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await wake.wait()
        wake.clear()

    def __iter__(self) -> Iterator[tuple[Spool, Any]]:
        for url, spool in list(self._spools.items()):
            yield spool, self._engines[url]

    def _start_replay(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a tool, a unit test): nothing replays in the background
        from .replay import replay_forever

        self._wake = asyncio.Event()
        self._task = loop.create_task(replay_forever(self), name="credits-spool-replay")


SPOOLS = SpoolRegistry()
"""The process-wide registry the plugin instances draw their spools from."""
