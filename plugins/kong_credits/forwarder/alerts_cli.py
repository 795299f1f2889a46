"""`kong-credits alerts`: deliver the alert streams as signed webhooks, until stopped."""

from __future__ import annotations

import logging

import click
import httpx

from .. import redis_url as urls
from ..errors import InvalidInput
from ..keys import alert_streams
from ..retry import Backoff
from ..schema import DEFAULT_REDIS_URL, REDIS_URL_ENV
from ..shards import ShardsMismatch
from ..sinks import SinkConfig, http_client
from .alerts import Alert, WebhookSink
from .cli import (
    LOG_FORMAT,
    is_cluster,
    redis_client,
    retain_option,
    shards_mismatch,
    stop_on_signals,
)
from .consumer_group import ConsumerGroup, consumer_name
from .loop import REDIS_ERRORS, Forwarder, ForwarderOptions
from .metrics import ForwarderMetrics

__all__ = ["alerts_command"]

SECRET_ENV = "KONG_CREDITS_WEBHOOK_SECRET"


@click.command("alerts", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", required=True, help="The webhook endpoint alerts are POSTed to.")
@click.option("--hmac-secret", envvar=SECRET_ENV, required=True,
              help=f"Signing secret of the Kong-Credits-Signature header (env {SECRET_ENV}).")
@click.option("--drain", is_flag=True,
              help="Deliver everything pending, then exit 0 (1 if one keeps failing).")
@click.option("--group", default="alerts:webhook", show_default=True,
              help="Consumer group; each group receives every alert once.")
@click.option("--consumer", help="This process's consumer name (default hostname-pid).")
@click.option("--claim-idle-ms", type=click.IntRange(100), default=60_000, show_default=True,
              help="Take over another consumer's alerts once idle this long.")
@click.option("--block-ms", type=click.IntRange(1, 60_000), default=1_000, show_default=True)
@click.option("--max-attempts", type=click.IntRange(1), default=10, show_default=True,
              help="With --drain: give up after this many failed attempts in a row.")
@click.option("--backoff-base-ms", type=click.IntRange(1), default=200, show_default=True)
@click.option("--backoff-max-ms", type=click.IntRange(1), default=30_000, show_default=True)
@click.option("--timeout-s", type=click.FloatRange(0.1, 300), default=10.0, show_default=True)
@retain_option
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.option("--redis-url", envvar=REDIS_URL_ENV, default=DEFAULT_REDIS_URL, show_default=True,
              help=f"Redis holding the alert streams (env {REDIS_URL_ENV}).")
def alerts_command(url: str, hmac_secret: str, drain: bool, group: str, consumer: str | None,
                   claim_idle_ms: int, block_ms: int, max_attempts: int, backoff_base_ms: int,
                   backoff_max_ms: int, timeout_s: float, retain_s: int, log_level: str,
                   redis_url: str) -> None:
    """Deliver alerts (thresholds, caps, abuse) as signed webhooks: at least once, each
    under its unique alert id; refused ones go to the dead-letter stream (kong-credits dlq)."""
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    options = ForwarderOptions(
        batch_size=1, drain=drain, claim_idle_ms=claim_idle_ms, block_ms=block_ms,
        max_attempts=max_attempts, retain_ms=retain_s * 1000,
        backoff=Backoff(backoff_base_ms / 1000, max(backoff_max_ms, backoff_base_ms) / 1000))
    config = SinkConfig(url=url, hmac_secret=hmac_secret, timeout_s=timeout_s)
    client = redis_client(redis_url, read_timeout_s=block_ms / 1000 + 10)
    consumers = ConsumerGroup(client, group, consumer or consumer_name(), alert_streams(),
                              per_shard=is_cluster(client))
    http: httpx.Client = http_client(config)
    try:
        try:
            sink = WebhookSink(http, config)
        except InvalidInput as exc:
            raise click.UsageError(str(exc)) from exc
        with stop_on_signals() as stop:
            code = Forwarder(consumers, sink, options, metrics=ForwarderMetrics(sink.name),
                             stop=stop, parse=Alert.from_fields).run()
    except REDIS_ERRORS as exc:  # run() retries the rest
        raise click.ClickException(urls.unavailable(exc, redis_url)) from exc
    except ShardsMismatch as exc:
        raise shards_mismatch(exc, redis_url) from None
    finally:
        http.close()
        client.close()
    raise SystemExit(code)
