"""The dashboard's usage views in a real headless Chromium: series, range picker, drill-down.

The usage comes from the usage store the session's admin was started with (`--store`), filled
from the same events that charged the wallets (dashboard_data.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from admin_server import ADMIN_TOKEN
from chromium_browser import (
    canvas_drawn,
    click_busiest_bucket,
    console_errors,
    screenshot,
    sign_in,
    text,
    wait_for,
    wait_loaded,
)
from dashboard_data import api, record_render_time, shown
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

pytestmark = pytest.mark.timeout(120)


def test_a_wallet_view_of_30_days_by_hour_draws_every_hour(browser, dashboard, shots):
    sign_in(browser, dashboard.base_url, ADMIN_TOKEN)
    wait_loaded(browser)
    browser.get(dashboard.base_url + "/#/wallet/acme?range=30d")
    wait_loaded(browser)
    chart = browser.find_element(By.ID, "usage-chart")
    assert chart.get_attribute("data-bucket") == "hour"
    assert chart.get_attribute("data-buckets") in ("720", "721")
    assert canvas_drawn(browser, "#usage-chart")
    record_render_time(shots, "wallet view, 30 days by hour, every panel", browser)
    assert console_errors(browser) == []


def test_range_picker_and_drill_down_change_what_is_shown(browser, dashboard, shots):
    sign_in(browser, dashboard.base_url, ADMIN_TOKEN, "acme")
    wait_loaded(browser)
    chart = browser.find_element(By.ID, "usage-chart")
    assert chart.get_attribute("data-bucket") == "hour"
    assert chart.get_attribute("data-buckets") in ("168", "169")  # 7 days of hours

    Select(browser.find_element(By.ID, "range")).select_by_value("30d")
    wait_loaded(browser, "#usage")
    assert chart.get_attribute("data-buckets") in ("720", "721")
    month_total = text(browser, "#usage-summary")
    Select(browser.find_element(By.ID, "range")).select_by_value("90d")
    wait_loaded(browser, "#usage")
    assert chart.get_attribute("data-bucket") == "day"
    assert text(browser, "#usage-summary") != month_total

    # Click the busiest day: its hours replace the days.
    click_busiest_bucket(browser, "#usage-chart")
    wait_for(browser, "return document.getElementById('usage-chart').dataset.bucket === 'hour'"
                      " && document.getElementById('usage').dataset.loaded === '1'")
    assert chart.get_attribute("data-buckets") == "24"
    assert "\u203a" in text(browser, "#drill-path")  # the breadcrumb separator
    assert canvas_drawn(browser, "#usage-chart")

    # Click the busiest hour: the requests behind it.
    click_busiest_bucket(browser, "#usage-chart")
    wait_loaded(browser, "#events")
    rows = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    assert rows and all("/v1/" in row.text for row in rows)
    screenshot(browser, shots / "drill-down.png")
    assert console_errors(browser) == []




def test_usage_by_endpoint_and_method_equal_the_apis(browser, dashboard):
    sign_in(browser, dashboard.base_url, ADMIN_TOKEN, "acme")
    wait_loaded(browser)
    usage = browser.find_element(By.ID, "usage")
    window = {"wallet": "acme", "members": "true", "bucket": "hour",
              "since": usage.get_attribute("data-since"),
              "until": usage.get_attribute("data-until")}
    for dim, panel in (("route", "#by-route"), ("method", "#by-method")):
        totals: dict[str, int] = {}
        for row in api(dashboard, "/v1/usage", by=dim, **window)["rows"]:
            name = row.get(f"{dim}_name") or row[dim]  # kong.yml's route name, not its id
            totals[name] = totals.get(name, 0) + row["credits"]
        lines = text(browser, panel).splitlines()[1:]  # below the heading row
        assert len(lines) == len(totals)
        for (name, credits), line in zip(
                sorted(totals.items(), key=lambda kv: -kv[1]), lines, strict=True):
            assert line.startswith(f"{name} {shown(credits)} "), (line, name, credits)
    assert console_errors(browser) == []


def test_top_spenders_today_are_the_apis(browser, dashboard):
    sign_in(browser, dashboard.base_url, ADMIN_TOKEN)
    wait_loaded(browser)
    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    rows = api(dashboard, "/v1/usage", by="wallet", bucket="day", since=today)["rows"]
    top = max(rows, key=lambda row: row["credits"])
    first = text(browser, "#top-spenders tbody tr")
    assert first.startswith(f"{top['wallet']} {shown(top['credits'])}")
    assert console_errors(browser) == []
