"""The clinic tablet's exit in Debian's Chromium: from the patient's Escape (or Exit) on a question to the decoy
health-tips page shown. Target: under 1 s. The question is hidden at the key press itself (before any network) and
the decoy is drawn from the question page's own copy of it; the exit's request (answers deleted, tablet wiped) then
brings the server's tips page, which looks the same. Figures: the time to the decoy drawn, and to the server's tips
page loaded, with where the worst run's page load went (the exit's answer, the tips page, its stylesheet, its first
paint; from the exit's navigation, Navigation and Resource Timing). Figures only: nothing asserts timing.

    python -m benchmarks.bench_kiosk_exit [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from benchmarks.bench_writeback import Server
from sandbox_ehr.harness.launches import store_launch

TARGET_MS = 1000.0
CHROMIUM = "/usr/bin/chromium"
GATE = {"gate": {"status": "confirmed", "at": "2026-12-07T06:00:00+00:00"}}


def _app(tmp: Path) -> Any:
    from smart_app import create_app

    return create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp / 'app.db'}",
                       "SECRET_KEY": secrets.token_hex(16), "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                       "SESSION_COOKIE_SECURE": False, "WTF_CSRF_ENABLED": False})


def _paired_tablet(app: Any, url: str, browser: Any) -> Any:
    """A launch past the gate, its code read by the clinician's browser, a fresh tablet on question 2."""
    bid = secrets.token_urlsafe(24)
    lid = store_launch(app, bid=bid, data=GATE)
    cookie = app.session_interface.get_signing_serializer(app).dumps({"bid": bid})
    clinician = browser.new_context()
    clinician.add_cookies([{"name": app.config["SESSION_COOKIE_NAME"], "value": cookie, "url": url}])
    page = clinician.new_page()
    page.goto(f"{url}/l/{lid}/tablet")
    page.get_by_test_id("mode-paired").check()
    page.get_by_test_id("tablet-go").click()
    code = page.get_by_test_id("tablet-code").inner_text().replace(" ", "")
    clinician.close()
    tablet = browser.new_context(viewport={"width": 1024, "height": 768}).new_page()
    tablet.goto(f"{url}/tablet")
    tablet.get_by_test_id("pair-code").fill(code)
    tablet.get_by_test_id("pair-start").click()
    tablet.get_by_test_id("tablet-begin").click()
    tablet.get_by_test_id("option-5").click()
    tablet.get_by_test_id("tablet-question").wait_for()
    tablet.wait_for_load_state("load")  # its script listens for the key
    return tablet


# Where the server's tips page load went, in ms from the exit's navigation (the form's submit).
PHASES_JS = """() => {
  const n = performance.getEntriesByType('navigation')[0];
  const css = performance.getEntriesByType('resource').find(r => r.name.includes('kiosk.css'));
  const paint = performance.getEntriesByType('paint').find(p => p.name === 'first-contentful-paint');
  return {exit_answered: n.redirectEnd, tips_html: n.responseEnd, stylesheet: css ? css.responseEnd : null,
          first_paint: paint ? paint.startTime : null, loaded: n.loadEventEnd};
}"""


# The page's own decoy, two frames after the key (after kiosk.js's handler: listeners run in the order added), told
# through the console: Playwright's locators wait for the exit's navigation, so they only see the server's page.
DRAWN_JS = """() => document.addEventListener('keydown', () => {
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const main = document.getElementById('main');
    if (main.querySelector('[data-testid="tablet-tips"]') && getComputedStyle(main).visibility === 'visible') {
      console.log('decoy drawn');
    }
  }));
})"""


@dataclass
class Run:
    decoy_ms: float  # key press to the decoy visible
    page_ms: float  # key press to the server's tips page loaded (the exit's request done)
    phases: dict[str, float | None]


def run(runs: int) -> list[Run]:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-kiosk-"))
    app = _app(tmp)
    timings: list[Run] = []
    with Server(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        for _ in range(runs):
            tablet = _paired_tablet(app, server.url, browser)
            tablet.evaluate(DRAWN_JS)
            drawn: list[float] = []
            tablet.on("console", lambda m, seen=drawn: m.text == "decoy drawn" and seen.append(time.perf_counter()))
            start = time.perf_counter()
            tablet.keyboard.press("Escape")
            tablet.get_by_test_id("tablet-tips").wait_for()
            shown = min([time.perf_counter(), *drawn])
            tablet.wait_for_url("**/tablet/tips**", wait_until="load")
            page = (time.perf_counter() - start) * 1000
            timings.append(Run((shown - start) * 1000, page, tablet.evaluate(PHASES_JS)))
            tablet.context.close()
        browser.close()
    app.extensions["db_engine"].dispose()
    return timings


def _spread(values: list[float]) -> str:
    p90 = sorted(values)[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    return f"median {statistics.median(values):.0f} ms, p90 {p90:.0f} ms, max {max(values):.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench_kiosk_exit")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"kiosk exit: skipped, no Chromium at {CHROMIUM}")
        return
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    timings = run(args.runs)
    worst = max(timings, key=lambda r: r.decoy_ms)
    verdict = "pass" if worst.decoy_ms < TARGET_MS else "miss"
    print(f"kiosk exit to decoy (Chromium, {len(timings)} runs, load {load}): "
          f"{_spread([r.decoy_ms for r in timings])} (target < {TARGET_MS:.0f} ms): {verdict}", flush=True)
    print(f"  to the server's tips page loaded (answers deleted, tablet wiped): "
          f"{_spread([r.page_ms for r in timings])}", flush=True)
    slowest = max(timings, key=lambda r: r.page_ms)
    phases = ", ".join(f"{name.replace('_', ' ')} {value:.0f}" for name, value in slowest.phases.items()
                       if value is not None)
    print(f"  slowest page load, ms from the exit's submit: {phases}", flush=True)


if __name__ == "__main__":
    main()
