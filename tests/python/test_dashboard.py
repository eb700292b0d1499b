"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright. It logs in
through the one-time link `tollgate dashboard --print-url` prints, checks that each page draws the
figures the ledger holds after a scripted series of requests (against `tollgate usage --json` and
the database itself), downloads a table as CSV, and keeps a screenshot of every page under
target/test-artifacts/dashboard/. A page served from another loopback port cannot read the
dashboard's data with the user's cookie; a used or expired link does not open it. Page weight and
time to first render are measured and printed (and written to metrics.json beside the screenshots).
"""

import csv
import http.server
import io
import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

from conftest import KEYS, TARGET, TOLLGATE, Daemon, fake_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = TARGET.parent / "test-artifacts" / "dashboard"
PAGES = ["spend", "cache", "redactions", "latency", "budgets", "experiments", "policy", "calls"]
# Fake values shaped like real ones: an AWS access key id and an e-mail address.
AWS = "AKIA4QV7HNFCAA6UYSMZ"
MAIL = "raj.patel54@acme.io"

EXTRA = """
[audit]
enabled = true
retention_days = 1

[[budgets]]
name = "weekly-spend"
scope = "user"
period = "week"
limit_usd = 5.0
action = "warn"

[routes.review-ab]
split = { "oa/gpt-4.1" = 50, "an/claude-sonnet-4-5" = 50 }
experiment = "review-models"
"""


def cli(d, *args):
    env = dict(os.environ, TOLLGATE_HOME=d.home, **KEYS)
    out = subprocess.run([TOLLGATE, *args], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def link(d, valid_for=60):
    url = cli(d, "dashboard", "--print-url", "--valid-for", str(valid_for)).strip()
    assert url.startswith(f"http://127.0.0.1:{d.port}/dashboard/login?code="), url
    return url


@pytest.fixture(scope="module")
def dash(fake):
    d = Daemon(fake_config(fake.url, EXTRA))
    client = d.openai()
    for i in range(4):
        client.chat.completions.create(model="oa/gpt-4.1", messages=[{"role": "user", "content": f"explain part {i}"}],
                                       extra_headers={"x-tollgate-task": "explain"})
    # The same deterministic question twice: the second is a cache hit.
    for _ in range(2):
        client.chat.completions.create(model="oa/gpt-4.1", temperature=0,
                                       messages=[{"role": "user", "content": "what is a tollgate?"}])
    # Masked before they leave: an access key id and an address.
    client.chat.completions.create(model="oa/gpt-4.1", messages=[
        {"role": "user", "content": f"why does {AWS} fail? mail {MAIL}"}])
    d.anthropic().messages.create(model="an/claude-sonnet-4-5", max_tokens=50,
                                  messages=[{"role": "user", "content": "review this"}],
                                  extra_headers={"x-tollgate-task": "review"})
    # An experiment: eight users on a split route.
    for u in range(8):
        client.chat.completions.create(model="review-ab", messages=[{"role": "user", "content": f"chunk {u}"}],
                                       extra_headers={"x-tollgate-user": f"dev{u}", "x-tollgate-task": "review"})
    # A failure: a model no route or provider serves.
    with pytest.raises(Exception):
        client.chat.completions.create(model="nope/none", messages=[{"role": "user", "content": "x"}])
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def ledger(d, sql, *args):
    with sqlite3.connect(f"file:{d.home}/tollgate.db?mode=ro", uri=True) as c:
        return c.execute(sql, args).fetchall()


def open_page(page, name):
    page.goto(page.url.split("#")[0] + "#" + name)
    page.wait_for_selector(f"main[data-ready$='/{name}']")


def test_each_page_draws_what_the_ledger_holds(dash, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    response = page.goto(link(dash))
    assert response.ok and page.url.endswith("/dashboard/"), page.url
    cookie = [c for c in context.cookies() if c["name"] == f"tollgate_dashboard_{dash.port}"]
    assert cookie and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict", context.cookies()
    assert page.evaluate("document.cookie") == "", "the session is out of the page's scripts' reach"
    page.wait_for_selector("main[data-ready='week/model/spend']")

    usage = json.loads(cli(dash, "usage", "--since", "week", "--by", "model", "--json"))
    total = usage["total"]
    assert total["requests"] == 17, usage
    assert page.text_content("[data-stat=requests]") == f"{total['requests']:,}"
    assert page.text_content("[data-stat=cost]") == "$" + total["cost_usd"]
    for line in usage["lines"]:
        row = page.locator(f"tr[data-key='{line['key']}'] td")
        assert row.nth(1).text_content() == f"{line['requests']:,}", line
        assert row.nth(5).text_content() == line["cost_usd"], line
        # The spend bars of a model add up to its cost in the ledger.
        drawn = page.eval_on_selector_all(
            f"svg[data-chart=spend] rect[data-key='{line['key']}']", "rs => rs.reduce((s, r) => s + Number(r.dataset.value), 0)")
        assert drawn == round(float(line["cost_usd"]) * 1e6), (line, drawn)
    # The running total, the budget's line and a forecast no lower than what is spent.
    spent = int(page.get_attribute("svg[data-chart=running] polyline", "data-spent"))
    assert spent == round(float(total["cost_usd"]) * 1e6)
    assert page.get_attribute("line[data-budget=weekly-spend]", "data-limit") == "5000000"
    assert int(page.get_attribute("line.forecast", "data-forecast")) >= spent
    page.screenshot(path=str(ARTIFACTS / "spend.png"), full_page=True)

    # The usage table downloads as CSV with the same figures.
    with page.expect_download() as d:
        page.click("section[data-section^='Usage by'] a.csv")
    rows = list(csv.DictReader(io.StringIO(pathlib.Path(d.value.path()).read_text())))
    assert {r["model"]: int(r["requests"]) for r in rows} == {l["key"]: l["requests"] for l in usage["lines"]}
    assert d.value.suggested_filename.startswith("tollgate-usage-")

    open_page(page, "cache")
    hits = ledger(dash, "SELECT COUNT(*) FROM ledger WHERE cache_hit = 1")[0][0]
    assert hits == 1
    assert page.text_content("[data-stat=hits]") == "1"
    assert page.text_content("[data-stat=hit_rate]") == f"{100 / 17:.1f}%"
    assert page.text_content("[data-stat=saved]") != "$0.000000", "the hit's price is known"
    page.screenshot(path=str(ARTIFACTS / "cache.png"), full_page=True)

    open_page(page, "redactions")
    masked = dict(k.split("=") for (r,) in ledger(dash, "SELECT redacted FROM ledger WHERE redacted IS NOT NULL")
                  for k in r.split(","))
    assert masked, "the request with a key and an address was masked"
    for kind, n in masked.items():
        assert page.text_content(f"tr[data-kind='{kind}'] td:nth-child(2)") == n
    html = page.content()
    assert AWS not in html and MAIL not in html, "counts only, never a value"
    page.screenshot(path=str(ARTIFACTS / "redactions.png"), full_page=True)

    open_page(page, "latency")
    targets = ledger(dash, "SELECT provider || '/' || model, COUNT(*) FROM ledger WHERE provider IS NOT NULL "
                           "AND cache_hit = 0 GROUP BY 1")
    for target, n in targets:
        cells = page.locator(f"tr[data-target='{target}'] td")
        assert cells.nth(1).text_content() == str(n), target
        assert float(cells.nth(3).text_content()) > 0
        assert cells.nth(6).text_content() == "closed"
    page.screenshot(path=str(ARTIFACTS / "latency.png"), full_page=True)

    open_page(page, "budgets")
    budget = json.loads(cli(dash, "budget", "--json"))["budgets"][0]
    assert page.text_content("tr[data-budget=weekly-spend] td:nth-child(4)") == "$" + budget["spent_usd"]
    page.screenshot(path=str(ARTIFACTS / "budgets.png"), full_page=True)

    open_page(page, "experiments")
    arms = json.loads(cli(dash, "usage", "--since", "week", "--by", "arm", "--json"))["lines"]
    arms = [a for a in arms if a["key"] != "-"]
    assert sum(a["requests"] for a in arms) == 8
    for a in arms:
        cells = page.locator(f"tr[data-arm='{a['key']}'] td")
        assert cells.nth(1).text_content() == str(a["requests"]) and cells.nth(2).text_content() == a["cost_usd"]
    page.screenshot(path=str(ARTIFACTS / "experiments.png"), full_page=True)

    open_page(page, "policy")
    assert page.locator("dd[data-policy]").count() > 0
    page.screenshot(path=str(ARTIFACTS / "policy.png"), full_page=True)

    open_page(page, "calls")
    assert page.locator("tr.call").count() == 17
    newest = ledger(dash, "SELECT request_id, outcome FROM ledger ORDER BY ts_ms DESC, id DESC LIMIT 1")[0]
    page.click(f"tr[data-request='{newest[0]}']")
    page.wait_for_selector("#call pre")
    assert newest[0] in page.text_content("#call pre") and newest[1] in page.text_content("#call pre")
    # With the audit log on, a call shows its prompt as it was sent: masked.
    masked_call = ledger(dash, "SELECT request_id FROM ledger WHERE redacted IS NOT NULL")[0][0]
    page.click(f"tr[data-request='{masked_call}']")
    page.wait_for_selector("#call h3:has-text('Prompt as sent')")
    sent = page.text_content("#call")
    assert "why does" in sent and AWS not in sent and MAIL not in sent, sent
    page.screenshot(path=str(ARTIFACTS / "calls.png"), full_page=True)

    # Another period and grouping draw from their own query.
    open_page(page, "spend")
    page.select_option("#period", "day")
    page.select_option("#by", "task")
    page.wait_for_selector("main[data-ready='day/task/spend']")
    by_task = json.loads(cli(dash, "usage", "--since", "today", "--by", "task", "--json"))
    for line in by_task["lines"]:
        assert page.text_content(f"tr[data-key='{line['key']}'] td:nth-child(2)") == f"{line['requests']:,}"
    context.close()


def test_page_weight_and_time_to_first_render(dash, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(link(dash))
    page.wait_for_selector("main[data-ready='week/model/spend']")
    figures = page.evaluate("""() => {
        const nav = performance.getEntriesByType('navigation').at(-1);
        const resources = performance.getEntriesByType('resource');
        const paint = performance.getEntriesByName('first-contentful-paint')[0];
        const data = resources.find(r => r.name.includes('/api/data'));
        return {
            transferred_bytes: nav.transferSize + resources.reduce((s, r) => s + r.transferSize, 0),
            decoded_bytes: nav.decodedBodySize + resources.reduce((s, r) => s + r.decodedBodySize, 0),
            first_contentful_paint_ms: paint ? paint.startTime : null,
            charts_drawn_ms: data ? data.responseEnd : null,
        };
    }""")
    (ARTIFACTS / "metrics.json").write_text(json.dumps(figures, indent=2))
    print("\ndashboard:", json.dumps(figures))
    # Served compressed: what crossed the wire is well under what the page unpacks to.
    assert figures["transferred_bytes"] < figures["decoded_bytes"], figures
    assert figures["first_contentful_paint_ms"] is not None
    context.close()


class Elsewhere(http.server.SimpleHTTPRequestHandler):
    """Another site on this machine: a page that tries to read the dashboard with the user's
    cookie, and to call the API."""
    target = ""

    def do_GET(self):
        body = f"""<!doctype html><script>
        async function attempt(url) {{
          try {{ const r = await fetch(url, {{credentials: 'include'}}); return 'read ' + r.status + ' ' + (await r.text()).slice(0, 40); }}
          catch (e) {{ return 'blocked: ' + e.name; }}
        }}
        (async () => {{
          window.results = [await attempt('{self.target}/dashboard/api/data'),
                            await attempt('{self.target}/dashboard/api/csv/calls'),
                            await attempt('{self.target}/v1/usage')];
        }})();
        </script>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_page_on_another_origin_cannot_read_the_dashboard(dash, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(link(dash))
    page.wait_for_selector("main[data-ready]")
    session = [c for c in context.cookies() if c["name"].startswith("tollgate_dashboard_")][0]
    Elsewhere.target = dash.base
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        other = context.new_page()
        other.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        other.wait_for_function("window.results !== undefined")
        results = other.evaluate("window.results")
        assert all(r.startswith("blocked") for r in results), results
    finally:
        server.shutdown()
    # The daemon refuses it too, whatever the browser would let through: the cookie with a
    # foreign Origin, or from another site.
    for headers in ({"Origin": "http://127.0.0.1:1"}, {"Sec-Fetch-Site": "same-site"}, {}):
        req = urllib.request.Request(dash.base + "/dashboard/api/data",
                                     headers={"Cookie": f"{session['name']}={session['value']}", **headers})
        if headers:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req)
            assert e.value.code == 403, headers
        else:
            assert urllib.request.urlopen(req).status == 200
    # The API's own routes keep refusing any browser, the dashboard's origin included.
    req = urllib.request.Request(dash.base + "/v1/usage", headers={
        "Authorization": f"Bearer {dash.token}", "Origin": dash.base})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403
    context.close()


def test_a_used_or_expired_link_and_no_session_are_refused(dash, browser):
    context = browser.new_context()
    page = context.new_page()
    url = link(dash)
    assert page.goto(url).ok
    again = browser.new_context().new_page()
    r = again.goto(url)
    assert r.status == 403 and "used or has expired" in again.text_content("h1")
    late = link(dash, valid_for=1)
    time.sleep(1.5)
    r = again.goto(late)
    assert r.status == 403
    r = again.goto(dash.base + "/dashboard/")
    assert r.status == 401 and "tollgate dashboard" in again.text_content("body")
    # Refusals carry the same headers as the pages: no framing, no caching.
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"
    r = again.goto(dash.base + "/dashboard/api/data")
    assert r.status == 401
    # A guessed code opens nothing.
    r = again.goto(dash.base + "/dashboard/login?code=" + "0" * 64)
    assert r.status == 403
    context.close()
