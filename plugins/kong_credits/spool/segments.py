"""The spool's files: `<kong prefix>/credits-spool/<redis id>/<time ns>-<pid>.spool`.

Each writing process appends to a segment of its own, which it holds locked (flock) while
it is open; a segment no process holds is sealed (its writer closed it) or orphaned (its
writer died): whoever locks it may replay it. `<segment>.done` holds the byte offset up to
which the segment was replayed, written after each batch; replay is idempotent in Redis, so
it only saves work after a crash. Nothing is ever rewritten in place: a segment is appended
to, then deleted once replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput
from ..redact import mask_url
from .records import Record, decode_line

__all__ = ["SPOOL_DIRNAME", "LockedSegment", "SegmentWriter", "directory_bytes",
           "lock_segments", "locked_segments", "prepare_directory", "read_done",
           "read_lines", "read_records", "segment_paths", "spool_directory"]

SPOOL_DIRNAME = "credits-spool"
SEGMENT_SUFFIX = ".spool"
DONE_SUFFIX = ".done"
REDIS_FILE = "redis"
"""Each spool directory names its Redis, password masked, for `kong-credits spool status`."""


def spool_directory(prefix: str | os.PathLike[str], redis_url: str) -> Path:
    """The directory of one Redis's spool: named by a hash of its URL, so neither the
    password nor a path separator in it reaches the file system."""
    digest = hashlib.sha256(redis_url.encode()).hexdigest()[:16]
    return Path(prefix) / SPOOL_DIRNAME / digest


def prepare_directory(directory: Path, redis_url: str) -> None:
    """Create the directory (mode 0700: the spool names wallets and paths) and its note."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    note = directory / REDIS_FILE
    if not note.exists():
        temporary = directory / f".{REDIS_FILE}.{os.getpid()}"
        temporary.write_text(mask_url(redis_url) + "\n")
        os.replace(temporary, note)


def segment_paths(directory: Path) -> list[Path]:
    """Segments oldest first (names start with their creation time in ns)."""
    with contextlib.suppress(FileNotFoundError):
        return sorted(p for p in directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX))
    return []


def directory_bytes(directory: Path) -> int:
    """Bytes of every segment in the directory (replayed parts included, until deleted)."""
    total = 0
    for path in segment_paths(directory):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


class SegmentWriter:
    """This process's open segment: created at the first append, locked until `seal`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None
        self.path: Path | None = None

    def append(self, line: bytes) -> None:
        """One write(2) of a whole line with O_APPEND: a crash of this process leaves every
        line written whole (the kernel has it); only an OS crash may lose unsynced ones."""
        if self._fd is None:
            self._open()
        assert self._fd is not None
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: the tail is torn, and the reader skips it
            raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")

    def _open(self) -> None:
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        self._fd, self.path = fd, path

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    async def sync_off_loop(self) -> None:
        """fsync in a thread (one can take tens of ms on a busy disk, and the event loop
        serves every request meanwhile), on a duplicate descriptor: a seal meanwhile closes
        nothing the thread uses."""
        if self._fd is None:
            return
        fd = os.dup(self._fd)
        try:
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def seal(self) -> None:
        """Sync and close (releasing the lock): the next append opens a new segment."""
        if self._fd is not None:
            fd, self._fd, self.path = self._fd, None, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    async def seal_off_loop(self) -> None:
        """`seal` with the fsync in a thread; the lock is released when it is done (the
        close), so no replay takes the segment before it is on disk."""
        if self._fd is not None:
            fd, self._fd, self.path = self._fd, None, None
            try:
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)


@dataclass
class LockedSegment:
    """A segment this process holds the lock of, with its lines not yet replayed: (end
    offset, raw line) pairs in file order, decoded as the replay reaches them (a large
    spool is not decoded in one go on the server's event loop)."""

    path: Path
    fd: int
    done_offset: int
    lines: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def done_path(self) -> Path:
        return self.path.with_name(self.path.name + DONE_SUFFIX)

    def mark_done(self, offset: int) -> None:
        """Remember that everything before `offset` is charged (write and rename: a crash
        leaves the old offset or the new one)."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temporary.write_text(str(offset))
        os.replace(temporary, self.done_path)
        self.done_offset = offset

    def remove(self) -> None:
        """Delete the segment (while still locked) and its progress file."""
        for path in (self.path, self.done_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def release(self) -> None:
        os.close(self.fd)


def read_done(path: Path) -> int:
    try:
        return max(0, int(path.read_text().strip() or 0))
    except (FileNotFoundError, ValueError):
        return 0


def read_lines(fd: int, start: int) -> list[tuple[int, bytes]]:
    """The non-blank lines after `start`, each with the offset where it ends."""
    with os.fdopen(os.dup(fd), "rb") as file:
        file.seek(start)
        data = file.read()
    lines: list[tuple[int, bytes]] = []
    offset = start
    for line in data.splitlines(keepends=True):
        offset += len(line)
        if line.strip():
            lines.append((offset, line))
    return lines


def read_records(fd: int, start: int) -> tuple[list[tuple[int, Record]], int]:
    """Records after `start`, and how many lines could not be read (a torn tail, garbage)."""
    records: list[tuple[int, Record]] = []
    unreadable = 0
    for end, line in read_lines(fd, start):
        try:
            records.append((end, decode_line(line)))
        except InvalidInput:
            unreadable += 1
    return records, unreadable


def lock_segments(directory: Path) -> list[LockedSegment]:
    """Every segment no other process holds, locked, oldest first, with its records.

    A segment that another process is writing or replaying is skipped. One deleted between
    the listing and the lock (replayed meanwhile by another process) is skipped too: its
    locked descriptor no longer names the file at its path.
    """
    locked: list[LockedSegment] = []
    for path in segment_paths(directory):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != path.stat().st_ino:
                raise FileNotFoundError(path)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            continue
        segment = LockedSegment(path, fd, read_done(path.with_name(path.name + DONE_SUFFIX)))
        segment.lines = read_lines(fd, segment.done_offset)
        locked.append(segment)
    return locked


@contextlib.contextmanager
def locked_segments(directory: Path) -> Iterator[list[LockedSegment]]:
    """`lock_segments`, released on exit whatever happens."""
    segments = lock_segments(directory)
    try:
        yield segments
    finally:
        for segment in segments:
            segment.release()
