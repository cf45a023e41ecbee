#!/usr/bin/env python3
"""The web UI in a real browser: headless Chromium driven by selenium, against a live
`depot serve` with authentication on (docs/UI.md).

The scenario of issue #18, as a user would do it:
  push two versions with lineage (the CLI) -> log in -> find the fine-tune by searching its run
  annotation -> open its lineage graph and follow the link to the base -> roll `production` back
  from its page (with the keyboard only) -> see the move in the alias history and the audit page.
Then: a reader sees no rollback form and a forged post is refused; a rollout page with its
controls; a pipeline run's stage graph; phone width; a basic accessibility check on every page
(labels, contrast, keyboard focus, no script). Screenshots of each page go to $UI_SCREENSHOTS.

Run by scripts/e2e/ui.sh, which starts the server and passes its address and credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["UI_REGISTRY"]
ADMIN = os.environ["UI_ADMIN_TOKEN"]
DEPOT = os.environ["UI_DEPOT"]
WORK = Path(os.environ["UI_WORK"])
SHOTS = Path(os.environ["UI_SCREENSHOTS"])
SHOTS.mkdir(parents=True, exist_ok=True)
HOST = urllib.parse.urlparse(URL).netloc

checks = 0


def check(condition: bool, what: str) -> None:
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def depot(*args: str, token: str = ADMIN, stdin: str | None = None) -> str:
    env = dict(os.environ, DEPOT_REGISTRY=URL, DEPOT_TOKEN=token)
    done = subprocess.run([DEPOT, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"depot {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def safetensors(path: Path, values: int, seed: int) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}).encode()
    data = hashlib.shake_256(seed.to_bytes(4, "little")).digest(4 * values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


def push_bundle(repo: str, tag: str, model: str, version_text: str) -> str:
    """A Triton bundle (artifactType application/vnd.depot.triton.bundle.v1) through the plain
    OCI API: what a package stage pushes; `depot rollout start` deploys only such bundles."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    files = {
        f"{model}/config.pbtxt": f'name: "{model}"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'.encode(),
        f"{model}/1/model.onnx": version_text.encode(),
    }
    layers = []
    for path, content in [("config", b"{}")] + list(files.items()):
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        r = requests.post(f"{URL}/v2/{repo}/blobs/uploads/?digest={digest}", data=content, headers=auth, timeout=30)
        check(r.status_code == 201, f"blob upload: {r.status_code} {r.text}")
        if path != "config":
            layers.append(
                {
                    "mediaType": "application/octet-stream",
                    "digest": digest,
                    "size": len(content),
                    "annotations": {"org.opencontainers.image.title": path},
                }
            )
    config = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.depot.triton.bundle.v1",
        "config": config,
        "layers": layers,
    }
    body = json.dumps(manifest).encode()
    r = requests.put(
        f"{URL}/v2/{repo}/manifests/{tag}",
        data=body,
        headers={**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    check(r.status_code == 201, f"manifest put: {r.status_code} {r.text}")
    return "sha256:" + hashlib.sha256(body).hexdigest()


def browser(width: int = 1280, height: int = 900) -> WebDriver:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.binary_location = os.environ.get("UI_CHROMIUM", "/usr/bin/chromium")
    service = webdriver.ChromeService(executable_path=os.environ.get("UI_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def shot(driver: WebDriver, name: str) -> None:
    """A full-page screenshot (the window grows to the page's height first)."""
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
    driver.set_window_size(max(width, 360), max(height + 100, 400))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


ACCESSIBILITY = r"""
const problems = [];
// 1. Every visible form control has a label (label[for], a wrapping label, or aria-label).
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest('label') ||
    el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
  if (!labelled) problems.push(`unlabelled ${el.tagName.toLowerCase()} name=${el.name}`);
}
// 2. Text contrast (WCAG 2.1 AA): 4.5:1, or 3:1 for large text, against the nearest opaque background.
function rgb(s) { const m = s.match(/rgba?\(([^)]+)\)/); if (!m) return null; const p = m[1].split(',').map(Number);
  return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; }
function lum(c) { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); }
function background(el) { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
  if (c && c.a > 0.5) return c; } return {r: 255, g: 255, b: 255, a: 1}; }
const seen = new Set();
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode; const el = node.parentElement;
  if (!node.textContent.trim() || !el || seen.has(el) || el.closest('svg')) continue;
  seen.add(el);
  const style = getComputedStyle(el); const r = el.getBoundingClientRect();
  if (style.visibility === 'hidden' || style.display === 'none' || r.width === 0 || r.right < 0) continue;
  const fg = rgb(style.color), bg = background(el);
  const L1 = lum(fg), L2 = lum(bg); const ratio = (Math.max(L1, L2) + 0.05) / (Math.min(L1, L2) + 0.05);
  const size = parseFloat(style.fontSize); const bold = parseInt(style.fontWeight) >= 700;
  const needed = (size >= 24 || (size >= 18.66 && bold)) ? 3 : 4.5;
  if (ratio < needed) problems.push(`contrast ${ratio.toFixed(2)} < ${needed} for "${node.textContent.trim().slice(0, 40)}"`);
}
// 3. No script at all: the pages work without JavaScript.
if (document.querySelectorAll('script').length) problems.push('page has a <script>');
// 4. One main landmark, a language, a title.
if (document.querySelectorAll('main').length !== 1) problems.push('not exactly one <main>');
if (!document.documentElement.lang) problems.push('no lang on <html>');
if (!document.title) problems.push('no <title>');
return problems;
"""


def accessible(driver: WebDriver, page: str) -> None:
    problems = driver.execute_script(ACCESSIBILITY)
    check(not problems, f"{page}: accessibility problems: {problems}")
    # The test's data holds no "<": an escaped tag means markup was built as text and escaped.
    source = driver.page_source
    check("DepotServer.HTML" not in source and "&lt;" not in source, f"{page}: a fragment was rendered as text")


def keyboard_reaches(driver: WebDriver, predicate, limit: int = 80):
    """Tabs from the top of the page until the focused element satisfies `predicate`."""
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    ActionChains(driver).send_keys(Keys.TAB).perform()
    first = driver.switch_to.active_element
    check(first.get_attribute("class") == "skip", "the first Tab stop is the skip link")
    for _ in range(limit):
        el = driver.switch_to.active_element
        if predicate(el):
            return el
        el.send_keys(Keys.TAB)
    raise AssertionError("keyboard navigation never reached the element")


def arrived(driver: WebDriver, fragment: str) -> None:
    """Waits (up to 15 s) until a form post's redirect has landed on a URL containing `fragment`."""
    WebDriverWait(driver, 15).until(lambda d: fragment in d.current_url and d.find_elements(By.TAG_NAME, "main"))


def login(driver: WebDriver, user: str, password: str, start: str = "/ui") -> None:
    driver.delete_all_cookies()
    driver.get(URL + start)
    check("/ui/login" in driver.current_url, f"an anonymous visit goes to the login page, not {driver.current_url}")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: "/ui/login" not in d.current_url)
    check("/ui/login" not in driver.current_url, f"logged in as {user} (page: {driver.current_url})")


def main() -> None:
    # --- Data: a base model and its fine-tune, `production` on the base then the fine-tune.
    depot("admin", "user", "add", "alice", "--role", "maintainer", "--password-stdin", stdin="alice-password-1\n")
    depot("admin", "user", "add", "rita", "--role", "reader", "--password-stdin", stdin="rita-password-12\n")
    safetensors(WORK / "base" / "model.safetensors", 60_000, 1)
    safetensors(WORK / "ft" / "model.safetensors", 60_000, 2)
    base = depot("push", "team/llm:base", str(WORK / "base"), "--run", "pretrain-7", "--dataset", "web-2026")
    ft = depot(
        "push", "team/llm:ft-1", str(WORK / "ft"), "--from", "team/llm:base", "--relation", "fine-tuned-from",
        "--run", "exp-42", "--dataset", "chat-v3",
    )
    depot("alias", "set", "team/llm:production", "team/llm:base", "--reason", "first release")
    depot("alias", "set", "team/llm:production", "team/llm:ft-1", "--reason", "fine-tune passed eval")
    check(base.startswith("sha256:") and ft.startswith("sha256:"), "pushes print digests")

    driver = browser()
    try:
        # --- Log in; search by run annotation.
        login(driver, "alice", "alice-password-1")
        accessible(driver, "home")
        shot(driver, "01-home")
        box = driver.find_element(By.ID, "q")
        # Two words: the form sends "run%3Aexp-42+llm" (a space is a plus in a GET form).
        box.send_keys("run:exp-42 llm")
        box.submit()
        arrived(driver, "q=run")
        check(driver.find_element(By.ID, "q").get_attribute("value") == "run:exp-42 llm", "the box shows the search as typed")
        results = driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")
        check(len(results) == 1, f"searching run:exp-42 finds exactly the fine-tune ({len(results)} rows)")
        check("exp-42" in results[0].text, "the row shows the run")
        accessible(driver, "search")
        shot(driver, "02-search")
        results[0].find_element(By.PARTIAL_LINK_TEXT, ft[:19]).click()

        # --- The artifact page: files, annotations, lineage graph; follow the graph to the base.
        check(ft in driver.find_element(By.TAG_NAME, "main").text, "the fine-tune's page shows its digest")
        check("safetensors" in driver.page_source and "60,000 parameters" in driver.page_source, "files with metadata")
        check(f"depot pull {HOST}/team/llm@{ft}" in driver.page_source, "a copy-paste pull command")
        accessible(driver, "artifact")
        shot(driver, "03-artifact")
        node = driver.find_element(By.CSS_SELECTOR, f"svg.graph a[href$='{base}']")
        check("team/llm:base" in (node.get_attribute("aria-label") or ""), "the graph names the base, not a bare digest")
        node.click()
        arrived(driver, base)
        check(driver.current_url.endswith(base), f"the graph link opens the base ({driver.current_url})")
        check("fine-tuned-from" in driver.page_source and "1 artifact derived" in driver.page_source, "the base shows its impact")
        shot(driver, "04-base")

        # --- Roll production back from its page, with the keyboard only.
        driver.get(f"{URL}/ui/repositories/team/llm/-/aliases/production")
        accessible(driver, "alias")
        shot(driver, "05-alias")
        reason = keyboard_reaches(driver, lambda el: el.get_attribute("id") == "reason")
        reason.send_keys("eval regression on chat-v3")
        reason.send_keys(Keys.TAB)
        confirm = driver.switch_to.active_element
        check(confirm.get_attribute("id") == "confirm", "Tab moves from the reason to the confirmation")
        confirm.send_keys(Keys.SPACE)
        confirm.send_keys(Keys.TAB)
        button = driver.switch_to.active_element
        check(button.text.startswith("Roll back"), f"then to the button ({button.text})")
        button.send_keys(Keys.ENTER)
        arrived(driver, "rolled-back=")
        status = driver.find_element(By.CSS_SELECTOR, "[role=status]")
        check("Rolled back" in status.text, f"the page confirms the rollback ({status.text})")
        current = requests.get(
            f"{URL}/depot/v1/repositories/team/llm/aliases/production", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
        ).json()
        check(current["digest"] == base, "production points at the base again (the API agrees)")
        history = driver.find_element(By.CSS_SELECTOR, "ol.timeline li").text
        check("user:alice" in history and "eval regression on chat-v3" in history, f"the move heads the history: {history}")
        shot(driver, "06-alias-rolled-back")

        # Time travel: just before the rollback (its time from the history), production pointed
        # at the fine-tune.
        moves = requests.get(
            f"{URL}/depot/v1/repositories/team/llm/aliases/production/history", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
        ).json()["moves"]
        then = moves[-1]["at_ms"] - 1
        driver.get(f"{URL}/ui/repositories/team/llm/-/aliases/production?at={then}")
        check(ft in driver.find_element(By.CSS_SELECTOR, "[role=status]").text, "time travel shows what production pointed at")

        # --- The audit page shows the move; the chain verifies.
        driver.get(URL + "/ui/audit?action=rollback")
        text = driver.find_element(By.TAG_NAME, "main").text
        check("Chain intact" in text, "the audit page verifies the chain")
        rows = driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")
        check(len(rows) == 1 and "user:alice" in rows[0].text and "production" in rows[0].text, "the rollback is in the journal")
        accessible(driver, "audit")
        shot(driver, "07-audit")

        # --- CSRF: a post without the page's token is refused, and changes nothing.
        cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
        forged = requests.post(
            f"{URL}/ui/repositories/team/llm/-/aliases/production/rollback",
            data={"to": ft, "reason": "forged", "confirm": "yes", "csrf": "0" * 64},
            cookies=cookies,
            allow_redirects=False,
            timeout=10,
        )
        check(forged.status_code == 403, f"a forged form post is refused ({forged.status_code})")
        cross = requests.post(
            f"{URL}/ui/repositories/team/llm/-/aliases/production/rollback",
            data={"to": ft, "reason": "cross-site", "confirm": "yes", "csrf": driver.find_element(By.NAME, "csrf").get_attribute("value")},
            cookies=cookies,
            headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
            allow_redirects=False,
            timeout=10,
        )
        check(cross.status_code == 403, f"a cross-site post with a stolen token is refused ({cross.status_code})")

        # --- Phone width: no sideways scrolling of the page itself.
        driver.set_window_size(390, 844)
        for path in (f"/ui/repositories/team/llm/-/artifacts/{ft}", "/ui/repositories/team/llm/-/aliases/production", "/ui/audit"):
            driver.get(URL + path)
            overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            check(overflow <= 1, f"{path} fits a phone's width (overflow {overflow}px)")
        shot(driver, "08-artifact-phone")
        driver.set_window_size(1280, 900)

        # --- A reader: sees the alias, no rollback form; its post is refused by the gate.
        login(driver, "rita", "rita-password-12", start="/ui/repositories/team/llm/-/aliases/production")
        check("/aliases/production" in driver.current_url, "login returns to the page asked for")
        check(not driver.find_elements(By.ID, "reason"), "a reader is not offered the rollback form")
        check(not driver.find_elements(By.LINK_TEXT, "Audit"), "a reader has no audit link")
        driver.get(URL + "/ui/audit")
        check("requested access to the resource is denied" in driver.page_source, "a reader may not open the audit page")
        cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
        driver.get(f"{URL}/ui/repositories/team/llm/-/aliases/production")
        denied = requests.post(
            f"{URL}/ui/repositories/team/llm/-/aliases/production/rollback",
            data={"to": ft, "reason": "not mine", "confirm": "yes", "csrf": driver.find_element(By.NAME, "csrf").get_attribute("value")},
            cookies=cookies,
            allow_redirects=False,
            timeout=10,
        )
        check(denied.status_code == 403, f"a reader's rollback post is refused ({denied.status_code})")

        # --- Deployments: a rollout page with its controls (logged in with the admin token).
        v1 = push_bundle("team/llm-serving", "v1", "llm", "version one")
        v2 = push_bundle("team/llm-serving", "v2", "llm", "version two")
        depot("rollout", "start", "team/llm-serving:production", "v1")
        depot("rollout", "start", "team/llm-serving:production", "v2", "--steps", "5,25,50,100")
        login(driver, "admin", ADMIN, start="/ui/deployments")
        driver.find_element(By.PARTIAL_LINK_TEXT, "team/llm-serving").click()
        text = driver.find_element(By.TAG_NAME, "main").text
        check("running" in text and "canary" in text and "5%" in text, f"the rollout page shows the split and steps: {text[:300]}")
        accessible(driver, "rollout")
        shot(driver, "09-rollout")
        driver.find_element(By.ID, "reason-promote").send_keys("metrics look fine")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/promote'] button").click()
        arrived(driver, "done=promote")
        check("promoted" in driver.find_element(By.TAG_NAME, "main").text, "Promote now promotes the rollout")
        shot(driver, "10-rollout-promoted")
        check(v1 != v2, "two bundles")

        # --- Pipelines: a push to team/pipe starts a run; its stage graph and job page.
        depot("push", "team/pipe:v1", str(WORK / "base"))
        deadline = time.monotonic() + 90
        while True:
            driver.get(URL + "/ui/jobs")
            done = driver.find_elements(By.CSS_SELECTOR, "main table td .state-succeeded")
            if done or time.monotonic() > deadline:
                break
            time.sleep(1)
        check(bool(done), "the package job succeeded")
        check(bool(driver.find_elements(By.CSS_SELECTOR, "svg.graph a[href^='/ui/jobs/']")), "the run's stages are drawn with links")
        accessible(driver, "jobs")
        shot(driver, "11-jobs")
        driver.find_element(By.CSS_SELECTOR, "svg.graph a[href^='/ui/jobs/']").click()
        check("packaged" in driver.find_element(By.TAG_NAME, "pre").text, "the job page shows its log (the stage printed 'packaged')")
        accessible(driver, "job")
        shot(driver, "12-job")

        # --- Log out: the session cookie is gone and pages ask for a login again.
        driver.find_element(By.CSS_SELECTOR, "header form button").click()
        driver.get(URL + "/ui")
        check("/ui/login" in driver.current_url, "after logging out, pages need a login again")
    except BaseException:
        try:
            driver.save_screenshot(str(SHOTS / "failure.png"))
            (SHOTS / "failure.html").write_text(driver.page_source)
        except Exception:
            pass
        raise
    finally:
        driver.quit()
    print(f"ui browser test: {checks} checks passed; screenshots in {SHOTS}")


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, NoSuchElementException) as e:
        print(f"ui browser test FAILED: {e}", file=sys.stderr)
        print(f"(the page at that moment: {SHOTS / 'failure.png'} and failure.html)", file=sys.stderr)
        sys.exit(1)
