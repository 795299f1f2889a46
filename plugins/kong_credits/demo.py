"""`kong-credits demo`: the whole product on one machine, with a readable summary.

Starts (unless given) an embedded Redis, then the sample upstream, the real plugin server and
the Kong-protocol host with kong/kong.yml, funds two wallets, gives a third the plan of
config/pricing.yaml, sends traffic that shows 200s, 429s, 402s and a 401 over real HTTP (and a
route priced by response size, paid from the plan's allowance, then on credit), prints what
happened, and stops everything it started: at the end, on Ctrl-C, and on SIGTERM or SIGHUP
alike (`stop_on_signals`).

The kong.yml and pricing.yaml it uses ship inside the package (`demo_data/`, copies of
kong/kong.yml and config/pricing.yaml kept equal by a test), so it runs from any directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import signal
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
import redis
import yaml

from . import plans, plans_cli, wallets
from .keys import event_streams
from .prices import declarative_prices
from .redact import mask_url
from .redis_server import EmbeddedRedis
from .redis_url import redis_client
from .schema import REDIS_URL_ENV

__all__ = ["STOP_SIGNALS", "DemoOptions", "demo_file", "redis_for_demo", "run_demo",
           "still_running_hint", "stop_on_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop the demo as Ctrl-C (SIGINT) does: everything it started is stopped."""


@dataclass(frozen=True)
class DemoOptions:
    kong_yml: Path
    listen: str = "127.0.0.1:0"
    keep_running: bool = False
    pricing: Path | None = None  # the plans to apply; the CLI passes the packaged pricing.yaml


@contextlib.contextmanager
def demo_file(name: str) -> Iterator[Path]:
    """A file of the demo's package data (`kong.yml`, `pricing.yaml`) as a path."""
    resource = importlib.resources.files(__package__) / "demo_data" / name
    with importlib.resources.as_file(resource) as path:
        yield path


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt while the demo runs, so that they
    unwind the same `with` blocks as Ctrl-C: the host, plugin server and upstream stop, the
    temporary directories go, the embedded redis-server is terminated. Their default action
    would end the process at once and leave redis-server running."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def redis_for_demo(redis_url: str | None) -> Iterator[str]:
    """The given Redis, or an embedded one that is stopped afterwards."""
    if redis_url:
        yield redis_url
        return
    with EmbeddedRedis() as server:
        click.echo(f"started Redis ({Path(server.binary).name}) on {server.url}")
        yield server.url


TRAFFIC = [
    # (who, api key, path, times): enough to hit each outcome
    ("alice", "alice-key", "/search?q=kong", 8),       # 5/s limit -> 200s, then 429s
    ("bob", "bob-key", "/generate?X-Units-Used=12", 2),  # held 20, settled 12; then 402
    ("carol", "carol-key", "/status", 2),              # free, metered
    ("dave", "dave-key", "/search?q=broke", 2),        # no credits -> 402
    ("anonymous", "", "/search", 1),                   # no key -> 401 (key-auth)
    # ~4.6 KB responses at 1 + 2/KB: 11 credits each from erin's plan (30 a month), then on
    # credit up to the plan's overage_max (10), then 402
    ("erin", "erin-key", f"/export?report={'x' * 4000}", 5),
]


async def _send_traffic(base_url: str) -> list[tuple[str, str, int, dict[str, str]]]:
    results = []
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for who, key, path, times in TRAFFIC:
            for _ in range(times):
                headers = {"apikey": key} if key else {}
                response = await client.get(path, headers=headers)
                shown = {k: v for k, v in response.headers.items()
                         if k.lower().startswith(("x-credits", "ratelimit", "retry-after"))}
                results.append((who, path[:40], response.status_code, shown))
                await asyncio.sleep(0.02)  # a metered request settles in its log phase
    return results


@contextlib.asynccontextmanager
async def _stack(redis_url: str, options: DemoOptions) -> AsyncIterator[str]:
    """Upstream, plugin server and host with its HTTP listener; yields the listener URL."""
    from .host import Host, credits_servers
    from .host.proxy import ProxyServer
    from .host.upstream import SampleUpstream, point_services_at

    upstream = SampleUpstream()
    await upstream.start()
    declarative = point_services_at(yaml.safe_load(options.kong_yml.read_text()), upstream.url)
    address, _, port = options.listen.rpartition(":")
    with tempfile.TemporaryDirectory(prefix="kc-demo-") as prefix:
        # kong.yml sets no redis_url: the plugin server reads this variable, passed through
        # the worker's cleared environment as kong.conf's nginx_main_env does in compose.
        host = Host(declarative, credits_servers(prefix),
                    nginx_main_env=[f"{REDIS_URL_ENV}={redis_url}"])
        proxy = ProxyServer(host, address, int(port))
        try:
            await host.start()
            await proxy.start()
            yield proxy.url
        finally:
            await proxy.stop()
            await host.stop()
            await upstream.stop()


def _fund(client: redis.Redis, run_id: str, pricing: Path | None) -> None:
    wallets.grant(client, "acme", 40, grant_id=f"demo-acme-{run_id}")
    wallets.grant(client, "team-blue", 30, grant_id=f"demo-team-{run_id}")
    for wallet in plans.load_plans(pricing) if pricing else ():
        plans.apply_plan(client, wallet, pricing)


def _summarise(results: list[tuple[str, str, int, dict[str, str]]], client: redis.Redis,
               events_before: int) -> None:
    click.echo("")
    for who, path, status, headers in results:
        extra = "  ".join(f"{k}: {v}" for k, v in sorted(headers.items()))
        click.echo(f"  {who:<9} GET {path:<28} -> {status}  {extra}")
    outcomes = Counter(status for _, _, status, _ in results)
    click.echo("")
    click.echo(f"{len(results)} requests: " + ", ".join(
        f"{n} x {status}" for status, n in sorted(outcomes.items())))
    for wallet in ("acme", "team-blue", "dave", "erin"):
        view = wallets.balance(client, wallet)
        click.echo(f"  wallet {wallet:<10} balance {view.balance:>3}  refused: "
                   f"{view.refused_credits} for credits, {view.refused_rate_limit} by rate limit")
    for line in plans_cli.describe(plans.show_plan(client, "erin")):
        click.echo(f"  {line}")
    events = sum(client.xlen(stream) for stream in event_streams()) - events_before
    click.echo(f"  {events} billable events appended to the event streams")


async def _run(redis_url: str, options: DemoOptions) -> Counter:
    client = redis_client(redis_url)
    events_before = sum(client.xlen(stream) for stream in event_streams())
    _fund(client, uuid.uuid4().hex[:8], options.pricing)
    async with _stack(redis_url, options) as base_url:
        _show_prices(options.kong_yml)
        click.echo(f"host with {options.kong_yml.name} on {base_url}; sending traffic")
        results = await _send_traffic(base_url)
        await asyncio.sleep(0.2)  # let the log phases settle the metered requests
        _summarise(results, client, events_before)
        if options.keep_running:
            click.echo(still_running_hint(base_url, redis_url))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
    client.close()
    return Counter(status for _, _, status, _ in results)


def _show_prices(kong_yml: Path) -> None:
    from .pricing.command import text_table

    click.echo("prices (kong-credits prices):")
    rows = declarative_prices(yaml.safe_load(kong_yml.read_text()))
    click.echo("\n".join("  " + line for line in text_table(rows).splitlines()))


def still_running_hint(base_url: str, redis_url: str) -> str:
    """What to try while the demo keeps running; the Redis URL with its password masked."""
    return (f"\nStill running. Try:\n  curl -i -H 'apikey: alice-key' {base_url}/search\n"
            f"  kong-credits balance acme --redis-url {mask_url(redis_url)}\n"
            "Ctrl-C (or SIGTERM, SIGHUP) stops everything.")


def run_demo(redis_url: str, options: DemoOptions) -> Counter:
    """Run the demo against `redis_url`; returns how many responses had each status."""
    try:
        return asyncio.run(_run(redis_url, options))
    except KeyboardInterrupt:
        return Counter()
