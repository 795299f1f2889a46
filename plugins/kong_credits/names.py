"""The rules for names that end up inside Redis keys and script encodings, written once.

Wallet names become key parts and `/` in them means "draws on the parent"; grant ids are
packed into burn-order members and hold lists (`;` and `=` separate them); request ids end
key names. Each rule is checked where a name enters (CLI, engine, plugin) so that no name can
alias another wallet's keys or break an encoding inside a script that has already written.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import InvalidInput

__all__ = ["GRANT_ID_CHARACTERS", "MAX_NAME_LENGTH", "parse_grant_id", "parse_request_id",
           "parse_void_key", "parse_wallet"]

MAX_NAME_LENGTH = 200
GRANT_ID_CHARACTERS = "A-Z a-z 0-9 _ - . : @ /"
_GRANT_ID = re.compile(r"[A-Za-z0-9_.:@/-]{1,200}")
"""Covers Stripe (`pi_...`, `cs_test_...`), UUIDs, invoice numbers; excludes the separators
of the scripts' encodings (wallet.lua `refund`) and anything invisible."""
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""No `:`: a request id ends key names, so it can never run into another key's parts."""


@lru_cache(maxsize=65_536)
def parse_wallet(name: str) -> str:
    """A wallet name: 1..200 printable characters, no whitespace at either end, no empty
    `/`-separated segment. `team/alice` names a member wallet that draws on its parent `team`.

    Cached: the plugin and the engine check the wallet of every request.
    """
    if not isinstance(name, str) or not name or name != name.strip() or (
        len(name) > MAX_NAME_LENGTH
    ):
        raise InvalidInput(f"wallet must be 1..{MAX_NAME_LENGTH} characters "
                           f"without surrounding spaces, not {name!r}")
    if not name.isprintable():
        raise InvalidInput(f"wallet must be printable, not {name!r}")
    if any(not part for part in name.split("/")):
        raise InvalidInput(f"wallet path segments must not be empty, not {name!r}")
    return name


def parse_grant_id(grant_id: str) -> str:
    """A grant id: 1..200 of `GRANT_ID_CHARACTERS`."""
    if not isinstance(grant_id, str) or not _GRANT_ID.fullmatch(grant_id):
        raise InvalidInput(f"grant id must be 1..200 characters of {GRANT_ID_CHARACTERS}, "
                           f"not {grant_id!r}")
    return grant_id


def parse_void_key(void_key: str) -> str:
    """A void's idempotency key: the grant id's rule, so `<grant id>|<void key>` (the field
    of its kept reply, keys.py) cannot be read two ways."""
    if not isinstance(void_key, str) or not _GRANT_ID.fullmatch(void_key):
        raise InvalidInput(f"void key must be 1..200 characters of {GRANT_ID_CHARACTERS}, "
                           f"not {void_key!r}")
    return void_key


def parse_request_id(request_id: str) -> str:
    """A request id: 1..128 of A-Z a-z 0-9 _ - . (the plugin's are 32 hex digits)."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise InvalidInput(f"request id must be 1..128 characters of A-Z a-z 0-9 _ - ., "
                           f"not {request_id!r}")
    return request_id
