"""`kong-credits`: the command line. Each command parses, calls one library function, prints."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
import redis

from . import __version__, wallets
from .errors import InvalidInput, RedisUnavailable
from .redact import mask_url
from .redis_url import redis_client, unavailable
from .schema import DEFAULT_REDIS_URL, REDIS_URL_ENV
from .shards import ShardsMismatch, check_shards

F = TypeVar("F", bound=Callable[..., Any])



def redis_url_option(command: F) -> F:
    return click.option(
        "--redis-url", envvar=REDIS_URL_ENV, default=DEFAULT_REDIS_URL, show_default=True,
        help=f"Redis holding the wallets (env {REDIS_URL_ENV}).",
    )(command)


def _client(redis_url: str) -> redis.Redis:
    """A redis-py client for any URL form (redis_url.py); a malformed URL exits 2. The
    deployment's shard count is checked first (shards.py): a wallet written under another
    count would be invisible to the plugin, so a mismatch exits 1."""
    try:
        client = redis_client(redis_url, socket_timeout=5, socket_connect_timeout=5)
    except InvalidInput as exc:  # its message masks the password
        raise click.BadParameter(str(exc), param_hint="--redis-url") from None
    try:
        _run(lambda: check_shards(client, mask_url(redis_url)))
    except ShardsMismatch as exc:
        raise click.ClickException(str(exc)) from None
    return client


def _run(action: Callable[[], Any]) -> Any:
    """Translate library errors into click's: bad input exits 2, Redis trouble exits 1."""
    try:
        return action()
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from exc
    except (redis.ConnectionError, redis.TimeoutError, RedisUnavailable) as exc:
        context = click.get_current_context(silent=True)
        url = context.params.get("redis_url") if context else None
        raise click.ClickException(unavailable(exc, url)) from exc


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=None, separators=(",", ":")))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kong-credits")
def main() -> None:
    """Prepaid credits, rate limits and metering for Kong."""


@main.command()
@click.argument("wallet")
@click.argument("amount")
@click.option("--grant-id", help="Idempotency key: a repeated id changes nothing.")
@click.option("--priority", type=click.IntRange(0, wallets.MAX_PRIORITY),
              default=wallets.DEFAULT_PRIORITY, show_default=True,
              help="Lower burns first.")
@click.option("--expires-at", help="ISO 8601 with timezone, e.g. 2027-01-01T00:00:00Z.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@redis_url_option
def grant(wallet: str, amount: str, grant_id: str | None, priority: int,
          expires_at: str | None, as_json: bool, redis_url: str) -> None:
    """Add AMOUNT credits (a positive integer) to WALLET."""
    client = _client(redis_url)
    created, gid, balance = _run(lambda: wallets.grant(
        client, wallet, amount, grant_id=grant_id, priority=priority, expires_at=expires_at))
    if as_json:
        _echo_json({"wallet": wallet, "grant_id": gid, "created": created, "balance": balance})
    elif created:
        click.echo(f"granted {amount} credits to {wallet} (grant {gid}); balance {balance}")
    else:
        click.echo(f"grant {gid} already exists: nothing changed; balance {balance}")


@main.command()
@click.argument("wallet")
@click.option("--json", "as_json", is_flag=True, help="Print the wallet as JSON.")
@redis_url_option
def balance(wallet: str, as_json: bool, redis_url: str) -> None:
    """Show WALLET's balance and grants (an unknown wallet has balance 0)."""
    view = _run(lambda: wallets.balance(_client(redis_url), wallet))
    if as_json:
        _echo_json(view.to_json())
        return
    click.echo(f"{view.wallet}: {view.balance} credits")
    if view.burn_rate_per_minute:
        click.echo(f"  burning {view.burn_rate_per_minute:g} credits/minute; empty around "
                   f"{view.projected_empty_at}")
    if view.abuse_suspected:
        click.echo("  unusual spending suspected (see kong-credits alerts)")
    if view.overdraft:
        click.echo(f"  overdraft (unpaid settles): {view.overdraft}")
    for g in view.grants:
        expiry = f", expires {g.expires_at}" if g.expires_at else ""
        click.echo(f"  {g.id}: {g.remaining}/{g.amount} left, priority {g.priority}{expiry}"
                   f" [{g.status}]")


_OFF = "off"


def _change(value: Any) -> Any:
    """An option left out changes nothing; `off` removes the setting."""
    if value is None:
        return wallets.UNCHANGED
    return None if value == _OFF else value


class _CapType(click.ParamType):
    """A cap: a positive whole number of credits, or `off` to remove it."""

    name = "CREDITS|off"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int) or value == _OFF:
            return value
        if str(value).lower() == _OFF:
            return _OFF
        try:
            return wallets.parse_amount(value, param.name.replace("_", " ") if param else "cap")
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


class _PercentagesType(click.ParamType):
    name = "PCT,PCT,..."

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        if not all(p.isdigit() and 1 <= int(p) <= 100 for p in parts):
            self.fail(f"expected whole percentages 1..100 separated by commas, not {value!r}",
                      param, ctx)
        return tuple(int(p) for p in parts)


@main.command()
@click.argument("wallet")
@click.option("--daily-cap", type=_CapType(),
              help="Most credits spent per calendar day (UTC); 'off' removes it.")
@click.option("--monthly-cap", type=_CapType(),
              help="Most credits spent per calendar month (UTC); 'off' removes it.")
@click.option("--soft/--hard", "soft", default=None,
              help="Soft caps only alert; hard caps refuse with 402 (the default).")
@click.option("--member-daily-cap", type=_CapType(),
              help="For a wallet parent/member: most it may draw from the parent a day.")
@click.option("--member-monthly-cap", type=_CapType(),
              help="For a wallet parent/member: most it may draw from the parent a month.")
@click.option("--alert-at", type=_PercentagesType(),
              help="Used-share thresholds that raise an alert [default: 50,75,90,100].")
@click.option("--low-balance", type=_CapType(),
              help="Alert low_balance when the balance falls below this many credits (once "
                   "per crossing, re-armed by a top-up); 'off' removes it.")
@click.option("--json", "as_json", is_flag=True, help="Print the budget as JSON.")
@redis_url_option
def budget(wallet: str, daily_cap: Any, monthly_cap: Any, soft: Any, member_daily_cap: Any,
           member_monthly_cap: Any, alert_at: Any, low_balance: Any, as_json: bool,
           redis_url: str) -> None:
    """Show or change WALLET's spending caps, member caps and alert thresholds."""
    from .plans import low_balance_of, set_low_balance

    client = _client(redis_url)
    result = _run(lambda: wallets.set_budget(
        client, wallet, daily_cap=_change(daily_cap),
        monthly_cap=_change(monthly_cap), soft=_change(soft),
        member_daily_cap=_change(member_daily_cap),
        member_monthly_cap=_change(member_monthly_cap), alert_thresholds=_change(alert_at)))
    if low_balance is not None:
        _run(lambda: set_low_balance(client, wallet, _change(low_balance)))
    threshold = _run(lambda: low_balance_of(client, wallet))
    if as_json:
        _echo_json({"wallet": wallet, **asdict(result), "low_balance": threshold})
        return
    def show(cap: int | None) -> str:
        return "none" if cap is None else str(cap)

    click.echo(f"{wallet}: daily cap {show(result.daily_cap)}, monthly cap "
               f"{show(result.monthly_cap)} ({'soft' if result.soft else 'hard'}); member caps "
               f"{show(result.member_daily_cap)}/day {show(result.member_monthly_cap)}/month; "
               f"alerts at {','.join(map(str, result.alert_thresholds))}% used"
               + (f", below {threshold} credits" if threshold is not None else ""))


@main.command()
@click.argument("wallet")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON list.")
@redis_url_option
def ledger(wallet: str, limit: int, as_json: bool, redis_url: str) -> None:
    """Show WALLET's recent grants, charges, refunds and expiries, newest first."""
    entries = _run(lambda: wallets.ledger(_client(redis_url), wallet, limit))
    if as_json:
        _echo_json(entries)
        return
    for e in entries:
        click.echo(f"{e['at']}  {e['type']:<7} {e['amount']:>+12}  balance {e['balance']:>12}"
                   f"  {e['ref']}")


@main.command()
@click.option("--redis-url", envvar=REDIS_URL_ENV, default=None,
              help="Use this Redis instead of starting an embedded one.")
@click.option("--kong-yml", type=click.Path(exists=True, dir_okay=False),
              help="The declarative config to serve (default: the demo's own, a copy of "
                   "kong/kong.yml shipped in the package).")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT for the HTTP listener (port 0: any free port).")
@click.option("--keep-running", is_flag=True,
              help="After the traffic, keep everything up for manual curl until Ctrl-C.")
def demo(redis_url: str | None, kong_yml: str | None, listen: str, keep_running: bool) -> None:
    """Run Redis, the plugin server, the Kong-protocol host and an upstream; send traffic."""
    import contextlib

    from .demo import DemoOptions, demo_file, redis_for_demo, run_demo, stop_on_signals
    from .redis_routing import lane_from_url

    if redis_url:
        try:  # the plugin's own check
            lane_from_url(redis_url)
        except InvalidInput as exc:
            raise click.BadParameter(str(exc), param_hint="--redis-url") from None
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_on_signals())
        path = Path(kong_yml) if kong_yml else stack.enter_context(demo_file("kong.yml"))
        pricing = stack.enter_context(demo_file("pricing.yaml"))
        url = stack.enter_context(redis_for_demo(redis_url))
        run_demo(url, DemoOptions(path, listen, keep_running, pricing))


def _register_subcommands() -> None:
    from .admin.command import admin_command
    from .forwarder.alerts_cli import alerts_command
    from .forwarder.cli import dlq_command, forwarder_command
    from .host.command import host_command
    from .payments.replay_cli import stripe_command
    from .plans_cli import plan_command
    from .pluginserver.command import pluginserver_command
    from .pricing.command import prices_command, render_config_command
    from .spool.cli import spool_command
    from .usage.cli import usage_command
    from .void_cli import void_command

    main.add_command(pluginserver_command)
    main.add_command(host_command)
    main.add_command(forwarder_command)
    main.add_command(dlq_command)
    main.add_command(alerts_command)
    main.add_command(admin_command)
    main.add_command(usage_command)
    main.add_command(void_command)
    main.add_command(stripe_command)
    main.add_command(render_config_command)
    main.add_command(prices_command)
    main.add_command(plan_command)
    main.add_command(spool_command)


_register_subcommands()
