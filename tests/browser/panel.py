#!/usr/bin/env python3
"""Journeys through carve's panel in headless Chromium (selenium + Debian's chromedriver).

Usage:
  panel.py customer BASE EMAIL PASSWORD SFTP_PORT PLAN BIGGER_PLAN
  panel.py admin BASE EMAIL PASSWORD
  panel.py isolation BASE EMAIL PASSWORD VM_ID SFTP_ID TOKEN_ID
  panel.py console BASE EMAIL PASSWORD VM_ID ROOT_PASSWORD NEW_ROOT_PASSWORD
  panel.py group BASE EMAIL PASSWORD
Each prints "ok" or fails with a message. Screenshots (1280 and 375 px wide) go to
$CARVETEST_SCREENSHOTS; axe-core ($CARVETEST_AXE) checks every main page.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

SHOTS = os.environ.get("CARVETEST_SCREENSHOTS", "target/screenshots")
AXE = os.environ.get("CARVETEST_AXE", "/opt/carve-testenv/node_modules/axe-core/axe.min.js")
ROOT_PASSWORD = "a console password"
HTTP_USER_DATA = """#!/bin/sh
mkdir -p /srv/www
echo "hello from $(hostname)" > /srv/www/index.html
printf '#!/bin/sh\\nhttpd -p 80 -h /srv/www\\n' > /etc/rc.local
chmod +x /etc/rc.local
"""


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.implicitly_wait(5)
    return driver


def wait(driver, check, what, timeout=20):
    """Waits until `check(driver)` is true, ignoring elements replaced by live updates."""
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.2,
                      ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(check)
    except Exception:
        raise AssertionError(f"{what} (at {driver.current_url})") from None


def wait_url(driver, check, what):
    wait(driver, lambda d: check(d.current_url), what)


def text(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css).text.strip()


def href(driver, css):
    """An element's link, read again if live updates replaced the element meanwhile."""
    for _ in range(20):
        try:
            return driver.find_element(By.CSS_SELECTOR, css).get_attribute("href")
        except StaleElementReferenceException:
            time.sleep(0.1)
    return driver.find_element(By.CSS_SELECTOR, css).get_attribute("href")


def click(driver, element_id):
    """Clicks an element, found again if live updates replaced it meanwhile."""
    for _ in range(20):
        try:
            driver.find_element(By.ID, element_id).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    driver.find_element(By.ID, element_id).click()


def log_in(driver, base, email, password):
    driver.get(base + "/login")
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "main button[type=submit]").click()
    wait_url(driver, lambda u: u == base + "/", f"{email} did not reach the dashboard")


def submit(driver, form_css):
    """Clicks a form's button and waits until the page it leads to has loaded."""
    driver.execute_script("window.__carveSubmitted = true")
    driver.find_element(By.CSS_SELECTOR, form_css + " button[type=submit]").click()
    wait(driver, lambda d: d.execute_script(
        "return window.__carveSubmitted === undefined && document.readyState === 'complete'"),
        f"submitting {form_css} did not lead to a page", 60)


def shoot(driver, name):
    """Saves the page at 1280 and 375 px wide."""
    os.makedirs(SHOTS, exist_ok=True)
    for width in (1280, 375):
        driver.set_window_size(width, 1000)
        height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
        driver.set_window_size(width, max(height, 600))
        driver.save_screenshot(os.path.join(SHOTS, f"{name}-{width}.png"))
    driver.set_window_size(1280, 1000)


def axe(driver, name):
    """Runs axe-core on the page; fails on any serious or critical violation."""
    with open(AXE) as f:
        driver.execute_script(f.read())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(JSON.stringify(r.violations)))"
        ".catch(e => done(JSON.stringify([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}])));")
    bad = [v for v in json.loads(result) if v.get("impact") in ("serious", "critical")]
    if bad:
        lines = [f"{v['id']} ({v['impact']}): {v['help']} at {[n.get('target') for n in v['nodes'][:3]]}" for v in bad]
        raise AssertionError(f"axe found problems on {name}:\n" + "\n".join(lines))


def check_page(driver, name):
    axe(driver, name)
    shoot(driver, name)


def mark(driver):
    """Marks the document, to tell later that the page was not reloaded."""
    driver.execute_script("window.__carveMark = 'same page'")


def post_then_mark(driver, click):
    """Clicks a form's button, waits for the page it leads to, and marks that page."""
    driver.execute_script("window.__carveMark = 'old page'")
    click()
    wait(driver, lambda d: d.execute_script(
        "return window.__carveMark === undefined && document.readyState === 'complete'"),
        "the form did not lead to a new page")
    mark(driver)


def not_reloaded(driver):
    assert driver.execute_script("return window.__carveMark") == "same page", "the page was reloaded"


def http_status(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def vm_state(driver):
    return text(driver, "#vm-state")


def customer(base, email, password, sftp_port, plan, bigger):
    with tempfile.TemporaryDirectory() as tmp:
        d = browser(os.path.join(tmp, "profile"))
        try:
            log_in(d, base, email, password)
            check_page(d, "dashboard-empty")
            # A pool first: the VM joins it when created.
            d.get(base + "/pools")
            d.find_element(By.ID, "name").send_keys("web")
            post_then_mark(d, lambda: submit(d, "form[action='/pools']"))
            wait_url(d, lambda u: "/pools/lb_" in u, "creating the pool did not open its page")
            pool_url = d.current_url
            pool_link = href(d, "#members dd a[href^='http://127.0.0.1:']")
            # The balancer follows new pools within a second (30 s on a loaded machine).
            deadline = time.time() + 30
            status, body = http_status(pool_link)
            while status == 0 and time.time() < deadline:
                time.sleep(0.1)
                status, body = http_status(pool_link)
            assert status == 503 and "try again" in body, f"an empty pool should say no member is healthy: {status} {body[:200]}"
            # Create a VM whose user-data serves a page on port 80.
            d.get(base + "/vms/new")
            check_page(d, "vm-new")
            d.find_element(By.ID, "name").send_keys("shop")
            d.find_element(By.XPATH, f"//label[.//strong[text()='{plan}']]/input").click()
            Select(d.find_element(By.ID, "image")).select_by_value(
                d.find_element(By.XPATH, "//select[@id='image']/option[starts-with(text(), 'tiny')]").get_attribute("value"))
            d.find_element(By.ID, "user_data").send_keys(HTTP_USER_DATA)
            d.find_element(By.ID, "root_password").send_keys(ROOT_PASSWORD)
            ports = d.find_element(By.ID, "ports")
            ports.clear()
            ports.send_keys("80")
            Select(d.find_element(By.ID, "pool")).select_by_visible_text(
                d.find_element(By.XPATH, "//select[@id='pool']/option[starts-with(text(), 'web (')]").text)
            post_then_mark(d, lambda: submit(d, "main form"))
            wait_url(d, lambda u: "/vms/vm_" in u, "creating did not open the VM's page")
            vm_url = d.current_url
            wait(d, lambda d: vm_state(d) == "running", "the VM did not reach running on its page", 240)
            not_reloaded(d)
            # The console and the statistics chart fill in live.
            wait(d, lambda d: "Linux" in d.find_element(By.CSS_SELECTOR, "pre.console").text,
                 "the console did not show the guest booting", 60)
            wait(d, lambda d: "Now: CPU" in text(d, "#stats"), "no statistics appeared on the VM page", 60)
            not_reloaded(d)
            check_page(d, "vm-running")
            d.get(base + "/")
            check_page(d, "dashboard-vm")
            d.get(vm_url)
            link = d.find_element(By.CSS_SELECTOR, "#status dd a[href^='http://127.0.0.1:']").get_attribute("href")
            deadline = time.time() + 120
            while True:
                status, body = http_status(link)
                if status == 200 and "hello from" in body:
                    break
                assert time.time() < deadline, f"the forward {link} never served the page: {status} {body[:200]}"
                time.sleep(1)
            d.get(link)
            assert "hello from" in d.find_element(By.TAG_NAME, "body").text, "the forward's page in the browser"
            # The pool page follows the member live until it is healthy; the pool serves the VM.
            d.get(pool_url)
            mark(d)
            wait(d, lambda d: text(d, "#members [data-member-state]") == "healthy", "the VM never became a healthy member", 60)
            not_reloaded(d)
            status, body = http_status(pool_link)
            assert status == 200 and "hello from shop" in body, f"the pool did not serve the VM: {status} {body[:200]}"
            check_page(d, "pool")
            d.get(base + "/pools")
            assert "1 of 1 healthy" in text(d, "#pools"), text(d, "#pools")
            check_page(d, "pools")
            # Stop, resize, start, delete, each followed live.
            d.get(vm_url)
            assert "web (port 80): healthy" in text(d, "#status"), "the VM's page does not show its pool"
            post_then_mark(d, lambda: d.find_element(By.XPATH, "//form[input[@value='stop']]//button").click())
            wait_url(d, lambda u: u == vm_url, "stop did not come back to the VM's page")
            wait(d, lambda d: vm_state(d) == "stopped", "the VM did not stop", 180)
            not_reloaded(d)
            assert "drain from pools" in text(d, "#status"), "the stop did not drain the VM from its pool first"
            status, _ = http_status(pool_link)
            assert status == 503, f"a stopped member still took a request: {status}"
            Select(d.find_element(By.ID, "resize-plan")).select_by_value(
                d.find_element(By.XPATH, f"//select[@id='resize-plan']/option[starts-with(text(), '{bigger}:')]").get_attribute("value"))
            post_then_mark(d, lambda: submit(d, "form[action$='/resize']"))
            wait(d, lambda d: bigger in text(d, "#status dl") and vm_state(d) == "stopped", "the resize did not finish", 180)
            not_reloaded(d)
            post_then_mark(d, lambda: d.find_element(By.XPATH, "//form[input[@value='start']]//button").click())
            wait(d, lambda d: vm_state(d) == "running", "the VM did not start again", 240)
            not_reloaded(d)
            # The console opens on the VM page (logging in through it is left to the API test).
            mark(d)
            d.find_element(By.ID, "console-open").click()
            wait(d, lambda d: d.find_element(By.ID, "console-status").get_attribute("data-state") == "connected",
                 "the console did not connect: " + text(d, "#console-status"), 30)
            wait(d, lambda d: "carve-guest" in d.find_element(By.CSS_SELECTOR, "#terminal .xterm-rows").text,
                 "the console showed no output", 30)
            d.find_element(By.ID, "console-close").click()
            wait(d, lambda d: d.find_element(By.ID, "console-status").get_attribute("data-state") == "closed",
                 "closing the console did not say so", 10)
            not_reloaded(d)
            vm_id = vm_url.rsplit("/", 1)[1]
            d.find_element(By.ID, "confirm").send_keys("shop")
            post_then_mark(d, lambda: submit(d, "form[action$='/delete']"))
            wait_url(d, lambda u: u == base + "/", "delete did not go to the dashboard")
            wait(d, lambda d: not d.find_elements(By.ID, f"vm-{vm_id}"), "the deleted VM stayed on the dashboard", 180)
            not_reloaded(d)
            # An SFTP account; an upload with OpenSSH's sftp moves the dashboard's usage.
            key = os.path.join(tmp, "key")
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
            d.get(base + "/sftp")
            d.find_element(By.ID, "username").send_keys("files")
            with open(key + ".pub") as f:
                d.find_element(By.ID, "public_keys").send_keys(f.read().strip())
            submit(d, "form[action='/sftp']")
            wait_url(d, lambda u: "/sftp/sa_" in u, "creating the SFTP account did not open its page")
            command = text(d, "#sftp-command")
            assert command == f"sftp -P {sftp_port} files@127.0.0.1", command
            check_page(d, "sftp-account")
            d.get(base + "/sftp")
            check_page(d, "sftp-list")
            d.get(base + "/")
            before = text(d, "[data-usage=sftp-bytes]")
            mark(d)
            upload = os.path.join(tmp, "upload.bin")
            with open(upload, "wb") as f:
                f.write(os.urandom(300 * 1024))
            batch = os.path.join(tmp, "batch")
            with open(batch, "w") as f:
                f.write(f"put {upload} site.bin\n")
            run = subprocess.run(["sftp", "-P", str(sftp_port), "-i", key, "-b", batch,
                                  "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                  "-o", "BatchMode=yes", "files@127.0.0.1"], capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, f"sftp failed: {run.stdout} {run.stderr}"
            wait(d, lambda d: text(d, "[data-usage=sftp-bytes]") != before, "the dashboard's SFTP usage did not move", 60)
            not_reloaded(d)
            assert "300.0 KiB" in text(d, "[data-usage=sftp-bytes]"), text(d, "[data-usage=sftp-bytes]")
            check_page(d, "dashboard")
            # A token: shown once, works, is revoked, is refused.
            d.get(base + "/tokens")
            d.find_element(By.ID, "token-name").send_keys("ci")
            submit(d, "form[action='/tokens']")
            token = text(d, "#new-token")
            check_page(d, "token-created")
            status, body = http_status(base + "/api/v1/me", token)
            assert status == 200 and email in body, f"the new token did not work: {status} {body}"
            d.get(base + "/tokens")
            assert token not in d.page_source, "the token was shown again"
            post_then_mark(d, lambda: d.find_element(By.XPATH, "//tr[td[text()='ci']]//button").click())
            assert "ci" not in [td.text for td in d.find_elements(By.CSS_SELECTOR, "td")], "the revoked token is listed"
            status, body = http_status(base + "/api/v1/me", token)
            assert status == 401, f"a revoked token still works: {status} {body}"
            for path, name in (("/keys", "keys"), ("/account", "account"), ("/activity", "activity")):
                d.get(base + path)
                check_page(d, name)
            print("ok")
        finally:
            d.quit()


def until(seconds, check):
    """Polls `check()` for up to `seconds`; true once it holds."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return True
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        time.sleep(0.2)
    return False


def screen(driver):
    """The terminal's visible rows as text."""
    return driver.find_element(By.CSS_SELECTOR, "#terminal .xterm-rows").text


def last_line(driver):
    return (screen(driver).rstrip().splitlines() or [""])[-1].rstrip()


def type_keys(driver, keys):
    driver.find_element(By.CSS_SELECTOR, "#terminal .xterm-helper-textarea").send_keys(keys)


def console_log_in(driver, password, what):
    """Logs in as root at the terminal's getty prompt and runs a command, as a person would:
    a prompt that getty re-shows (dropping what came meanwhile) or a lost keystroke under load
    ("Login incorrect") is simply tried again."""
    deadline = time.time() + 300
    while True:
        assert time.time() < deadline, f"could not log in at the console {what}:\n{screen(driver)}"
        if not last_line(driver).endswith("login:"):
            type_keys(driver, Keys.ENTER)
            until(5, lambda: last_line(driver).endswith("login:"))
            continue
        type_keys(driver, "root" + Keys.ENTER)
        if not until(20, lambda: last_line(driver).endswith("Password:")):
            continue
        time.sleep(1)  # login turns echo off just after its prompt
        type_keys(driver, password + Keys.ENTER)
        if until(90, lambda: last_line(driver).endswith("#") or last_line(driver).endswith("login:")) \
                and last_line(driver).endswith("#"):
            break
    type_keys(driver, "echo console-$((40+2))" + Keys.ENTER)
    wait(driver, lambda d: "console-42" in [line.strip() for line in screen(d).splitlines()],
         f"the guest did not answer in the console {what}:\n{screen(driver)}", 60)


def open_console(driver, button="console-open"):
    driver.find_element(By.ID, button).click()
    if not until(60, lambda: driver.find_element(By.ID, "console-status").get_attribute("data-state") == "connected"):
        raise AssertionError("the console did not connect: " + text(driver, "#console-status")
                             + " / browser log: " + str(driver.get_log("browser")))


def console(base, email, password, vm_id, root_password, new_root_password):
    """The console on the VM page: log in, another tab takes over typing, a watcher, a new
    root password set from the panel (the VM reboots) and logging in with it."""
    with tempfile.TemporaryDirectory() as tmp:
        d = browser(os.path.join(tmp, "profile"))
        try:
            log_in(d, base, email, password)
            vm_url = f"{base}/vms/{vm_id}"
            d.get(vm_url)
            wait(d, lambda d: vm_state(d) == "running", "the VM is not running on its page", 240)
            open_console(d)
            wait(d, lambda d: "carve-guest" in screen(d), "the console showed no output", 60)
            console_log_in(d, root_password, "with the password given at creation")
            shoot(d, "vm-console")
            first = d.current_window_handle
            # A second tab opens the console: it types now, and the first is told.
            d.switch_to.new_window("tab")
            d.get(vm_url)
            open_console(d)
            second = d.current_window_handle
            d.switch_to.window(first)
            wait(d, lambda d: d.find_element(By.ID, "console-status").get_attribute("data-state") == "taken_over",
                 "the first tab was not told that another took over: " + text(d, "#console-status"), 30)
            assert "took over" in text(d, "#console-status"), text(d, "#console-status")
            d.find_element(By.ID, "console-close").click()
            d.close()
            d.switch_to.window(second)
            type_keys(d, "echo second-$((1+1))" + Keys.ENTER)
            wait(d, lambda d: "second-2" in [line.strip() for line in screen(d).splitlines()],
                 "the tab that took over cannot type:\n" + screen(d), 60)
            # A new root password from the panel: the VM reboots and the console takes it.
            d.find_element(By.ID, "new-root-password").send_keys(new_root_password)
            post_then_mark(d, lambda: submit(d, "form[action$='/password']"))
            wait_url(d, lambda u: u == vm_url, "setting the password did not come back to the VM's page")
            done = "//div[@class='op'][.//strong[text()='reset_password']]//span[contains(@class, 'state-succeeded')]"
            wait(d, lambda d: d.find_elements(By.XPATH, done), "the password reset did not finish: " + text(d, "#status"), 240)
            wait(d, lambda d: vm_state(d) == "running", "the VM did not come back after the reset", 240)
            assert root_password not in d.page_source and new_root_password not in d.page_source, "a password is on the page"
            # A watcher's keys go nowhere; then the console is opened to type.
            open_console(d, "console-watch")
            wait(d, lambda d: "carve-guest" in screen(d), "the watcher saw no output", 60)
            type_keys(d, "echo watcher-$((2+3))" + Keys.ENTER)
            time.sleep(3)
            assert "watcher-5" not in screen(d), "a watcher's keys reached the guest"
            open_console(d)
            console_log_in(d, new_root_password, "with the password set from the panel")
            d.find_element(By.ID, "console-close").click()
            wait(d, lambda d: d.find_element(By.ID, "console-status").get_attribute("data-state") == "closed",
                 "closing the console did not say so", 10)
            print("ok")
        finally:
            d.quit()


def group(base, email, password):
    """A pool's scale group from its page: set up, followed live, changed, refreshed, deleted."""
    with tempfile.TemporaryDirectory() as tmp:
        d = browser(os.path.join(tmp, "profile"))
        try:
            log_in(d, base, email, password)
            d.get(base + "/pools")
            d.find_element(By.ID, "name").send_keys("shop")
            submit(d, "form[action='/pools']")
            wait_url(d, lambda u: "/pools/lb_" in u, "creating the pool did not open its page")
            pool_url = d.current_url
            assert d.find_elements(By.ID, "no-group"), "a new pool says it has no scale group"
            count = lambda d: d.find_element(By.ID, "group-count").get_attribute("data-members")
            # Set up: two members wanted.
            for field, value in (("g-desired", "2"), ("g-min", "1"), ("g-max", "3"), ("g-port", "80")):
                box = d.find_element(By.ID, field)
                box.clear()
                box.send_keys(value)
            Select(d.find_element(By.ID, "g-image")).select_by_value("tiny")
            post_then_mark(d, lambda: submit(d, "#group-form"))
            assert "Saved" in text(d, "p.notice"), text(d, "main")
            wait(d, lambda d: count(d) == "2", "the group's two members did not appear", 60)
            not_reloaded(d)
            check_page(d, "pool-scale-group")
            # Bad input is said next to nothing made.
            box = d.find_element(By.ID, "g-desired")
            box.clear()
            box.send_keys("9")
            post_then_mark(d, lambda: submit(d, "#group-form"))
            assert "min..max" in text(d, "p.error"), text(d, "main")
            wait(d, lambda d: count(d) == "2", "a refused change changed the group", 5)
            # Down to one: the newest goes, live.
            d.get(pool_url)
            box = d.find_element(By.ID, "g-desired")
            box.clear()
            box.send_keys("1")
            post_then_mark(d, lambda: submit(d, "#group-form"))
            wait(d, lambda d: count(d) == "1", "the group did not shrink to one", 60)
            not_reloaded(d)
            wait(d, lambda d: "created VM shop-1" in text(d, "#group-history")
                 and "retired VM shop-2" in text(d, "#group-history"), "the scaling history", 10)
            # A refresh replaces the member (a new one first), followed live to its end.
            post_then_mark(d, lambda: click(d, "refresh-start"))
            assert "Refresh started" in text(d, "p.notice"), text(d, "main")
            wait(d, lambda d: "refresh done" in text(d, "#group-history")
                 and d.find_element(By.ID, "group-refresh").get_attribute("data-refresh") == "none"
                 and count(d) == "1", "the refresh did not finish on the page", 60)
            not_reloaded(d)
            wait(d, lambda d: "created VM shop-3" in text(d, "#group-history")
                 and "retired VM shop-1" in text(d, "#group-history"), "the refresh's history", 10)
            # Deleting the group (the pool's name typed) removes its VMs, live.
            d.find_element(By.ID, "g-confirm").send_keys("shop")
            post_then_mark(d, lambda: submit(d, "form[action$='/scale-group/delete']"))
            wait(d, lambda d: d.find_elements(By.ID, "no-group"), "the group did not go", 60)
            not_reloaded(d)
            d.get(base + "/")
            wait(d, lambda d: not d.find_elements(By.CSS_SELECTOR, "[id^='vm-vm_']"), "the group's VMs stayed", 60)
            print("ok")
        finally:
            d.quit()


def admin(base, email, password):
    with tempfile.TemporaryDirectory() as tmp:
        a = browser(os.path.join(tmp, "admin"))
        c = browser(os.path.join(tmp, "customer"))
        try:
            log_in(a, base, email, password)
            a.get(base + "/admin/plans")
            a.find_element(By.ID, "plan-name").send_keys("starter")
            for field, value in (("vcpus", "1"), ("memory_mib", "256"), ("disk_gib", "2")):
                a.find_element(By.ID, field).send_keys(value)
            submit(a, "form[action='/admin/plans']")
            wait(a, lambda d: "starter" in text(d, "main table"), "the plan is not listed")
            check_page(a, "admin-plans")
            a.get(base + "/admin/tenants")
            a.find_element(By.ID, "tenant-name").send_keys("initech")
            submit(a, "form[action='/admin/tenants']")
            wait_url(a, lambda u: "/admin/tenants/tn_" in u, "creating a tenant did not open its page")
            tenant_url = a.current_url
            field = a.find_element(By.ID, "max_vms")
            field.clear()
            field.send_keys("2")
            submit(a, "form[action$='/quota']")
            wait(a, lambda d: "quota was saved" in text(d, "[role=status]"), "the quota was not saved")
            check_page(a, "admin-tenant")
            a.get(base + "/admin/users")
            a.find_element(By.ID, "email").send_keys("peter@initech.example")
            a.find_element(By.ID, "password").send_keys("peter's password")
            Select(a.find_element(By.ID, "tenant_id")).select_by_visible_text("initech")
            submit(a, "form[action='/admin/users']")
            wait_url(a, lambda u: "/admin/users/us_" in u, "creating a user did not open its page")
            check_page(a, "admin-user")
            log_in(c, base, "peter@initech.example", "peter's password")
            assert text(c, "[data-usage=vms]") == "0 of 2", text(c, "[data-usage=vms]")
            a.get(tenant_url)
            submit(a, "form[action$='/suspension']")
            wait(a, lambda d: "suspended" in text(d, "[role=status]"), "the tenant was not suspended")
            c.get(base + "/")
            wait_url(c, lambda u: u.endswith("/login"), "a suspended tenant's customer was not signed out")
            # An image uploaded through the form (tiny's base, booted with tiny's kernel).
            image_dir = os.environ.get("CARVETEST_IMAGE_DIR", "/var/lib/carve/images")
            a.get(base + "/admin/images")
            a.find_element(By.ID, "img-name").send_keys("tiny-upload")
            a.find_element(By.ID, "img-os").send_keys("busybox")
            Select(a.find_element(By.ID, "img-boot")).select_by_value("kernel")
            Select(a.find_element(By.ID, "img-kernel")).select_by_value("tiny")
            a.find_element(By.ID, "img-file").send_keys(os.path.join(image_dir, "tiny", "disk.qcow2"))
            submit(a, "form[action='/admin/images']")
            wait(a, lambda d: "tiny-upload" in text(d, "main table"), "the uploaded image is not listed")
            assert "uploaded" in text(a, "main table"), text(a, "main table")
            for path, name in (("/admin/tenants", "admin-tenants"), ("/admin/users", "admin-users"),
                               ("/admin/images", "admin-images"), ("/admin/hosts", "admin-hosts"),
                               ("/admin/vms", "admin-vms"), ("/admin/operations", "admin-operations"),
                               ("/admin/audit", "admin-audit")):
                a.get(base + path)
                check_page(a, name)
            # Dark mode follows the system; it must keep its contrast.
            a.execute_cdp_cmd("Emulation.setEmulatedMedia",
                              {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
            a.get(base + "/admin/audit")
            check_page(a, "admin-audit-dark")
            a.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
            audit = text(a, "main table")
            assert "panel POST /admin/tenants/{id}/suspension" in audit, audit[:2000]
            c.get(base + "/login")
            check_page(c, "login")
            a.get(base + "/vms/vm_0000000000000000")
            assert text(a, "h1") == "Not found", text(a, "h1")
            check_page(a, "not-found")
            print("ok")
        finally:
            a.quit()
            c.quit()


def isolation(base, email, password, vm_id, sftp_id, token_id):
    with tempfile.TemporaryDirectory() as tmp:
        d = browser(os.path.join(tmp, "profile"))
        try:
            log_in(d, base, email, password)
            for path in (f"/vms/{vm_id}", f"/sftp/{sftp_id}"):
                d.get(base + path)
                assert text(d, "h1") == "Not found", f"{path}: {text(d, 'h1')}"
            d.get(base + "/tokens")
            assert token_id not in d.page_source
            # A form posted without its CSRF token is refused and changes nothing.
            d.get(base + "/keys")
            d.find_element(By.ID, "key-name").send_keys("forged")
            d.find_element(By.ID, "public_key").send_keys(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsLoyjJx4Nw7l7ZhBmSbfM7pY1LpMxRcYpV2oXq6qPz me@laptop")
            d.execute_script("document.querySelector(\"form[action='/keys'] input[name=csrf]\").remove()")
            submit(d, "form[action='/keys']")
            assert text(d, "h1") == "Not allowed", text(d, "h1")
            assert "nothing was changed" in text(d, "[role=alert]"), text(d, "[role=alert]")
            d.get(base + "/keys")
            assert "forged" not in d.page_source, "the forged form saved a key"
            # Another tenant's token cannot be revoked by posting its id with a valid token.
            d.get(base + "/tokens")
            d.execute_script(
                "const f = document.querySelector(\"form[action='/tokens']\");"
                f"f.action = '/tokens/{token_id}/revoke'; f.submit();")
            wait(d, lambda d: text(d, "h1") == "Not found", "another tenant's token was not a 404")
            print("ok")
        finally:
            d.quit()


if __name__ == "__main__":
    journey, args = sys.argv[1], sys.argv[2:]
    {"customer": customer, "admin": admin, "isolation": isolation, "console": console, "group": group}[journey](*args)
