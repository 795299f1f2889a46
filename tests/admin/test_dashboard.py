"""The dashboard in a real headless Chromium against a real `kong-credits admin` and Redis.

What a person does: sign in with a token, read the wallets table and a wallet's view, and
find that a wallet token opens its own wallet and its members, no other, and not once revoked.
Each view's screenshot is saved under the pytest temp dir (`shots`): look at them.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from admin_server import ADMIN_TOKEN
from chromium_browser import (
    PHONE,
    VIEWER_TIME_ZONE,
    canvas_drawn,
    console_errors,
    screenshot,
    sign_in,
    text,
    wait_for,
    wait_loaded,
)
from dashboard_data import api, record_render_time, shown
from selenium.webdriver.common.by import By

pytestmark = pytest.mark.timeout(120)


def test_the_page_and_its_assets_need_no_token_and_carry_a_strict_policy(dashboard):
    page = httpx.get(dashboard.base_url + "/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)  # no CDN
    assets = re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', page.text)
    assert len(assets) == 5  # uPlot's script and stylesheet, ours, the icon
    for asset in assets:
        assert httpx.get(dashboard.base_url + asset, timeout=10).status_code == 200, asset
    assert "set-cookie" not in page.headers


def test_operator_view_shows_every_wallet_with_the_apis_figures(browser, dashboard, shots):
    sign_in(browser, dashboard.base_url, ADMIN_TOKEN)
    wait_loaded(browser)
    record_render_time(shots, f"operator view, {dashboard.wallet_count} wallets", browser)
    screenshot(browser, shots / "operator.png")
    assert text(browser, "#wallet-count") == shown(dashboard.wallet_count)  # all 1,004, paged
    rows = "return document.querySelectorAll('#wallets tbody tr').length"
    assert browser.execute_script(rows) == 200
    browser.find_element(By.ID, "more").click()
    assert browser.execute_script(rows) == 400
    browser.find_element(By.XPATH, "//th/button[starts-with(text(), 'Balance')]").click()
    assert browser.find_element(By.CSS_SELECTOR, "#wallets tbody td a").text in (
        "acme/alice", "acme/bob")  # lowest balance first now
    other = api(dashboard, "/v1/wallets/other")
    refused = browser.find_element(By.XPATH, "//*[@id='wallets']//tr[td/a[text()='other']]").text
    assert other["refused_credits"] == 3 and f" {shown(other['refused_credits'])} " in refused

    browser.find_element(By.ID, "prefix").send_keys("acme")
    wait_for(browser, "return document.querySelector('#wallet-count').textContent === '3'")
    acme = api(dashboard, "/v1/wallets/acme")
    row = browser.find_element(By.XPATH, "//*[@id='wallets']//tr[td/a[text()='acme']]").text
    assert row.startswith(f"acme {shown(acme['balance'])} ")
    assert f" {shown(acme['refused_budget'])} " in row and acme["refused_budget"] > 0
    browser.find_element(By.ID, "prefix").send_keys("/")
    wait_for(browser, "return document.querySelector('#wallet-count').textContent === '2'")
    names = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#wallets td a")}
    assert names == {"acme/alice", "acme/bob"}
    assert console_errors(browser) == []


def test_wallet_view_shows_the_apis_balance_and_draws_its_charts(browser, dashboard, shots):
    sign_in(browser, dashboard.base_url, ADMIN_TOKEN)
    wait_loaded(browser)
    browser.get(dashboard.base_url + "/#/wallet/acme")
    wait_loaded(browser)
    screenshot(browser, shots / "wallet.png")
    acme = api(dashboard, "/v1/wallets/acme")
    assert text(browser, "#balance") == shown(acme["balance"])
    assert acme["balance"] > 9_999  # so a separator is seen
    assert canvas_drawn(browser, "#balance-chart")
    grants = text(browser, "#view")
    assert all(g["id"] in grants for g in acme["grants"])
    [welcome] = [g for g in acme["grants"] if g["id"] == "welcome"]
    assert "alice" in text(browser, "#team-members")
    prices = text(browser, "#prices")
    for row in api(dashboard, "/v1/prices"):
        assert f"{row['route']} {row['service']} any {row['path']}" in prices
    # Times in the viewer's zone, the UTC time on hover; the token in sessionStorage only.
    expiry = browser.find_element(By.CSS_SELECTOR, f"time[datetime='{welcome['expires_at']}']")
    moment = datetime.fromisoformat(welcome["expires_at"])
    assert expiry.text == moment.astimezone(ZoneInfo(VIEWER_TIME_ZONE)).strftime(
        "%b %-d, %Y, %I:%M %p")
    assert expiry.get_attribute("title") == f"{moment:%Y-%m-%d %H:%M:%S} UTC"
    assert browser.get_cookies() == []
    assert console_errors(browser) == []


def test_a_wallet_token_opens_its_wallet_and_no_other(browser, dashboard, shots):
    token, token_id = dashboard.wallet_token("acme")
    sign_in(browser, dashboard.base_url, token, "acme")
    wait_loaded(browser)
    acme = api(dashboard, "/v1/wallets/acme")
    assert text(browser, "#balance") == shown(acme["balance"])
    assert not browser.find_element(By.ID, "nav-wallets").is_displayed()
    assert console_errors(browser) == []

    # Its team's member, one click away; then a wallet outside the team.
    browser.find_element(By.LINK_TEXT, "alice").click()
    wait_for(browser, "return document.getElementById('wallet-name')?.textContent === 'acme/alice'"
                      " && document.getElementById('view').dataset.loaded === '1'")
    alice = api(dashboard, "/v1/wallets/acme/alice", token)
    assert text(browser, "#balance") == shown(alice["balance"])

    browser.get(dashboard.base_url + "/#/wallet/other")
    wait_for(browser, "return !document.getElementById('message').hidden")
    assert "cannot open wallet “other”" in text(browser, "#message")
    assert browser.find_elements(By.ID, "balance") == []
    screenshot(browser, shots / "refused.png", full_height=False)
    # The only console entry is the refused request itself.
    errors = console_errors(browser)
    assert errors and all("403" in e["message"] for e in errors), errors

    # Revoked while signed in: the next view asks for a token again and forgets this one.
    httpx.delete(f"{dashboard.base_url}/v1/wallets/acme/tokens/{token_id}", timeout=10,
                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).raise_for_status()
    browser.get(dashboard.base_url + "/#/wallet/acme")
    wait_for(browser, "return document.getElementById('sign-in-error').textContent")
    assert "sign in again" in text(browser, "#sign-in-error")
    assert browser.execute_script("return sessionStorage.length") == 0
    assert all("401" in e["message"] for e in console_errors(browser))


def test_a_bad_token_is_refused_at_sign_in(browser, dashboard):
    sign_in(browser, dashboard.base_url, "not-a-token")
    wait_for(browser, "return document.getElementById('sign-in-error').textContent")
    assert text(browser, "#sign-in-error") == "That token is not valid."
    assert browser.execute_script("return sessionStorage.length") == 0
    assert all("401" in e["message"] for e in console_errors(browser))


def test_the_wallet_view_fits_a_phone(browser, dashboard, shots):
    sign_in(browser, dashboard.base_url, ADMIN_TOKEN, "acme")
    wait_loaded(browser)
    browser.set_window_size(*PHONE)
    wait_for(browser, "return document.getElementById('balance-chart').chart.width < 400")
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    screenshot(browser, shots / "wallet-phone.png")
    assert console_errors(browser) == []
