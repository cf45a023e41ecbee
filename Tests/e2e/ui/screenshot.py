#!/usr/bin/env python3
"""Logs in to the web UI with a token and saves a full-page screenshot of one page, after
checking that it shows the expected texts (used by scripts/e2e/canary.sh for the rollout page
with real Prometheus measurements; the README's rollout screenshot comes from it).

    screenshot.py URL TOKEN PATH OUT.png [EXPECTED TEXT ...]
"""

from __future__ import annotations

import os
import sys

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> int:
    url, token, path, out, *expected = sys.argv[1:]
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = os.environ.get("UI_CHROMIUM", "/usr/bin/chromium")
    service = webdriver.ChromeService(executable_path=os.environ.get("UI_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(url + path)
        driver.find_element(By.ID, "user").send_keys("token")
        driver.find_element(By.ID, "password").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        WebDriverWait(driver, 15).until(lambda d: "/ui/login" not in d.current_url and d.find_elements(By.TAG_NAME, "main"))
        text = driver.find_element(By.TAG_NAME, "main").text + driver.page_source
        missing = [e for e in expected if e not in text]
        height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
        driver.set_window_size(1280, height + 100)
        driver.save_screenshot(out)
        if missing:
            print(f"{path} lacks {missing} (screenshot: {out})", file=sys.stderr)
            return 1
        return 0
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
