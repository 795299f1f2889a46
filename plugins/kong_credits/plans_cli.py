"""`kong-credits plan`: show, set or stop a wallet's plan and overage terms."""

from __future__ import annotations

from typing import Any

import click

from . import plans
from .cli import _client, _echo_json, _run, redis_url_option
from .money import MAX_PRIORITY

__all__ = ["plan_command"]


def _given(value: Any) -> Any:
    return plans.UNCHANGED if value is None else value


def describe(view: plans.PlanView) -> list[str]:
    """The plan as lines of text for people."""
    plan, overage = view.plan, view.overage
    lines = [f"{view.wallet}: no plan" if plan is None else
             f"{view.wallet}: {plan.allowance} credits every {plan.every}, aligned to "
             f"{plan.anchor}; rollover up to {plan.rollover_max}; priority {plan.priority}"]
    if view.period:
        period = view.period
        lines.append(f"  period {period['start']} .. {period['end']}: {period['allowance']} "
                     f"granted + {period['rollover']} rolled over")
    lines.append("  overage: refused (402 once the credits are gone)" if overage.mode == "refuse"
                 else f"  overage: allowed up to {overage.max} credits a period "
                      f"({overage.used} used)")
    return lines


@click.command("plan", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("wallet")
@click.option("--allowance", metavar="N", help="Credits granted each period (1..10^15).")
@click.option("--every", type=click.Choice(list(plans.EVERY)), help="The period.")
@click.option("--anchor", metavar="ISO8601",
              help="ISO 8601 with timezone: periods start at its time of day, weekday or day "
                   "of month (UTC) [default: midnight, Monday, the 1st].")
@click.option("--rollover-max", metavar="M",
              help="Most unused allowance carried into the next period [default: 0, none].")
@click.option("--priority", type=click.IntRange(0, MAX_PRIORITY),
              help=f"Burn order of the allowance, lower first [default: "
                   f"{plans.DEFAULT_PLAN_PRIORITY}, before top-ups' 100].")
@click.option("--overage", type=click.Choice(plans.OVERAGE_MODES),
              help="refuse: 402 once the credits are gone (default). allow: keep serving on "
                   "credit up to --overage-max credits a period.")
@click.option("--overage-max", metavar="N",
              help="With --overage allow: credits a period served on credit.")
@click.option("--from", "from_file", type=click.Path(dir_okay=False),
              help="Set the plan WALLET has in this pricing file's `plans` section "
                   "(config/pricing.yaml).")
@click.option("--off", is_flag=True, help="Stop the plan (grants already made stay).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@redis_url_option
def plan_command(wallet: str, allowance: str | None, every: str | None, anchor: str | None,
                 rollover_max: str | None, priority: int | None, overage: str | None,
                 overage_max: str | None, from_file: str | None, off: bool, as_json: bool,
                 redis_url: str) -> None:
    """Show WALLET's plan, or set it: ALLOWANCE credits every day, week or month.

    Each period's first request (or balance read) grants the allowance, expiring at the
    period's end; unused allowance rolls over up to --rollover-max. Options left out are
    unchanged; a change applies from the next period.
    """
    terms = (allowance, every, anchor, rollover_max, priority, overage, overage_max)
    modes = int(off) + int(from_file is not None) + int(any(v is not None for v in terms))
    if modes > 1:
        raise click.UsageError("--off and --from go alone, without terms")
    client = _client(redis_url)
    if from_file:
        view = _run(lambda: plans.apply_plan(client, wallet, from_file))
    elif off:
        view = _run(lambda: plans.remove_plan(client, wallet))
    elif any(value is not None for value in terms):
        view = _run(lambda: plans.set_plan(
            client, wallet, allowance=_given(allowance), every=_given(every),
            anchor=_given(anchor), rollover_max=_given(rollover_max),
            priority=_given(priority), overage=_given(overage),
            overage_max=_given(overage_max)))
    else:
        view = _run(lambda: plans.show_plan(client, wallet))
    if as_json:
        _echo_json(view.to_json())
    else:
        click.echo("\n".join(describe(view)))
