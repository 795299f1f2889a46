"""The dashboard: `GET /` and its static assets, served from inside the package.

The page is plain HTML, CSS and JavaScript modules (no build step, no CDN, no Node at run
time) plus the uPlot charting library committed under `static/vendor/` (see its NOTICE).
Everything here is open without a token: the page holds no data, and every call it makes to
`/v1/...` carries the bearer token the viewer signed in with (kept in sessionStorage, never a
cookie), so the API's own authentication decides what each viewer sees.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "STATIC_DIR", "mount_dashboard"]

STATIC_DIR = Path(__file__).with_name("static")
ASSETS_PATH = "/dashboard"
"""Where the assets are served: apart from `/docs`' own assets and the `/v1` API."""

SECURITY_HEADERS = {
    # Only our own scripts run: a wallet or route name can never become code on the page.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at `/` and its assets under `/dashboard/` on `app`."""
    index_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    def dashboard_page() -> HTMLResponse:
        return HTMLResponse(index_html, headers=SECURITY_HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        # Browsers ask every page of the origin for it (/docs, /healthz too).
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.get(ASSETS_PATH, include_in_schema=False)
    def dashboard_root() -> RedirectResponse:
        return RedirectResponse("/")

    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="dashboard")
