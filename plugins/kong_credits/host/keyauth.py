"""Kong's bundled `key-auth` plugin, run inside the host (in Kong it is Lua, not external).

Follows `kong/plugins/key-auth/handler.lua` of Kong 3.5 (priority 1250): the key is read from
the headers, then the query string (then the body when `key_in_body`), for each of
`key_names`; the consumer and credential are set with `kong.client.authenticate` semantics and
the upstream gets `X-Consumer-ID`, `X-Consumer-Username`, `X-Consumer-Custom-ID`,
`X-Credential-Identifier` (or `X-Anonymous-Consumer: true`). Refusals go through
`kong.response.error`: 401 `No API key found in request` (with `WWW-Authenticate`), 401
`Invalid authentication credentials`, 401 `Duplicate API key found`. Kong 3.6+ says
`Unauthorized` for a bad key; the 3.5 wording is kept because the project's docs use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import responses
from .context import Headers, RequestContext, query_table
from .declarative import DeclarativeConfig
from .pdk import PdkExit, PdkRaised

__all__ = ["NAME", "PRIORITY", "SCHEMA_FIELDS", "VERSION", "access"]

NAME = "key-auth"
PRIORITY = 1250
VERSION = "3.5.0"

ERR_NO_API_KEY = "No API key found in request"
ERR_INVALID_AUTH_CRED = "Invalid authentication credentials"
ERR_DUPLICATE_API_KEY = "Duplicate API key found"
REALM = 'Key realm="kong"'

HEADER_CONSUMER_ID = "X-Consumer-ID"
HEADER_CONSUMER_CUSTOM_ID = "X-Consumer-Custom-ID"
HEADER_CONSUMER_USERNAME = "X-Consumer-Username"
HEADER_CREDENTIAL_IDENTIFIER = "X-Credential-Identifier"
HEADER_ANONYMOUS = "X-Anonymous-Consumer"

SCHEMA_FIELDS: list[dict[str, Any]] = [
    {"key_names": {"type": "array", "required": True, "default": ["apikey"],
                   "elements": {"type": "string"}}},
    {"hide_credentials": {"type": "boolean", "required": True, "default": False}},
    {"anonymous": {"type": "string"}},
    {"key_in_header": {"type": "boolean", "required": True, "default": True}},
    {"key_in_query": {"type": "boolean", "required": True, "default": True}},
    {"key_in_body": {"type": "boolean", "required": True, "default": False}},
    {"run_on_preflight": {"type": "boolean", "required": True, "default": True}},
    {"realm": {"type": "string"}},
]


def access(ctx: RequestContext, conf: Mapping[str, Any], entities: DeclarativeConfig) -> None:
    """Authenticate the request or raise PdkExit with Kong's 401 (PdkRaised for a 500)."""
    if not conf["run_on_preflight"] and ctx.request.method == "OPTIONS":
        return
    if conf.get("anonymous") and ctx.credential is not None:
        return  # already authenticated: logical OR between auth plugins
    refusal = _authenticate(ctx, conf, entities)
    if refusal is None:
        return
    if conf.get("anonymous"):
        anonymous = conf["anonymous"]
        consumer = entities.consumer(anonymous) or entities.consumer_by_username(anonymous)
        if consumer is None:
            raise PdkRaised(f"anonymous consumer {anonymous} is configured but doesn't exist")
        _set_consumer(ctx, consumer, None)
        return
    raise PdkExit(responses.error_response(
        401, refusal, None, accept=ctx.request.headers.get("accept"),
        request_id=ctx.request_id, current=ctx.response_headers))


def _authenticate(
    ctx: RequestContext, conf: Mapping[str, Any], entities: DeclarativeConfig
) -> str | None:
    """Kong's `do_authentication`: None when authenticated, else the refusal message."""
    headers = ctx.request.headers
    query = query_table(ctx.request.raw_query)
    body: Mapping[str, Any] | None = None
    key: Any = None
    for name in conf["key_names"]:
        value: Any = None  # Lua truthiness: only nil (and false) fall through
        if conf["key_in_header"]:
            values = headers.get_all(name)
            value = values[0] if len(values) == 1 else (values or None)
        if value is None and conf["key_in_query"]:
            value = query.get(name)
        if value is None and conf["key_in_body"]:
            body = body if body is not None else _body(ctx)
            value = body.get(name)
        if isinstance(value, str):
            key = value
            if conf["hide_credentials"]:
                _hide(ctx, name)
            break
        if isinstance(value, list):
            return ERR_DUPLICATE_API_KEY
    if not key:
        ctx.response_headers.set("WWW-Authenticate", REALM)
        return ERR_NO_API_KEY
    credential = entities.credential_by_key(key)
    if credential is None:
        return ERR_INVALID_AUTH_CRED
    consumer = entities.consumer(credential.consumer_id)
    _set_consumer(ctx, consumer, credential)
    return None


def _body(ctx: RequestContext) -> Mapping[str, Any]:
    kind = (ctx.request.headers.get("content-type") or "").split(";")[0].strip()
    try:
        if kind == "application/json":
            parsed = json.loads(ctx.request.body or b"{}")
            return parsed if isinstance(parsed, Mapping) else {}
        if kind == "application/x-www-form-urlencoded":
            return query_table(ctx.request.body.decode())
    except (ValueError, UnicodeDecodeError):
        pass
    return {}


def _hide(ctx: RequestContext, name: str) -> None:
    upstream = ctx.upstream
    if upstream is None:
        return
    upstream.headers.remove(name)
    kept = [p for p in upstream.raw_query.split("&") if p and p.split("=", 1)[0] != name]
    upstream.raw_query = "&".join(kept)


def _set_consumer(ctx: RequestContext, consumer: Any, credential: Any) -> None:
    """Kong's `set_consumer`: authenticate, then tell the upstream who it is."""
    if consumer is None and credential is None:
        raise PdkRaised("either credential or consumer must be provided")
    ctx.consumer = consumer
    ctx.credential = credential
    upstream: Headers = ctx.upstream.headers if ctx.upstream else Headers()
    for header, value in (
        (HEADER_CONSUMER_ID, consumer.id if consumer else None),
        (HEADER_CONSUMER_CUSTOM_ID, consumer.custom_id if consumer else None),
        (HEADER_CONSUMER_USERNAME, consumer.username if consumer else None),
        (HEADER_CREDENTIAL_IDENTIFIER, credential.id if credential else None),
    ):
        if value:
            upstream.set(header, value)
        else:
            upstream.remove(header)
    if credential is not None:
        upstream.remove(HEADER_ANONYMOUS)
    else:
        upstream.set(HEADER_ANONYMOUS, "true")
