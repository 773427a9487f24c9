"""Working a referral in Chromium at 1366x768: the queue's busiest rows (overdue with its due time, taken by a
colleague with a long name, an interpreter, a warm hand-off, a closing outcome) stay one
line of at most 60 px; Devon takes a referral and hands it over from its page, and closes another with an outcome,
with axe-core finding nothing serious."""

from __future__ import annotations

import secrets

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from smart_app.store.crypto import decrypt_json, encrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from tests.browser.conftest import open_queue
from tests.browser.test_worklist_browser import _axe_serious, _refer
from tests.support.shots import shots_dir

pytestmark = [pytest.mark.worklist, pytest.mark.routing]


def _set(app, rid, assignee_name, summary, **values):
    with app.app_context(), session_scope(app) as db:
        record = db.get(ReferralRecord, rid)
        db.execute(update(ReferralRecord).where(ReferralRecord.id == rid)
                   .values(summary_enc=encrypt_json({**decrypt_json(record.summary_enc), **summary}),
                           assignee_name_enc=encrypt_json(assignee_name), **values))


def test_busy_rows_stay_one_line_and_a_referral_is_taken_handed_over_and_closed(live_app, live_sandbox, new_context,
                                                                                  tmp_path):
    app = live_app.app
    tag = secrets.token_hex(3)
    made = [_refer(live_app, live_sandbox, "bwh", f"pat-busy{k}", f"enc-busy{k}-bwh",
                   f"Maximiliana Esperanza Busy{k}{tag}", danger=k % 2 == 0, channel="phone", hours_ago=30 + k)
            for k in range(9)]
    for k, rid in enumerate(made):
        _set(app, rid, "Alexandria Konstantinopoulou-Whitfield", {"interpreter_needed": True,
                                                                   "interpreter_language": "pt"},
             assignee="Practitioner/prac-colleague", handoff="spoke_now" if k % 2 == 0 else None)
    page = new_context(viewport={"width": 1366, "height": 768}).new_page()
    open_queue(page, live_app.url, "prac-devon")
    page.screenshot(path=str(shots_dir(tmp_path) / "busy-queue-1366x768.png"))
    row = page.get_by_test_id(f"referral-{made[0]}")
    expect(row).to_have_attribute("data-overdue", "yes")
    expect(row.get_by_test_id("row-interpreter")).to_have_text("Portuguese")
    expect(row.get_by_test_id("assignee")).to_have_attribute("title", "Alexandria Konstantinopoulou-Whitfield")
    # The interpreter's language is in sight, not cut off (a long name's assignee is, with the whole name as title).
    assert row.get_by_test_id("row-interpreter").evaluate("e => e.scrollWidth <= e.clientWidth")
    heights = page.locator("[data-testid^='referral-']").evaluate_all(
        "rs => rs.map(r => r.getBoundingClientRect().height)")
    assert len(heights) >= len(made) and max(heights) <= 60, heights

    # Devon takes the first one from its page, then hands it back to the colleague she has seen in the queue.
    with page.expect_navigation():
        row.get_by_test_id("open").click()
    with page.expect_navigation():
        page.get_by_test_id("take").click()
    expect(page.get_by_test_id("assignee")).to_contain_text("(you)")
    assert _axe_serious(page) == []
    page.get_by_test_id("handover-typed").fill("Practitioner/prac-colleague")
    with page.expect_navigation():
        page.get_by_test_id("handover").click()
    expect(page.get_by_test_id("assignee")).to_have_attribute("data-assignee", "Practitioner/prac-colleague")
    expect(page.get_by_test_id("history")).to_contain_text("Taken")
    expect(page.get_by_test_id("history")).to_contain_text("Handed over to")

    # Declining without an outcome is refused on the page; with one it closes.
    with page.expect_navigation():
        page.get_by_test_id("set-rejected").click()
    expect(page.get_by_test_id("outcome-error")).to_be_visible()
    page.get_by_test_id("closing-outcome").select_option("referred_elsewhere")
    with page.expect_navigation():
        page.get_by_test_id("set-rejected").click()
    expect(page.get_by_test_id("closing-outcome-shown")).to_have_text("Referred elsewhere")
    assert _axe_serious(page) == []
