#!/usr/bin/env python3
"""Logs in and out of carve's panel in headless Chromium (selenium + Debian's chromedriver).

Usage: login.py BASE_URL EMAIL PASSWORD; prints "ok" or fails with a message.
"""
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.implicitly_wait(10)  # elements of a page still loading are waited for
    return driver


def wait_url(driver, check, what):
    """Waits (up to 10 s) until the page URL passes `check`: clicks navigate asynchronously."""
    try:
        WebDriverWait(driver, 10).until(lambda d: check(d.current_url))
    except Exception:
        raise AssertionError(f"{what}: still at {driver.current_url}") from None


def log_in(driver, base, email, password):
    driver.get(base + "/login")
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def main():
    base, email, password = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        try:
            driver.get(base + "/")
            wait_url(driver, lambda u: u.endswith("/login"), "not sent to /login")
            log_in(driver, base, email, "not the password")
            alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
            assert "wrong" in alert, f"no error shown: {alert!r}"
            log_in(driver, base, email, password)
            wait_url(driver, lambda u: u == base + "/", "not on the landing page")
            heading = driver.find_element(By.TAG_NAME, "h1").text
            assert heading == "Dashboard", heading
            assert email in driver.find_element(By.CSS_SELECTOR, "header").text
            cookie = driver.get_cookie("carve_session")
            assert cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Lax", cookie
            assert "carve_session" not in driver.execute_script("return document.cookie"), "script can read the session"
            driver.find_element(By.CSS_SELECTOR, "header form button[type=submit]").click()
            wait_url(driver, lambda u: u.endswith("/login"), "logout did not go to /login")
            driver.get(base + "/")
            wait_url(driver, lambda u: u.endswith("/login"), "the session survived logout")
            print("ok")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
