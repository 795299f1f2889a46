"""MessagePack-RPC framing of Kong's plugin protocol: answers, errors, pre-packed event Data."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

__all__ = ["RET", "EventAnswer", "new_unpacker", "pack", "pack_answer", "pack_error"]

# The C Packer holds the GIL for a whole pack() and resets itself after each call (and after
# an error), so one shared instance is safe and saves building a Packer per message.
pack = msgpack.Packer(use_bin_type=True).pack

RET = pack("ret")
"""Data of the answer that ends a phase."""

_ANSWER_HEAD = b"\x94\x01"  # fixarray(4), type 1 = response
_EVENT_ID = b"\xc0\x82" + pack("EventId")  # error nil, fixmap(2), key
_DATA = pack("Data")


class EventAnswer(NamedTuple):
    """Result of HandleEvent and Step*: {EventId, Data} with Data already packed.

    Data is packed when the handler makes its PDK call, so an argument MessagePack cannot
    encode raises TypeError at the plugin's own call site instead of failing the answer.
    """

    event_id: int
    data: bytes


def pack_answer(msgid: int, result: Any) -> bytes:
    """[1, msgid, nil, result]."""
    if type(result) is EventAnswer:
        return b"".join(
            (_ANSWER_HEAD, pack(msgid), _EVENT_ID, pack(result.event_id), _DATA, result.data)
        )
    return pack([1, msgid, None, result])


def pack_error(msgid: int, message: str) -> bytes:
    """[1, msgid, message, nil]: Kong calls message:lower(), so it must be a string."""
    return pack([1, msgid, message, None])


_READ_SIZE = 16 * 1024


def new_unpacker() -> msgpack.Unpacker:
    """A streaming unpacker for one connection: str as str, bin as bytes, any map keys.

    Its buffer starts at 16 KiB (it doubles for a bigger message) instead of msgpack's 1 MiB:
    `feed` appends until the end of the buffer before moving back to its start, so each
    buffer ends up resident in full, and Kong keeps up to 256 connections per worker.
    """
    return msgpack.Unpacker(raw=False, strict_map_key=False, read_size=_READ_SIZE)
