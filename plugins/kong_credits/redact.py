"""Secrets out of messages: Redis and sink URLs as logs and errors may show them.

`mask_url` hides the userinfo password (or a user-only userinfo, often a token) and the values
of query parameters named like secrets (`password=`, `token=`, `api_key=`, ...); everything
else stays, so a message still says which server was meant. `redact` removes the same
secrets from text a parser wrote about the URL: urllib and redis-py report a password holding
an unescaped `/`, `?` or `#` as a bad port (`... as 's3cr'`), so their messages cannot be
shown as they are.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["MASK", "mask_url", "redact"]

MASK = "***"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PARAM = re.compile(r"(?<=[?&;])([^&;=#]+)=([^&;#]*)")
_SECRET_NAMES = ("pass", "pwd", "token", "secret", "key", "auth", "sig", "credential")
_DELIMITERS = re.compile(r"[/:@?#&=;]")
_MIN_PIECE = 3  # shorter fragments are too common in ordinary text to strip from it


def _secret_name(name: str) -> bool:
    name = unquote(name).lower()
    return any(word in name for word in _SECRET_NAMES)


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """Where the secrets of `url` are, as sorted, disjoint, non-empty (start, end) spans.

    The userinfo ends at the URL's last `@` (outside secret parameters), not at the first
    `/`, `?` or `#`: a password may hold those unescaped, and parsers then misread it. A `@`
    in a path or query hides the host as well: more than needed, never less.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return []
    start = scheme.end()
    spans = [m.span(2) for m in _PARAM.finditer(url, start) if _secret_name(m.group(1))]
    at = next((i for i in range(len(url) - 1, start - 1, -1)
               if url[i] == "@" and not any(a <= i < b for a, b in spans)), -1)
    if at > start:
        colon = url.find(":", start, at)
        user_kept = colon >= 0 and not _DELIMITERS.search(url[start:colon])
        spans.append((colon + 1 if user_kept else start, at))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[0] < s[1]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def mask_url(url: str) -> str:
    """`redis://user:s3cret@host:6379/0?token=t` -> `redis://user:***@host:6379/0?token=***`.

    A userinfo without `:` is masked whole (`https://***@host`): a lone user is often a token.
    Strings that are not URLs come back unchanged.
    """
    out, end = [], 0
    for a, b in _secret_spans(url):
        out += [url[end:a], MASK]
        end = b
    return "".join(out) + url[end:]


def redact(text: str, url: str) -> str:
    """`text` (e.g. a parser's error about `url`) without the secrets mask_url hides: each
    raw, percent-decoded, and in the pieces between URL delimiters a misparse may quote."""
    secrets = {s for a, b in _secret_spans(url) for s in (url[a:b], unquote(url[a:b]))}
    secrets |= {p for s in list(secrets) for p in _DELIMITERS.split(s) if len(p) >= _MIN_PIECE}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
