"""Debian's headless Chromium driven by Selenium through the system chromedriver.

One browser per test session (it takes a second or two to start); each test opens its pages
in it and reads the browser's console log, which Selenium empties on every read.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

VIEWER_TIME_ZONE = "Asia/Kolkata"
"""The browser's zone: UTC+05:30, so a time shown in UTC by mistake cannot pass for local."""
DESKTOP = (1280, 800)
PHONE = (390, 844)
WAIT_S = 15

CANVAS_HAS_PIXELS = """
const canvas = document.querySelector(arguments[0] + ' canvas');
if (!canvas || !canvas.width || !canvas.height) return false;
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) return true;
return false;
"""


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (p for p in (f"/usr/bin/{name}", f"/usr/lib/chromium/{name}") if Path(p).exists()),
            None)
        if found:
            return found
    raise RuntimeError(f"none of {names} is installed (apt-get install chromium chromium-driver)")


def start_chromium() -> webdriver.Chrome:
    """Headless Chromium at 1280x800 that keeps every console message for `console_errors`."""
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-extensions", "--no-first-run", "--lang=en-US",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(_binary("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": VIEWER_TIME_ZONE})
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The SEVERE console entries since the last read (JavaScript errors, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(driver: webdriver.Chrome, script: str, *args: Any) -> Any:
    """Run `script` until it returns something truthy; that value."""
    return WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(script, *args))


def wait_loaded(driver: webdriver.Chrome, selector: str = "#view") -> None:
    """Until the element's data-loaded is "1": the dashboard sets it when a view has drawn."""
    wait_for(driver, "const e = document.querySelector(arguments[0]);"
                     "return e && e.dataset.loaded === '1';", selector)


def forget_session(driver: webdriver.Chrome, base_url: str) -> None:
    """Empty the origin's sessionStorage from a page that runs no script (`/healthz`), so no
    view still loading with the old token sees it vanish."""
    driver.get(base_url + "/healthz")
    driver.execute_script("sessionStorage.clear();")


def sign_in(driver: webdriver.Chrome, base_url: str, token: str, wallet: str = "") -> None:
    """Open the page with a fresh session, fill in the sign-in form and submit it."""
    forget_session(driver, base_url)
    driver.get(base_url + "/")
    driver.find_element(By.ID, "token").send_keys(token)
    if wallet:
        driver.find_element(By.ID, "sign-in-wallet").send_keys(wallet)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()


def canvas_drawn(driver: webdriver.Chrome, selector: str) -> bool:
    return bool(driver.execute_script(CANVAS_HAS_PIXELS, selector))


def text(driver: webdriver.Chrome, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text


def screenshot(driver: webdriver.Chrome, path: Path, *, full_height: bool = True) -> Path:
    """A PNG of the page; `full_height` grows the window to the page's height first."""
    size = driver.get_window_size()
    width, height = size["width"], size["height"]
    if full_height:
        page = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, max(height, min(page + 140, 6000)))
    driver.save_screenshot(str(path))
    driver.set_window_size(width, height)
    return path


BUSIEST_BUCKET_X = """
const u = document.querySelector(arguments[0]).chart;
const [starts, credits] = u.data;
const i = credits.indexOf(Math.max(...credits));
const end = i + 1 < starts.length ? starts[i + 1] : u.scales.x.max;
return Math.round(u.valToPos((starts[i] + end) / 2, 'x'));
"""


def click_busiest_bucket(driver: webdriver.Chrome, selector: str) -> None:
    """Click, with the mouse, the middle of the bar of the bucket with the most credits."""
    x = driver.execute_script(BUSIEST_BUCKET_X, selector)
    over = driver.find_element(By.CSS_SELECTOR, f"{selector} .u-over")
    size = over.size
    # Selenium's offsets count from the element's centre; the bar's foot is surely drawn.
    ActionChains(driver).move_to_element_with_offset(
        over, x - size["width"] // 2, size["height"] // 2 - 3).click().perform()
