"""`kong-credits forwarder` and `kong-credits dlq`: parse options, build the parts, run.

Register on the main group with `main.add_command(forwarder_command)` and
`main.add_command(dlq_command)`; `python -m kong_credits.forwarder.cli` runs both standalone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
import redis

from .. import redis_url as urls
from ..customers import DEFAULT_CUSTOMERS_PATH, CustomerMap
from ..errors import InvalidInput
from ..retry import Backoff
from ..schema import DEFAULT_REDIS_URL, REDIS_URL_ENV
from ..shards import ShardsMismatch, check_shards
from ..sinks import ALL_SINKS, SINKS, Sink, SinkConfig, http_client
from ..sinks.lago import ID_FIELDS
from ..usage.store import DEFAULT_USAGE_URL, USAGE_URL_ENV
from .consumer_group import ConsumerGroup, consumer_name
from .dlq import list_dead_letters, replay
from .group_names import group_name
from .loop import DEFAULT_RETAIN_MS, REDIS_ERRORS, Forwarder, ForwarderOptions, tune_gc
from .metrics import ForwarderMetrics

__all__ = ["dlq_command", "forwarder_command"]

API_KEY_ENV = "KONG_CREDITS_SINK_API_KEY"
HMAC_SECRET_ENV = "KONG_CREDITS_SINK_HMAC_SECRET"

F = TypeVar("F", bound=Callable[..., Any])
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _redis_url_option(command: F) -> F:
    return click.option(
        "--redis-url", envvar=REDIS_URL_ENV, default=DEFAULT_REDIS_URL, show_default=True,
        help=f"Redis holding the event streams (env {REDIS_URL_ENV}).",
    )(command)


def retain_option(command: F) -> F:
    """--retain-s: how long delivered entries stay in the streams (forwarder and alerts)."""
    return click.option(
        "--retain-s", type=click.IntRange(0, 315_360_000), default=DEFAULT_RETAIN_MS // 1000,
        show_default=True,
        help="Trim stream entries every consumer group has delivered once older than this "
             "(checked every 10 s and on exit); entries any group still has to deliver are "
             "never trimmed.")(command)


def _cluster_option(command: F) -> F:
    return click.option(
        "--cluster", is_flag=True,
        help="--redis-url is a Redis Cluster node: use a cluster client (and read each "
        "shard's stream with its own command); the same as a redis[s]+cluster:// URL.")(command)


def _sink_options(command: F) -> F:
    """The options that pick and configure a sink (forwarder and dlq retry share them)."""
    options = [
        click.option("--sink", "kind", type=click.Choice(sorted(ALL_SINKS)), required=True,
                     help="The billing backend, or `usage`: the usage store."),
        click.option("--url", help="Backend base URL (http: the endpoint itself). Defaults: "
                     "openmeter https://openmeter.cloud, lago https://api.getlago.com, "
                     "stripe https://api.stripe.com, orb https://api.withorb.com."),
        click.option("--api-key", envvar=API_KEY_ENV,
                     help=f"Bearer token / API key (env {API_KEY_ENV}); http: optional."),
        click.option("--event-name", help="CloudEvents type (http, openmeter; default "
                     "kong-credits.request), Lago billable metric code, Stripe meter "
                     "event name, Orb event name."),
        click.option("--source", default="kong-credits", show_default=True,
                     help="CloudEvents source (http, openmeter)."),
        click.option("--hmac-secret", envvar=HMAC_SECRET_ENV,
                     help=f"http: sign each body with HMAC-SHA256 (env {HMAC_SECRET_ENV})."),
        click.option("--signature-header", default="X-Signature-256", show_default=True,
                     help="http: header carrying sha256=<hex digest>."),
        click.option("--customers", "customers_path", type=click.Path(dir_okay=False),
                     help=f"Wallet -> customer id mapping (default {DEFAULT_CUSTOMERS_PATH} "
                     "when it exists; else the wallet name)."),
        click.option("--lago-id-field", type=click.Choice(ID_FIELDS),
                     default=ID_FIELDS[0], show_default=True,
                     help="lago: the event field the customer id goes into."),
        click.option("--concurrency", type=click.IntRange(1, 64), default=4,
                     show_default=True,
                     help="stripe: customers sent to at once (one call per customer at a time)."),
        click.option("--timeout-s", type=click.FloatRange(0.1, 300), default=10.0,
                     show_default=True, help="Per-request timeout."),
        click.option("--store", envvar=USAGE_URL_ENV,
                     help=f"usage: the store, sqlite:///relative.db, sqlite:////absolute.db "
                     f"or postgresql://user:pass@host:port/db (env {USAGE_URL_ENV}; default "
                     f"{DEFAULT_USAGE_URL})."),
        click.option("--retention", "usage_retention", multiple=True, metavar="LEVEL=SPAN",
                     help="usage: keep LEVEL (raw, minute, hour, day) for SPAN (48h, 7d, "
                     "forever); defaults raw=7d minute=7d hour=90d day=forever. Repeatable."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _customers(path: str | None) -> CustomerMap:
    if path is None and not DEFAULT_CUSTOMERS_PATH.exists():
        return CustomerMap()
    return CustomerMap.load(Path(path or DEFAULT_CUSTOMERS_PATH), sinks=SINKS)


@contextmanager
def _sink(kind: str, **settings: Any) -> Iterator[Sink]:
    """The sink and its shared HTTP client, both closed on exit; bad options exit 2."""
    customers_path = settings.pop("customers_path")
    try:
        config = SinkConfig(customers=_customers(customers_path), **settings)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from exc
    client: httpx.Client = http_client(config)
    try:
        try:
            sink = ALL_SINKS[kind](client, config)
        except InvalidInput as exc:  # a StoreError too: bad URL, unreachable store
            raise click.UsageError(str(exc)) from exc
        try:
            yield sink
        finally:
            sink.close()
    finally:
        client.close()


def redis_client(url: str, *, read_timeout_s: float, cluster: bool = False) -> redis.Redis:
    """A client decoding replies to str (ConsumerGroup and dlq need that), for any URL form
    (redis_url.py); `cluster` (the --cluster flag) takes a redis[s]:// node as a cluster seed.
    A malformed URL exits 2."""
    try:
        location = urls.parse_redis_url(url)
        return urls.redis_client(location.as_cluster() if cluster else location,
                                 decode_responses=True, socket_timeout=read_timeout_s,
                                 socket_connect_timeout=5, health_check_interval=30)
    except InvalidInput as exc:  # its message masks the password
        raise click.BadParameter(str(exc), param_hint="--redis-url") from None


def shards_mismatch(exc: ShardsMismatch, redis_url: str) -> click.ClickException:
    """Exit 1 naming the Redis (password masked): this process must not touch its streams."""
    return click.ClickException(f"{urls.parse_redis_url(redis_url).masked}: {exc}")


def is_cluster(client: redis.Redis) -> bool:
    """Read each shard's stream with its own command: one call may not span a cluster's slots."""
    return isinstance(client, redis.RedisCluster)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT finish the delivery call in flight, then stop (entries not yet acked
    stay pending for the next forwarder)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("forwarder", context_settings={"help_option_names": ["-h", "--help"]})
@_sink_options
@click.option("--batch-size", type=click.IntRange(1, 10_000),
              help="Events per delivery call, capped at the sink's maximum (default: 100; "
              "usage: 5000).")
@click.option("--drain", is_flag=True,
              help="Deliver everything pending, then exit 0 (1 if a batch keeps failing).")
@click.option("--group", help="Consumer group (default forwarder:<sink>; usage: "
              "forwarder:usage:<store without password>); each group receives every event "
              "once.")
@click.option("--consumer", help="This process's consumer name (default hostname-pid).")
@click.option("--claim-idle-ms", type=click.IntRange(100), default=60_000, show_default=True,
              help="Take over another consumer's events once idle this long.")
@click.option("--block-ms", type=click.IntRange(1, 60_000), default=1_000, show_default=True,
              help="Longest wait for new events per read.")
@click.option("--max-attempts", type=click.IntRange(1), default=10, show_default=True,
              help="With --drain: give up on a batch after this many failed attempts.")
@click.option("--backoff-base-ms", type=click.IntRange(1), default=200, show_default=True)
@click.option("--backoff-max-ms", type=click.IntRange(1), default=30_000, show_default=True)
@click.option("--summary-interval-s", type=click.FloatRange(0.1), default=60.0,
              show_default=True, help="How often to log the info summary.")
@retain_option
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@_cluster_option
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@_redis_url_option
def forwarder_command(kind: str, batch_size: int | None, drain: bool, group: str | None,
                      consumer: str | None, claim_idle_ms: int, block_ms: int,
                      max_attempts: int, backoff_base_ms: int, backoff_max_ms: int,
                      summary_interval_s: float, retain_s: int, metrics_port: int | None,
                      metrics_host: str,
                      cluster: bool, log_level: str, redis_url: str,
                      **sink_settings: Any) -> None:
    """Deliver rated events to a billing backend: at least once, deduplicated by event id."""
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    try:
        options = ForwarderOptions(
            batch_size=batch_size or 100, drain=drain, claim_idle_ms=claim_idle_ms,
            block_ms=block_ms, max_attempts=max_attempts, summary_interval_s=summary_interval_s,
            retain_ms=retain_s * 1000, sweep_holds=True,
            backoff=Backoff(backoff_base_ms / 1000, max(backoff_max_ms, backoff_base_ms) / 1000))
    except (InvalidInput, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    client = redis_client(redis_url, read_timeout_s=block_ms / 1000 + 10, cluster=cluster)
    with _sink(kind, **sink_settings) as sink, stop_on_signals() as stop:
        if batch_size is None:
            options = dataclasses.replace(options, batch_size=sink.default_batch)
        consumers = ConsumerGroup(client, group or group_name(kind, sink.destination),
                                  consumer or consumer_name(), per_shard=is_cluster(client))
        metrics = ForwarderMetrics(sink.name)
        stop_metrics = None
        if metrics_port is not None:
            port, stop_metrics = metrics.serve(metrics_port, metrics_host)
            logging.getLogger(__name__).info("metrics on http://%s:%d/metrics", metrics_host,
                                             port)
        try:
            tune_gc()
            code = Forwarder(consumers, sink, options, metrics=metrics, stop=stop).run()
        except REDIS_ERRORS as exc:  # run() retries the rest
            raise click.ClickException(urls.unavailable(exc, redis_url)) from exc
        except ShardsMismatch as exc:
            raise shards_mismatch(exc, redis_url) from None
        finally:
            if stop_metrics:
                stop_metrics()
            client.close()
    raise SystemExit(code)


@click.group("dlq", context_settings={"help_option_names": ["-h", "--help"]})
def dlq_command() -> None:
    """Inspect and replay events a sink refused for good."""


@dlq_command.command("list")
@click.option("--group", help="Only this consumer group's dead letters.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@_cluster_option
@_redis_url_option
def dlq_list(group: str | None, limit: int, as_json: bool, cluster: bool,
             redis_url: str) -> None:
    """Dead-lettered events, oldest first, with the reason."""
    client = redis_client(redis_url, read_timeout_s=10, cluster=cluster)
    try:
        check_shards(client)
        letters = list_dead_letters(client, group=group, limit=limit)
    except REDIS_ERRORS as exc:
        raise click.ClickException(urls.unavailable(exc, redis_url)) from exc
    except ShardsMismatch as exc:
        raise shards_mismatch(exc, redis_url) from None
    if as_json:
        click.echo(json.dumps([d.to_json() for d in letters], separators=(",", ":")))
        return
    for d in letters:
        event = d.fields
        click.echo(f"{d.entry_id}  {event.get('event_id', '?')}  wallet={event.get('wallet')}"
                   f"  cost={event.get('cost')}  {d.group}  attempts={d.attempts}  {d.reason}")
    click.echo(f"{len(letters)} dead letter(s)")


@dlq_command.command("retry")
@_sink_options
@click.option("--group", help="Replay this group's dead letters (default forwarder:<sink>).")
@click.option("--event-id", "event_ids", multiple=True,
              help="Replay only this event's dead letter (repeatable; any group).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1_000, show_default=True)
@_cluster_option
@_redis_url_option
def dlq_retry(kind: str, group: str | None, event_ids: tuple[str, ...], limit: int,
              cluster: bool,
              redis_url: str, **sink_settings: Any) -> None:
    """Send dead letters to the sink again: delivered ones leave the DLQ. Exit 1 if any stay."""
    client = redis_client(redis_url, read_timeout_s=10, cluster=cluster)
    with _sink(kind, **sink_settings) as sink:
        try:
            check_shards(client)
            letters = list_dead_letters(
                client, group=None if event_ids else group or group_name(kind,
                                                                         sink.destination),
                event_ids=event_ids, limit=limit)
            result = replay(client, sink, letters)
        except REDIS_ERRORS as exc:
            raise click.ClickException(urls.unavailable(exc, redis_url)) from exc
        except ShardsMismatch as exc:
            raise shards_mismatch(exc, redis_url) from None
    click.echo(f"replayed {len(letters)} dead letter(s): {result.delivered} delivered, "
               f"{result.rejected} refused again, {result.unresolved} not delivered"
               + (f" ({result.retry_reason})" if result.retry_reason else ""))
    if result.rejected or result.unresolved:
        raise SystemExit(1)


def _standalone() -> click.Group:
    group = click.Group("kong-credits", help="The forwarder and DLQ commands of kong-credits.")
    group.add_command(forwarder_command)
    group.add_command(dlq_command)
    return group


if __name__ == "__main__":
    _standalone()(prog_name="kong-credits")
