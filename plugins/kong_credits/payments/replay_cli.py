"""`kong-credits stripe replay FILE.json`: apply a saved Stripe event by hand."""

from __future__ import annotations

import json
from typing import IO

import click

from ..cli import _client, _echo_json, _run, redis_url_option
from .catalog import StripeCatalog, StripeUnavailable
from .settings import StripeSettings
from .stripe_events import StripePayments

__all__ = ["stripe_command"]


@click.group("stripe", context_settings={"help_option_names": ["-h", "--help"]})
def stripe_command() -> None:
    """Stripe payments to credits (the webhook is served by the admin API)."""


@stripe_command.command("replay")
@click.argument("event_file", metavar="FILE.json", type=click.File("rb"))
@redis_url_option
def replay_command(event_file: IO[bytes], redis_url: str) -> None:
    """Apply a saved Stripe event (e.g. from the Dashboard, past Stripe's retry window)
    through the webhook's code: what was applied already changes nothing.

    No signature is checked: whoever can run this can grant anyway. Prints the outcome as
    JSON. Exits 2 when FILE.json is no Stripe event, 1 when Redis or Stripe's API fails.
    """
    try:
        event = json.loads(event_file.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"{event_file.name} is not JSON: {exc}") from None
    settings = _run(StripeSettings.from_env)
    payments = StripePayments(_client(redis_url), StripeCatalog(settings))
    try:
        outcome = _run(lambda: payments.apply(event))
    except StripeUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    _echo_json(outcome.to_json())
