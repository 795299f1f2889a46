"""Payments to credits: Stripe events turned into grants and voids, independent of HTTP.

`stripe_events.verify_event` checks a webhook's signature with the `stripe` package;
`stripe_events.apply_event` maps a verified event to a grant (`checkout.session.completed`,
`checkout.session.async_payment_succeeded`, `invoice.paid`) or a void (`charge.refunded`)
through `kong_credits.wallets`, the same money path as the CLI. Amounts come from metadata or
from Stripe's API (`catalog.StripeCatalog`); every step is idempotent by the Stripe object's
id, so a redelivered, concurrent or replayed event changes nothing twice.
"""
