"""`kong-credits admin`: serve the admin API (and its dashboard) with uvicorn."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click
import redis

from ..errors import InvalidInput, RedisUnavailable
from ..redact import mask_url
from ..redis_url import parse_redis_url, unavailable
from ..schema import DEFAULT_REDIS_URL, REDIS_URL_ENV
from ..shards import ShardsMismatch, check_shards
from ..usage.store import USAGE_URL_ENV
from .settings import ADMIN_TOKEN_ENV, AdminSettings, parse_admin_tokens

__all__ = ["admin_command", "parse_listen"]

KONG_YML_ENV = "KONG_CREDITS_KONG_YML"


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8400` for IPv6) -> (host, port); InvalidInput otherwise."""
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"--listen must be HOST:PORT, not {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("admin", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", default="127.0.0.1:8400", show_default=True,
              help="HOST:PORT to serve the API and dashboard on.")
@click.option("--redis-url", envvar=REDIS_URL_ENV, default=DEFAULT_REDIS_URL,
              show_default=True, help=f"Redis holding the wallets (env {REDIS_URL_ENV}).")
@click.option("--store", "store_url", envvar=USAGE_URL_ENV,
              help=f"The usage store (env {USAGE_URL_ENV}): sqlite:///PATH or postgresql://...; "
                   "without it, no /v1/usage endpoints.")
@click.option("--kong-yml", envvar=KONG_YML_ENV, type=click.Path(dir_okay=False),
              help=f"Declarative config naming routes and services, and their prices "
                   f"(env {KONG_YML_ENV}); without it, ids are shown.")
@click.option("--insecure-local", is_flag=True,
              help=f"Without ${ADMIN_TOKEN_ENV}, let every request act as the admin: only "
                   "on a loopback --listen address.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def admin_command(listen: str, redis_url: str, store_url: str | None, kong_yml: str | None,
                  insecure_local: bool, log_level: str) -> None:
    """Serve the admin HTTP API: wallets, grants, budgets, tokens, usage; docs at /docs.

    Every request needs `Authorization: Bearer <token>`: an admin token from
    $KONG_CREDITS_ADMIN_TOKEN (comma-separated for several) or a wallet token made with
    POST /v1/wallets/{wallet}/tokens.
    """
    try:
        host, port = parse_listen(listen)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    tokens = parse_admin_tokens(os.environ.get(ADMIN_TOKEN_ENV))
    if insecure_local and not is_loopback(host):
        raise click.UsageError(f"--insecure-local serves only a loopback address, not {host}")
    if not tokens and not insecure_local:
        raise click.UsageError(
            f"set {ADMIN_TOKEN_ENV} to one or more admin tokens (comma-separated); to try the "
            "API on this machine without one, listen on 127.0.0.1 with --insecure-local")
    if kong_yml is not None and not Path(kong_yml).is_file():
        raise click.BadParameter(f"{kong_yml} is not a file", param_hint="--kong-yml")
    if store_url and not store_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise click.BadParameter("the usage store URL must start with sqlite:/// or "
                                 "postgresql://", param_hint="--store")
    try:  # a malformed URL is refused before anything else (its message masks the password)
        parse_redis_url(redis_url)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--redis-url") from None
    import uvicorn  # here, not at the top: `kong-credits --help` stays fast

    from .app import create_app
    from .wallet_index import index_existing_wallets

    settings = AdminSettings(redis_url=redis_url, admin_tokens=tokens, store_url=store_url,
                             kong_yml=Path(kong_yml) if kong_yml else None,
                             insecure_local=insecure_local)
    try:
        app = create_app(settings)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--kong-yml") from None
    try:
        check_shards(app.state.redis, mask_url(redis_url))
        indexed = index_existing_wallets(app.state.redis)
    except ShardsMismatch as exc:
        raise click.ClickException(str(exc)) from None
    except (redis.ConnectionError, redis.TimeoutError, RedisUnavailable) as exc:
        raise click.ClickException(unavailable(exc, redis_url)) from None
    if indexed is not None:
        click.echo(f"wallet index built: {indexed} existing wallet(s)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
