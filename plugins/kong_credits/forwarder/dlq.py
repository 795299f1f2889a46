"""Dead letters: events a sink refused for good, kept with the reason until replayed.

A dead-letter entry (see keys.dead_letter_stream) holds the event's own fields plus:

    dlq_reason      why the sink refused it (HTTP status and an excerpt of the answer)
    dlq_sink        the sink kind, dlq_group the consumer group that read it
    dlq_source      the event stream, dlq_source_id the entry id there
    dlq_at_ms       when it was dead-lettered, dlq_attempts how often it was replayed

Nothing trims these streams: an entry leaves only when a replay delivered it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..errors import InvalidInput
from ..keys import dead_letter_streams
from ..rated_event import RatedEvent
from ..sinks.base import Sink

__all__ = ["DeadLetter", "Replay", "dead_letter_fields", "list_dead_letters", "replay"]

_PREFIX = "dlq_"
_MAX_REASON = 1000


def dead_letter_fields(fields: Mapping[str, str], *, reason: str, sink: str, group: str,
                       source: str, source_id: str, at_ms: int,
                       attempts: int = 0) -> dict[str, str]:
    """The fields of a dead-letter entry: the event's, then ours (ours win a name clash)."""
    return {**{k: v for k, v in fields.items() if not k.startswith(_PREFIX)},
            "dlq_reason": reason[:_MAX_REASON], "dlq_sink": sink, "dlq_group": group,
            "dlq_source": source, "dlq_source_id": source_id, "dlq_at_ms": str(at_ms),
            "dlq_attempts": str(attempts)}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter entry, decoded."""

    stream: str
    entry_id: str
    fields: dict[str, str]
    """The event's own fields, as the engine wrote them."""
    reason: str
    sink: str
    group: str
    source: str
    source_id: str
    at_ms: int
    attempts: int

    @classmethod
    def from_entry(cls, stream: str, entry_id: str, raw: Mapping[str, str]) -> DeadLetter:
        return cls(
            stream=stream, entry_id=entry_id,
            fields={k: v for k, v in raw.items() if not k.startswith(_PREFIX)},
            reason=raw.get("dlq_reason", ""), sink=raw.get("dlq_sink", ""),
            group=raw.get("dlq_group", ""), source=raw.get("dlq_source", ""),
            source_id=raw.get("dlq_source_id", ""), at_ms=int(raw.get("dlq_at_ms") or 0),
            attempts=int(raw.get("dlq_attempts") or 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {"id": self.entry_id, "stream": self.stream, "event": self.fields,
                "reason": self.reason, "sink": self.sink, "group": self.group,
                "source": self.source, "source_id": self.source_id, "at_ms": self.at_ms,
                "attempts": self.attempts}


def _entry_order(letter: DeadLetter) -> tuple[int, int]:
    ms, _, seq = letter.entry_id.partition("-")
    return int(ms), int(seq or 0)


def list_dead_letters(client: redis.Redis, *, group: str | None = None,
                      event_ids: Iterable[str] = (), limit: int = 100) -> list[DeadLetter]:
    """Dead letters oldest first, across all shards: all, or those of `group`, or those of
    the given event ids; at most `limit`. Needs a client with decode_responses=True."""
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, not {limit}")
    wanted = set(event_ids)
    pipe = client.pipeline(transaction=False)
    for stream in dead_letter_streams():
        pipe.xrange(stream, count=None if wanted or group else limit)
    letters = [DeadLetter.from_entry(stream, entry_id, raw)
               for stream, entries in zip(dead_letter_streams(), pipe.execute(), strict=True)
               for entry_id, raw in entries]
    letters = [d for d in letters if (group is None or d.group == group)
               and (not wanted or d.fields.get("event_id") in wanted)]
    return sorted(letters, key=_entry_order)[:limit]


@dataclass(frozen=True, slots=True)
class Replay:
    """What a replay did: delivered letters left the DLQ, rejected ones stayed with the new
    reason; `unresolved` were not tried or met a retryable failure (`retry_reason`)."""

    delivered: int = 0
    rejected: int = 0
    unresolved: int = 0
    retry_reason: str | None = None


def _rewrite(client: redis.Redis, letters: Sequence[tuple[DeadLetter, str]]) -> None:
    """Replace each letter by a copy with the new reason and one more attempt (one MULTI
    per letter: both keys are the same stream)."""
    now_ms = int(time.time() * 1000)
    for letter, reason in letters:
        pipe = client.pipeline(transaction=True)
        pipe.xadd(letter.stream, dead_letter_fields(
            letter.fields, reason=reason, sink=letter.sink, group=letter.group,
            source=letter.source, source_id=letter.source_id, at_ms=now_ms,
            attempts=letter.attempts + 1))
        pipe.xdel(letter.stream, letter.entry_id)
        pipe.execute()


def replay(client: redis.Redis, sink: Sink, letters: Sequence[DeadLetter]) -> Replay:
    """Deliver dead letters again through `sink` (after fixing what made it refuse them).

    Delivered letters are deleted; refused ones stay with the new reason. Stops at the first
    retryable failure. A crash between delivery and deletion replays that letter once more,
    under the same event id, which every sink deduplicates on.
    """
    delivered = rejected = 0
    queue = list(letters)
    while queue:
        chunk, queue = queue[:sink.max_batch], queue[sink.max_batch:]
        by_id: dict[str, list[DeadLetter]] = {}
        events: list[RatedEvent] = []
        refused: list[tuple[DeadLetter, str]] = []
        for letter in chunk:
            try:
                event = RatedEvent.from_fields(letter.fields)
            except InvalidInput as exc:
                refused.append((letter, f"malformed event: {exc}"))
                continue
            if event.event_id not in by_id:
                events.append(event)
            by_id.setdefault(event.event_id, []).append(letter)
        outcome = sink.deliver(events)
        done = [d for event_id in outcome.delivered for d in by_id[event_id]]
        if done:
            pipe = client.pipeline(transaction=False)
            for letter in done:
                pipe.xdel(letter.stream, letter.entry_id)
            pipe.execute()
        refused += [(d, reason) for event_id, reason in outcome.rejected.items()
                    for d in by_id[event_id]]
        _rewrite(client, refused)
        delivered += len(done)
        rejected += len(refused)
        left = [d for e in outcome.unresolved(events) for d in by_id[e.event_id]]
        if left:
            return Replay(delivered, rejected, len(left) + len(queue), outcome.retry_reason)
    return Replay(delivered, rejected)
