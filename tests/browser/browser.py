"""Headless Debian Chromium driven by Selenium through the system chromedriver.

Nothing is downloaded: the driver and browser paths are given explicitly and
Selenium Manager is kept offline (SE_OFFLINE), so a missing browser is an
error here, never a fetch.
"""

import json
import os
import shutil
import tempfile
from urllib.parse import parse_qs, urlsplit

os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("AUTHFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AUTHFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")
WIDTH, HEIGHT = 1000, 700
WAIT_SECS = 30

# Where screenshots go: target/browser-screenshots/ (each run overwrites the last)
# unless AUTHFLOW_SCREENSHOTS names a directory (`make browser-screenshots`: docs/screenshots).
SCREENSHOTS = os.environ.get("AUTHFLOW_SCREENSHOTS") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "browser-screenshots")


def _gone(element):
    """Whether `element`'s document was replaced. While Chromium swaps documents, asking
    about an old node fails either as stale or as an inspector error ("does not belong
    to the document"); both mean the page it was on is gone."""
    try:
        element.is_enabled()
        return False
    except WebDriverException:
        return True


class Browser:
    def __init__(self, lang="en-US"):
        self.profile = tempfile.mkdtemp(prefix="authflow-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
            f"--window-size={WIDTH},{HEIGHT}", f"--lang={lang}",
        ):
            options.add_argument(flag)
        # The console (CSP violations show up there) and the network events (statuses, redirects).
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        # The page area itself WIDTH × HEIGHT (the window size includes the window's frame).
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        self.driver.set_page_load_timeout(WAIT_SECS)
        self.driver.set_script_timeout(WAIT_SECS)
        self.console = []

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # --- navigation and forms ------------------------------------------------------------

    def get(self, url):
        self.driver.get(url)

    @property
    def path(self):
        u = urlsplit(self.driver.current_url)
        return u.path + ("?" + u.query if u.query else "")

    def query(self):
        return parse_qs(urlsplit(self.driver.current_url).query)

    def has(self, css):
        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def h1(self):
        return self.driver.find_element(By.TAG_NAME, "h1").text

    def wait_for(self, css):
        return WebDriverWait(self.driver, WAIT_SECS).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))

    def wait_path(self, prefix):
        WebDriverWait(self.driver, WAIT_SECS).until(lambda d: self.path.startswith(prefix),
                                                    f"waiting for {prefix}")

    def fill_and_submit(self, form_id, fields):
        """Types `fields` into the form `#form_id` and presses its submit button."""
        form = self.wait_for(f"form#{form_id}")
        for name, value in fields.items():
            field = form.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        button = form.find_element(By.CSS_SELECTOR, 'button[type="submit"]')
        old = self.driver.find_element(By.TAG_NAME, "html")
        button.click()
        WebDriverWait(self.driver, WAIT_SECS).until(lambda d: _gone(old), f"{form_id}: no next page")
        WebDriverWait(self.driver, WAIT_SECS).until(
            lambda d: d.execute_script("return document.readyState") == "complete", f"{form_id}: next page not loaded")

    def click_link(self, path_prefix):
        """Follows the page's first link whose href starts with `path_prefix`."""
        self.driver.find_element(By.CSS_SELECTOR, f'a[href^="{path_prefix}"]').click()

    def submit(self, form_id):
        """Presses the submit button of `#form_id` and waits for the next page."""
        self.fill_and_submit(form_id, {})

    def screenshot(self, step):
        os.makedirs(SCREENSHOTS, exist_ok=True)
        self.driver.save_screenshot(os.path.join(SCREENSHOTS, f"{step}.png"))

    # --- logs ----------------------------------------------------------------------------

    def read_console(self):
        """Console entries since the last call (kept in self.console too)."""
        entries = self.driver.get_log("browser")
        self.console.extend(entries)
        return entries

    def csp_violations(self):
        self.read_console()
        return [e["message"] for e in self.console if "Content Security Policy" in e.get("message", "")]

    def document_statuses(self):
        """(status, url) of every http(s) document response since the last call, in order
        (the browser's own pages, such as its new-tab page, left out)."""
        out = []
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.responseReceived" and msg["params"].get("type") == "Document":
                r = msg["params"]["response"]
                if r["url"].startswith("http"):
                    out.append((r["status"], r["url"]))
            elif msg.get("method") == "Network.requestWillBeSent" and msg["params"].get("redirectResponse"):
                r = msg["params"]["redirectResponse"]
                if msg["params"].get("type") == "Document" and r["url"].startswith("http"):
                    out.append((r["status"], r["url"]))
        return out
