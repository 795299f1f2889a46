"""Fixtures of the dashboard's browser tests: one Chromium and one seeded admin per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_server import run_admin
from chromium_browser import forget_session, start_chromium
from dashboard_data import KONG_YML, DashboardData, drain_into_usage_store, seed
from selenium import webdriver

from kong_credits.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardData]:
    """`kong-credits admin` over 30 days of wallets, on a Redis of its own (other tests flush
    theirs), with the usage store the usage forwarder filled from the same events."""
    workdir = tmp_path_factory.mktemp("dashboard")
    store_url = f"sqlite:///{workdir}/usage.db"
    with EmbeddedRedis() as server:
        seeded = seed(server.url)
        drain_into_usage_store(server.url, store_url)
        with run_admin(server.url, workdir, "--kong-yml", str(KONG_YML),
                       "--store", store_url) as admin:
            yield seeded.with_base_url(admin.url)


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each view's screenshot goes (and timings.txt): look at them."""
    return tmp_path_factory.mktemp("dashboard-screenshots")


@pytest.fixture
def browser(chromium: webdriver.Chrome, dashboard: DashboardData) -> webdriver.Chrome:
    """The session's browser at desktop size, no session storage left, console log read."""
    chromium.set_window_size(1280, 800)
    forget_session(chromium, dashboard.base_url)
    chromium.get_log("browser")
    return chromium
