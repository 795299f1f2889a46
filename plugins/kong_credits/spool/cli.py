"""`kong-credits spool status|replay -p PREFIX`: what the plugin servers spooled, and
charging it by hand (the plugin servers do it by themselves once Redis answers)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..engine import AUTHORIZE, Decision, run_script
from ..schema import DEFAULT_REDIS_URL, REDIS_URL_ENV
from .records import SpooledRequest
from .replay import replay_directory
from .segments import (
    REDIS_FILE,
    SPOOL_DIRNAME,
    read_done,
    read_records,
    segment_paths,
    spool_directory,
)
from .store import DEFAULT_PREFIX

__all__ = ["spool_command"]

PREFIX_OPTION = click.option(
    "-p", "--prefix", default=DEFAULT_PREFIX, show_default=True,
    type=click.Path(file_okay=False),
    help="Kong's prefix, as given to the plugin server (-p).")


def _in_use(path: Path) -> bool:
    """Whether a process holds the segment (writing it, or replaying it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _segment_status(path: Path) -> dict[str, Any]:
    done = read_done(path.with_name(path.name + ".done"))
    fd = os.open(path, os.O_RDONLY)
    try:
        records, unreadable = read_records(fd, done)
    finally:
        os.close(fd)
    requests = [r for _, r in records if isinstance(r, SpooledRequest)]
    return {
        "segment": path.name, "bytes": path.stat().st_size, "replayed_bytes": done,
        "requests": len(requests), "credits": sum(r.cost for r in requests),
        "unreadable": unreadable, "in_use": _in_use(path),
        "oldest_ms": min((r.at_ms for r in requests), default=None),
    }


def spool_status(prefix: str) -> list[dict[str, Any]]:
    """Per spool directory (one per Redis): its Redis (password masked) and segments."""
    root = Path(prefix) / SPOOL_DIRNAME
    spools = []
    for directory in sorted(root.iterdir()) if root.is_dir() else ():
        note = directory / REDIS_FILE
        segments = []
        for path in segment_paths(directory):
            with contextlib.suppress(FileNotFoundError):  # replayed meanwhile
                segments.append(_segment_status(path))
        spools.append({
            "directory": str(directory),
            "redis": note.read_text().strip() if note.exists() else "",
            "requests": sum(s["requests"] for s in segments),
            "bytes": sum(s["bytes"] for s in segments),
            "segments": segments,
        })
    return spools


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


@click.group(name="spool")
def spool_command() -> None:
    """Requests served while Redis was away (on_redis_error: spool)."""


@spool_command.command(name="status")
@PREFIX_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(prefix: str, as_json: bool) -> None:
    """What each spool holds: requests not yet charged, bytes, segments in use."""
    spools = spool_status(prefix)
    if as_json:
        click.echo(json.dumps(spools, separators=(",", ":")))
        return
    if not spools:
        click.echo(f"nothing spooled under {prefix}")
    for spool in spools:
        click.echo(f"{spool['redis'] or spool['directory']}: {spool['requests']} request(s) "
                   f"to charge, {spool['bytes']} bytes in {len(spool['segments'])} segment(s)")
        for segment in spool["segments"]:
            state = "in use" if segment["in_use"] else "idle"
            click.echo(f"  {segment['segment']}: {segment['requests']} request(s), "
                       f"{segment['credits']} credits, oldest {_iso(segment['oldest_ms'])}, "
                       f"{state}")


@spool_command.command(name="replay")
@PREFIX_OPTION
@click.option("--redis-url", envvar=REDIS_URL_ENV, default=DEFAULT_REDIS_URL,
              show_default=True, help=f"The Redis the spool is for (env {REDIS_URL_ENV}).")
def replay_command(prefix: str, redis_url: str) -> None:
    """Charge what is spooled for this Redis now, at full speed. Segments a running plugin
    server holds are left to it. Exits 1 if Redis stops answering midway (run it again:
    nothing is charged twice)."""
    from ..cli import _client

    directory = spool_directory(prefix, redis_url)
    if not segment_paths(directory):
        click.echo("nothing spooled for this Redis")
        return
    client = _client(redis_url)

    async def charge(keys: Sequence[str], args: Sequence[Any]) -> Decision:
        return Decision.from_reply(run_script(client, AUTHORIZE, keys, args))

    outcome = asyncio.run(replay_directory(directory, charge))
    in_use = sum(1 for path in segment_paths(directory) if _in_use(path))
    click.echo(f"charged {outcome.replayed} spooled request(s) "
               f"({outcome.overdrawn} overdrew their wallet)")
    if outcome.waiting:
        click.echo("a credits-metered request still waits for its price (up to 60 s): "
                   "run again later")
    if in_use:
        click.echo(f"{in_use} segment(s) in use by a running plugin server: left to it")
    if outcome.failed:
        raise click.ClickException(f"Redis stopped answering: {outcome.failed}")
