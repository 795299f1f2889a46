"""Responses Kong makes itself: `kong.response.exit`, `kong.response.error`, router errors.

Follows `send()` and `_RESPONSE.error()` in `kong/pdk/response.lua` and the error templates of
`kong/tools/http.lua` (Kong 3.5+: the JSON template carries `request_id`):
- exit: a table body is cjson-encoded and gets `Content-Type: application/json;
  charset=utf-8` unless the caller set one; a string body is sent as-is; `Content-Length` is
  set unless given; `Transfer-Encoding` is ignored; headers already set with
  `kong.response.set_header` stay;
- error: the message goes into the template chosen by the `Accept` header (JSON by default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .codec import cjson_encode
from .context import ExitResponse, Headers

__all__ = ["HTTP_ERROR_MESSAGES", "error_response", "exit_response", "header_values"]

CONTENT_TYPE_JSON = "application/json; charset=utf-8"

HTTP_ERROR_MESSAGES = {
    400: "Bad request", 401: "Unauthorized", 402: "Payment required", 403: "Forbidden",
    404: "Not found", 405: "Method not allowed", 406: "Not acceptable",
    407: "Proxy authentication required", 408: "Request timeout", 409: "Conflict",
    410: "Gone", 411: "Length required", 412: "Precondition failed",
    413: "Payload too large", 414: "URI too long", 415: "Unsupported media type",
    416: "Range not satisfiable", 417: "Expectation failed", 418: "I'm a teapot",
    421: "Misdirected request", 422: "Unprocessable entity", 423: "Locked",
    424: "Failed dependency", 425: "Too early", 426: "Upgrade required",
    428: "Precondition required", 429: "Too many requests",
    431: "Request header fields too large", 451: "Unavailable for legal reasons",
    494: "Request header or cookie too large", 500: "An unexpected error occurred",
    501: "Not implemented",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out", 505: "HTTP version not supported",
    506: "Variant also negotiates", 507: "Insufficient storage", 508: "Loop detected",
    510: "Not extended", 511: "Network authentication required",
}

_MIME_TYPES = {
    "text/html": "text/html; charset=utf-8",
    "application/json": CONTENT_TYPE_JSON,
    "text/plain": "text/plain; charset=utf-8",
    "application/xml": "application/xml; charset=utf-8",
    "application": CONTENT_TYPE_JSON,
    "text": "text/plain; charset=utf-8",
}

_TEMPLATES = {
    CONTENT_TYPE_JSON: '{\n  "message":"%s",\n  "request_id":"%s"\n}',
    "text/html; charset=utf-8": (
        '<!doctype html>\n<html>\n  <head>\n    <meta charset="utf-8">\n'
        "    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n"
        "    <p>%s.</p>\n    <p>request_id: %s</p>\n  </body>\n</html>\n"
    ),
    "text/plain; charset=utf-8": "%s\nrequest_id: %s\n",
    "application/xml; charset=utf-8": (
        '<?xml version="1.0" encoding="UTF-8"?>\n<error>\n  <message>%s</message>\n'
        "  <requestid>%s</requestid>\n</error>\n"
    ),
}

_ACCEPT = re.compile(
    r"^\s*((?:[a-z0-9][a-z0-9\-!#$&^_+.]+|\*)/(?:[a-z0-9][a-z0-9\-!#$&^_+.]+|\*))"
    r"(?:\s*;\s*q=(1(?:\.0{0,3})?|0(?:\.\d{0,3})?))?", re.I,
)


def header_values(name: str, value: Any) -> list[str]:
    """Kong's `validate_header` + `normalize_multi_header`; raises ValueError like Kong."""
    if not isinstance(name, str):
        raise ValueError(f'invalid header name "{name}": got {_lua_type(name)}, '
                         "expected string")
    if isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f'invalid header value in array "{name}": got '
                                 f"{_lua_type(item)}, expected string")
        return [v or " " for v in value]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int | float):
        return [str(int(value)) if float(value).is_integer() else f"{value:.14g}"]
    if isinstance(value, str):
        return [value or " "]
    raise ValueError(f'invalid header value for "{name}": got {_lua_type(value)}, expected '
                     "array of string, string, number or boolean")


def _lua_type(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str | bytes):
        return "string"
    return "table"


def exit_response(
    status: Any, body: Any = None, headers: Any = None, current: Headers | None = None
) -> ExitResponse:
    """Kong's `send(status, body, headers)` over the headers already set (`current`).

    Raises ValueError with Kong's message for a bad status, body or header.
    """
    if not isinstance(status, int) or isinstance(status, bool):
        raise ValueError("code must be a number")
    if not 100 <= status <= 599:
        raise ValueError("code must be a number between 100 and 599")
    if body is not None and not isinstance(body, str | bytes | Mapping | list):
        raise ValueError("body must be a nil, string or table")
    if headers is not None and not isinstance(headers, Mapping | list):
        raise ValueError("headers must be a nil or table")
    out = current.copy() if current is not None else Headers()
    has_type = has_length = False
    for name, value in (headers or {}).items() if isinstance(headers, Mapping) else ():
        values = header_values(name, value)
        lower = name.lower().replace("_", "-")
        if lower == "transfer-encoding":
            continue
        out.set(name, values)
        has_type = has_type or lower == "content-type"
        has_length = has_length or lower == "content-length"
    if isinstance(body, Mapping | list):
        payload = cjson_encode(body).encode()
        if not has_type:
            out.set("Content-Type", CONTENT_TYPE_JSON)
    elif body is None:
        payload = b""
    else:
        payload = body.encode() if isinstance(body, str) else bytes(body)
    if not has_length:
        out.set("Content-Length", str(len(payload)))
    return ExitResponse(status=status, body=payload, headers=out)


def error_response(
    status: Any,
    message: Any = None,
    headers: Any = None,
    *,
    accept: str | None = None,
    request_id: str = "",
    current: Headers | None = None,
) -> ExitResponse:
    """Kong's `kong.response.error`: the message in the template `Accept` asks for."""
    if not isinstance(status, int) or isinstance(status, bool):
        raise ValueError("code must be a number")
    if not 400 <= status <= 599:
        raise ValueError("code must be a number between 400 and 599")
    if isinstance(message, Mapping | list):
        message = cjson_encode(message)
    if message is not None and not isinstance(message, str):
        raise ValueError("message must be a nil, a string or a table")
    if headers is not None and not isinstance(headers, Mapping):
        raise ValueError("headers must be a nil or table")
    headers = dict(headers or {})
    given = headers.get("Content-Type")
    content_type = (given[0] if isinstance(given, list) else given) or response_type(accept)
    headers["Content-Type"] = content_type
    template = _TEMPLATES.get(content_type)
    text = message if message is not None else HTTP_ERROR_MESSAGES.get(
        status, f"The upstream server responded with {status}")
    body = template % (text, request_id) if template else text
    return exit_response(status, body, headers, current)


def response_type(accept: str | None) -> str:
    """Kong's `get_response_type`: the Accept entry with the highest q we have a type for."""
    content_type = CONTENT_TYPE_JSON
    best = 0.0
    for entry in (accept or "").split(","):
        match = _ACCEPT.match(entry)
        if not match:
            continue
        quality = float(match.group(2)) if match.group(2) else 1.0
        if quality > best:
            best = quality
            content_type = _mime_type(match.group(1).lower()) or content_type
    return content_type


def _mime_type(media: str) -> str | None:
    major, _, minor = media.partition("/")
    if minor == "*":
        return CONTENT_TYPE_JSON if major == "*" else _MIME_TYPES.get(major)
    return _MIME_TYPES.get(media)
