"""The clinic tablet's exit in Debian's Chromium: from the patient's Escape (or Exit) on a question to the decoy
health-tips page shown, with the answers already deleted and the tablet wiped on the way. Target: under 1 s. The
question is hidden at the key press itself (before any network), so the figure is the time until the decoy is
drawn. Figures only: nothing asserts timing.

    python -m benchmarks.bench_kiosk_exit [--runs 20]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
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


def run(runs: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-kiosk-"))
    app = _app(tmp)
    timings: list[float] = []
    with Server(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        for _ in range(runs):
            tablet = _paired_tablet(app, server.url, browser)
            start = time.perf_counter()
            tablet.keyboard.press("Escape")
            tablet.get_by_test_id("tablet-tips").wait_for()
            timings.append((time.perf_counter() - start) * 1000)
            tablet.context.close()
        browser.close()
    app.extensions["db_engine"].dispose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench_kiosk_exit")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"kiosk exit: skipped, no Chromium at {CHROMIUM}")
        return
    timings = run(args.runs)
    median = statistics.median(timings)
    p90 = sorted(timings)[min(len(timings) - 1, round(0.9 * (len(timings) - 1)))]
    worst = max(timings)
    verdict = "pass" if worst < TARGET_MS else "miss"
    print(f"kiosk exit to decoy (Chromium, {len(timings)} runs): median {median:.0f} ms, p90 {p90:.0f} ms, "
          f"max {worst:.0f} ms (target < {TARGET_MS:.0f} ms): {verdict}", flush=True)


if __name__ == "__main__":
    main()
