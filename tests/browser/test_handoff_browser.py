"""The warm hand-off in Chromium at 1366×768, from a sandbox EHR launch: high DA-5 with strangulation, at night on
Thanksgiving (the clock pinned). The urgent box offers the call to Passageway's pager; clicking it hands the operating
system the href with the extension (a stand-in ``xdg-open`` records what Chromium passes on); the outcome is recorded,
the referral made through the real pages, and the BWH social worker's queue row shows the outcome.

Screenshots of the urgent box and the outcome step go to ``IPV_SCREENSHOTS`` (else the test's tmp directory) as
handoff-*.png.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from tests.browser.conftest import CHROMIUM_ARGS, TIMEOUT_MS, lid_of
from tests.support import tools
from tests.support.pages import check_answers, pass_gate
from tests.support.shots import shots_dir

pytestmark = pytest.mark.handoff

VIEWPORT = {"width": 1366, "height": 768}
THANKSGIVING_9PM = datetime(2026, 11, 26, 21, 0, tzinfo=ZoneInfo("America/New_York"))
PAGER_HREF = "tel:+16177325520,31808"
HITS_HURT = {"hurt": "LA6482-9", "insult": "LA16644-9", "threaten": "LA10082-8", "scream": "LA10066-1"}
DA5_YES = ("escalation", "weapon", "strangulation")  # 3 of 5, strangulation among them
STAND_IN_XDG_OPEN = "#!/bin/sh\nprintf '%s\\n' \"$@\" >> \"$(dirname \"$0\")/handed-over.txt\"\n"



@pytest.fixture
def dialling_page(browser, live_app, tmp_path):
    """A Chromium profile (same Playwright as ``browser``) that lets the app's origin open tel: links without the
    "Open xdg-open?" prompt, with a stand-in xdg-open on PATH that writes down what it is handed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "xdg-open"
    stand_in.write_text(STAND_IN_XDG_OPEN)
    stand_in.chmod(0o755)
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text(json.dumps(
        {"protocol_handler": {"allowed_origin_protocol_pairs": {live_app.url: {"tel": True}}}}))
    context = browser.browser_type.launch_persistent_context(
        str(profile), executable_path=tools.chromium(), args=CHROMIUM_ARGS, headless=True, viewport=VIEWPORT,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.pages[0] if context.pages else context.new_page()
    yield page, bin_dir / "handed-over.txt"
    context.close()


def handed_over(record: Path, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.exists() and record.read_text().strip():
            return record.read_text().split()
        time.sleep(0.1)
    return []


def _axe_serious(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")]


def test_warm_handoff_after_hours_on_a_holiday(launched_page, dialling_page, live_app, new_context, tmp_path):
    page, record = dialling_page
    shots = shots_dir(tmp_path)
    live_app.app.extensions["clock"] = lambda: THANKSGIVING_9PM
    try:
        launched_page("pat-alice", "enc-alice-bwh", page=page)
        lid = lid_of(page)
        pass_gate(page)
        check_answers(page, HITS_HURT)
        page.get_by_test_id("submit").click()
        page.wait_for_url("**/result")  # the DA-5 is asked at /result
        for link_id in ("escalation", "weapon", "strangulation", "jealousy", "fear-for-life"):
            page.locator(f'input[name="q-{link_id}"][value="{"LA33-6" if link_id in DA5_YES else "LA32-8"}"]').check()
        page.get_by_test_id("submit").click()
        page.wait_for_url("**/result")
        page.get_by_test_id("summary").wait_for()

        # The urgent box, first on the page: high danger, the call to make now with the patient.
        urgent = page.get_by_test_id("urgent")
        expect(page.get_by_test_id("urgent-heading")).to_have_text("High danger (DA-5 ≥ 3)")
        expect(urgent).to_contain_text("Yes to: violence getting worse, weapon, strangulation.")
        handoff = page.get_by_test_id("handoff")
        expect(handoff.get_by_test_id("handoff-title")).to_have_text("Call the advocate now, with the patient")
        call = handoff.get_by_test_id("urgent-number")
        expect(call).to_have_text("1-617-732-5520 ext. 31808")
        expect(handoff).to_contain_text("closed today (Thanksgiving Day): page the advocate on call")
        assert call.get_attribute("href") == PAGER_HREF
        assert call.evaluate("a => a.href") == PAGER_HREF  # as Chromium parsed it
        assert call.is_visible() and call.bounding_box()["y"] + call.bounding_box()["height"] <= VIEWPORT["height"]
        page.screenshot(path=str(shots / "handoff-urgent-box.png"))
        assert _axe_serious(page) == []

        # Dial: Chromium hands the operating system the href, extension included.
        call.click()
        assert handed_over(record) == [PAGER_HREF]
        assert f"/l/{lid}/result" in page.url  # the page stays; the phone rings elsewhere

        # After the call: spoke with an advocate now.
        handoff.get_by_test_id("outcome-spoke_now").check()
        page.screenshot(path=str(shots / "handoff-outcome-step.png"))
        with page.expect_navigation():
            handoff.get_by_test_id("handoff-record").click()
        assert page.url.endswith(f"/l/{lid}/result#urgent")
        recorded = page.get_by_test_id("handoff-outcome")
        expect(recorded).to_have_text("Recorded: Spoke with an advocate now.")
        assert page.get_by_test_id("handoff-form").count() == 0
        page.screenshot(path=str(shots / "handoff-outcome-recorded.png"))
    finally:
        live_app.app.extensions.pop("clock", None)

    # The referral through the real pages: this site's program, phone is safe, consent.
    page.get_by_test_id("to-referral").click()
    page.wait_for_url(f"**/l/{lid}/referrals")
    expect(page.get_by_test_id("handoff-outcome")).to_have_text("Recorded: Spoke with an advocate now.")
    page.screenshot(path=str(shots / "handoff-referral-page.png"))
    page.check('[data-testid="select-passageway"]')
    page.click('[data-testid="save"]')
    page.get_by_test_id("saved").wait_for()
    page.get_by_test_id("to-consent").click()
    page.wait_for_url(f"**/l/{lid}/consent")
    page.check('[data-testid="channel-phone"]')
    preview = page.get_by_test_id("note-preview")
    expect(preview).to_contain_text("contact by phone is safe")  # the live preview has caught up
    assert "advocate" not in preview.inner_text()  # the hand-off is not in the chart note
    page.get_by_test_id("consent-yes").click()
    page.get_by_test_id("all-written").wait_for()
    app = live_app.app
    with app.app_context(), session_scope(app) as db:
        rid, code = db.execute(select(ReferralRecord.id, ReferralRecord.handoff)
                               .where(ReferralRecord.launch_id == lid)).one()
    assert code == "spoke_now"

    # Devon, BWH social work, in another browser profile: the queue row shows the outcome.
    sw = new_context(viewport=VIEWPORT).new_page()
    sw.goto(live_app.url + "/launch/standalone")
    sw.select_option("#practitioner", "prac-devon")
    sw.click("#approve-button")
    sw.wait_for_url("**/worklist")
    row = sw.get_by_test_id(f"referral-{rid}")
    expect(row).to_have_attribute("data-urgent", "yes")
    outcome = row.get_by_test_id("handoff")
    expect(outcome).to_have_attribute("data-outcome", "spoke_now")
    expect(outcome).to_have_attribute("title", "Warm hand-off: Spoke with an advocate now")
    expect(outcome).to_contain_text("☎ spoke now")
    row.scroll_into_view_if_needed()
    sw.screenshot(path=str(shots / "handoff-queue-row.png"))


def test_below_the_cut_off_the_clinicians_judgement_offers_the_call(launched_page, live_app, page, tmp_path):
    """DA-5 2 of 5: a danger sign, no call offered; "I judge this urgent" (CSRF as every form) offers it."""
    shots = shots_dir(tmp_path)
    page.set_viewport_size(VIEWPORT)
    live_app.app.extensions["clock"] = lambda: THANKSGIVING_9PM
    try:
        launched_page("pat-june", "enc-june-bwh", page=page)
        pass_gate(page)
        check_answers(page, HITS_HURT)
        page.get_by_test_id("submit").click()
        page.wait_for_url("**/result")
        for link_id in ("escalation", "weapon", "strangulation", "jealousy", "fear-for-life"):
            yes = link_id in ("weapon", "jealousy")
            page.locator(f'input[name="q-{link_id}"][value="{"LA33-6" if yes else "LA32-8"}"]').check()
        page.get_by_test_id("submit").click()
        page.wait_for_url("**/result")
        page.get_by_test_id("summary").wait_for()
        expect(page.get_by_test_id("urgent-heading")).to_have_text("Danger sign reported")
        expect(page.get_by_test_id("urgent")).to_contain_text("Yes to: weapon, violent jealousy.")
        assert page.get_by_test_id("handoff").count() == 0
        page.screenshot(path=str(shots / "handoff-danger-sign.png"))
        with page.expect_navigation():
            page.get_by_test_id("judge-urgent").click()
        expect(page.get_by_test_id("urgent-heading")).to_have_text("Urgent: your judgement")
        assert page.get_by_test_id("handoff").get_by_test_id("urgent-number").get_attribute("href") == PAGER_HREF
        assert page.get_by_test_id("judge-urgent").count() == 0
        page.screenshot(path=str(shots / "handoff-judged-urgent.png"))
    finally:
        live_app.app.extensions.pop("clock", None)
