"""`create_app(settings)`: the admin API as one FastAPI application.

What a router may rely on (other routers, e.g. payment webhooks, are added with
`app.include_router(...)` and read these from `request.app.state`):

    app.state.settings     AdminSettings
    app.state.redis        blocking redis-py client of settings.redis_url: pass it to the
                           engine (wallets.grant, ...); sync endpoints run in a thread pool
    app.state.metrics      AdminMetrics (Prometheus registry of this app)
    app.state.usage_store  UsageStore of settings.store_url, or None (no usage endpoints)
    app.state.store_check  None, or a callable raising when the usage store is unreachable
    app.state.route_names  RouteNames from settings.kong_yml (empty without it)

Routes are matched in the order they are added: `/v1/wallets/{wallet:wallet}` comes last among
the wallet routes, and the dashboard's catch-all `/` after everything (see `_ROUTERS`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from ..redis_url import redis_client
from . import (
    problems,
    routes_grants,
    routes_plans,
    routes_prices,
    routes_system,
    routes_tokens,
    routes_usage,
    routes_wallets,
    stripe_webhook,
)
from .dashboard import mount_dashboard
from .metrics import AdminMetrics, MetricsMiddleware
from .openapi import document, errors
from .route_names import RouteNames
from .settings import AdminSettings
from .usage_store import UsageStore
from .wallet_param import EncodedSlashes

__all__ = ["create_app"]

DESCRIPTION = """Manage kong-credits wallets over HTTP: grants, balances, budgets, ledgers,
alerts and read-only wallet tokens. Send `Authorization: Bearer <token>`: an admin token
(`$KONG_CREDITS_ADMIN_TOKEN`) or a wallet token. Errors are RFC 9457 problem details."""

TAGS = [
    {"name": "wallets", "description": "Balances, the wallet list, ledgers, alerts, budgets."},
    {"name": "grants", "description": "Adding credits, safe to retry."},
    {"name": "tokens", "description": "Read-only wallet tokens for customers' dashboards."},
    {"name": "plans", "description": "Recurring allowances and overage terms."},
    {"name": "usage", "description": "Requests and credits over time, from the usage store."},
    {"name": "prices", "description": "What each route costs, from --kong-yml."},
    {"name": "system", "description": "Health and Prometheus metrics."},
    {"name": "webhooks", "description": "Stripe's events, verified by their signature."},
]
"""The docs' section order (a router's `tags` names its section)."""

_ROUTERS = (routes_system.router, routes_prices.router, routes_tokens.router,
            routes_grants.router, routes_plans.router, routes_wallets.router)
"""In matching order: every `/v1/wallets/{wallet:wallet}/<thing>` before the bare wallet."""


def create_app(settings: AdminSettings) -> FastAPI:
    """The application; nothing connects until the first request. InvalidInput when
    `settings.kong_yml` cannot be read."""
    route_names = RouteNames.load(settings.kong_yml) if settings.kong_yml else RouteNames()
    client = redis_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=5,
                          health_check_interval=30)

    usage_store = UsageStore(settings.store_url) if settings.store_url else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        client.close()
        if usage_store is not None:
            usage_store.close()

    app = FastAPI(title="kong-credits admin API", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, lifespan=lifespan, openapi_tags=TAGS)
    app.state.settings = settings
    app.state.redis = client
    app.state.metrics = AdminMetrics()
    app.state.usage_store = usage_store
    app.state.store_check = usage_store.check if usage_store else None
    app.state.route_names = route_names
    problems.install(app)
    for router in _ROUTERS:
        app.include_router(router)
    if usage_store is not None:
        app.include_router(routes_usage.router)
    # Authenticated by Stripe's signature, not a bearer token (payments/stripe_events.py).
    app.include_router(stripe_webhook.router, tags=["webhooks"],
                       responses=errors(400, 413, 500, 502, 503))
    app.mount(routes_system.DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)),
              name="docs-assets")
    # The dashboard mounts here: after every API route, as its `/` catches the rest.
    mount_dashboard(app)
    app.openapi = document(app)  # type: ignore[method-assign]
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(EncodedSlashes)  # outermost: routing must see the raw path's `%2F`
    return app
