"""The admin HTTP API: wallets, grants, budgets, tokens and usage over HTTP, for code and the
dashboard.

A FastAPI application (`create_app`) served by uvicorn (`kong-credits admin`). Every money
write goes through the engine's functions (wallets.py, voids.py and their Lua scripts), the
same ones the CLI calls: the API adds authentication (auth.py), idempotent retries
(idempotency.py), RFC 9457 problem details (problems.py) and Prometheus metrics (metrics.py),
never a second way to move credits. One router per resource (routes_*.py, stripe_webhook.py),
models beside them (models.py).

`create_app` lives in `kong_credits.admin.app`; this package imports nothing itself, so the
CLI's other commands do not load FastAPI.
"""

__all__: list[str] = []
