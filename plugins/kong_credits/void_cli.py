"""`kong-credits void`: take back what remains of a grant."""

from __future__ import annotations

import click

from . import wallets
from .cli import _client, _echo_json, _run, redis_url_option
from .errors import GrantNotFound

__all__ = ["void_command"]


@click.command("void", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("wallet")
@click.argument("grant_id")
@click.option("--amount", help="Void at most this many credits (default: all that is left).")
@click.option("--reason", default="void", show_default=True,
              help="Written to the ledger entry.")
@click.option("--void-key", help="Idempotency key: a repeated key changes nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@redis_url_option
def void_command(wallet: str, grant_id: str, amount: str | None, reason: str,
                 void_key: str | None, as_json: bool, redis_url: str) -> None:
    """Void GRANT_ID of WALLET: its remaining credits leave the balance.

    Credits already spent cannot be taken back: they are recorded in the ledger as the
    shortfall. Exits 1 when the wallet has no such grant, 2 on bad input.
    """
    client = _client(redis_url)
    try:
        result = _run(lambda: wallets.void_grant(client, wallet, grant_id, amount=amount,
                                                 reason=reason, void_key=void_key))
    except GrantNotFound as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _echo_json(result.to_json())
        return
    if result.replayed:
        click.echo(f"void key {void_key} was used already: nothing changed")
    shortfall = f", {result.shortfall} already spent" if result.shortfall else ""
    click.echo(f"voided {result.voided} credits of {grant_id} from {wallet}{shortfall}; "
               f"{result.remaining} left in the grant; balance {result.balance}")
