"""A social worker's shift in Chromium: standalone launch as Devon (BWH social worker, coverage from her EHR
role), filter urgent, open the overdue referral, log an attempt on the channel the patient marked safe, accept,
start and complete it — with axe-core finding nothing serious on the queue and the referral page. Another
site's referral never appears."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord, ReferralRecord
from tests.browser.conftest import open_queue
from tests.support.shots import shots_dir
from tests.worklist.support import PROGRAM, clinician_context

pytestmark = pytest.mark.worklist


def _axe_serious(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")]


def _refer(live_app, live_sandbox, site: str, patient: str, encounter: str, name: str, *, danger: bool,
           channel: str, hours_ago: float) -> str:
    """A consented referral as the consent view stores it (the consent page itself is tested elsewhere; this
    app runs with CSRF on, so the seed goes straight to the database)."""
    from smart_app.launch.visit_memory import encounter_key, patient_key
    from smart_app.store.crypto import encrypt_json
    from smart_app.worklist.scope import add_site_keys, referral_site_keys, site_display_name

    app = live_app.app
    ctx = clinician_context(site, patient, name, encounter=encounter)
    service, program = PROGRAM[site]
    with app.test_request_context(), session_scope(app) as db:
        record = ReferralRecord(iss=live_sandbox.iss, profile="sandbox", site=None,
                                site_name=site_display_name(ctx), urgent=danger, status="requested",
                                patient_key=patient_key(live_sandbox.iss, ctx),
                                encounter_key=encounter_key(live_sandbox.iss, ctx),
                                created_at=datetime.now(UTC) - timedelta(hours=hours_ago))
        db.add(record)
        db.flush()
        add_site_keys(db, record.id, referral_site_keys(ctx, None))
        record.summary_enc = encrypt_json({
            "patient_name": name, "mrn": f"MRN-{patient}", "patient_id": patient, "language": "en",
            "interpreter_needed": False, "encounter_start": "2026-11-20T09:00:00-05:00",
            "programs": [{"id": service, "name": program}], "safe_contact": {"channel": channel, "note": None},
            "clinician": "Dr. Avery Testdoctor, MD", "kinds": []})
        return record.id


@pytest.fixture(params=["app", "per-launch iss"])
def launcher(request, live_sandbox):
    """Where the social worker starts: the app's standalone URL, or the sandbox's launcher with per-launch iss on
    (for the whole test: the launch's later calls go to its own iss)."""
    live_sandbox.app.config["SANDBOX_PER_LAUNCH_ISS"] = request.param == "per-launch iss"
    yield request.param
    live_sandbox.app.config["SANDBOX_PER_LAUNCH_ISS"] = False


def test_a_social_workers_shift(live_app, live_sandbox, new_context, launcher):
    """The shift from the app's own standalone URL (the sandbox's plain iss), and from the sandbox's standalone
    launcher with per-launch iss on (each launch an iss of its own, the deployment's ehrs pattern tying it to the
    sandbox EHR)."""
    tag = secrets.token_hex(3)
    urgent = _refer(live_app, live_sandbox, "bwh", "pat-alice", "enc-alice-bwh", f"Alice Shift{tag}", danger=True,
                    channel="phone", hours_ago=30)
    routine = _refer(live_app, live_sandbox, "bwh", "pat-june", "enc-june-bwh", f"June Shift{tag}", danger=False,
                     channel="text", hours_ago=3)
    other_site = _refer(live_app, live_sandbox, "mgh", "pat-grace", "enc-grace-mgh", f"Grace Shift{tag}",
                        danger=True, channel="phone", hours_ago=2)

    page = new_context().new_page()
    if launcher == "app":
        page.goto(live_app.url + "/launch/standalone")
    else:
        page.goto(live_sandbox.url + "/ehr")
        page.click("#standalone-button")
        page.wait_for_url("**/l/*/auth/authorize?**")
    page.select_option("#practitioner", "prac-devon")
    page.click("#approve-button")
    page.wait_for_url("**/worklist")
    with live_app.app.app_context(), session_scope(live_app.app) as db:
        iss = db.get(LaunchRecord, page.url.split("/l/")[1].split("/")[0]).iss
    assert iss.startswith(live_sandbox.url + "/l/") == (launcher == "per-launch iss")
    assert page.get_by_test_id(f"referral-{urgent}").count() == 1
    assert page.get_by_test_id(f"referral-{routine}").count() == 1
    assert page.get_by_test_id(f"referral-{other_site}").count() == 0  # MGH is not Devon's site
    assert f"Grace Shift{tag}" not in page.content()
    assert _axe_serious(page) == []

    # Filter urgent (from the filter bar's Urgency menu): the overdue urgent referral, highlighted.
    page.get_by_test_id("facet-urgency").locator("summary").click()
    with page.expect_navigation():
        page.get_by_test_id("filter-urgency-urgent").click()
    assert page.get_by_test_id(f"referral-{routine}").count() == 0
    row = page.get_by_test_id(f"referral-{urgent}")
    expect(row).to_have_attribute("data-overdue", "yes")
    assert "Brigham and Women's Hospital" in row.get_by_test_id("site").inner_text()

    # Open it: both program lines on the referral's page, never wrapped. Log an attempt on the safe channel,
    # accept, start, complete.
    with page.expect_navigation():
        row.get_by_test_id("open").click()
    main_line = page.get_by_test_id("phone-main").first
    after = page.get_by_test_id("phone-after-hours").first
    assert main_line.inner_text() == "1-617-732-8753" and after.inner_text() == "1-617-732-5520 ext. 31808"
    for phone in (main_line, after):
        assert phone.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap"
        box = phone.bounding_box()
        line = phone.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 20")
        assert box["height"] < 1.8 * line  # one line
    assert _axe_serious(page) == []
    options = page.get_by_test_id("contact-channel").locator("option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["phone", "patient_initiated"]
    page.get_by_test_id("contact-channel").select_option("phone")
    page.get_by_test_id("contact-outcome").select_option("reached")
    page.get_by_test_id("contact-note").fill("Safe to call after 5pm")
    with page.expect_navigation():
        page.get_by_test_id("contact-save").click()
    history = page.get_by_test_id("history")
    expect(history).to_contain_text("Phone: Spoke with the patient")
    expect(history).to_contain_text("Safe to call after 5pm")
    for step, shown in (("accepted", "Accepted"), ("in-progress", "In progress"), ("completed", "Completed")):
        if step == "completed":  # closing says how it ended
            page.get_by_test_id("closing-outcome").select_option("reached_supported")
        with page.expect_navigation():
            page.get_by_test_id(f"set-{step}").click()
        expect(page.get_by_test_id("facts")).to_have_attribute("data-status", step)
        expect(page.get_by_test_id("status-label")).to_have_text(shown)
    assert page.get_by_test_id("contact-form").count() == 0  # closed: nothing more to log
    assert _axe_serious(page) == []

    # Back in the queue the completed referral has left the open list; the contact ended the highlight.
    page.goto(page.url.split("/worklist")[0] + "/worklist?status=all")
    expect(page.get_by_test_id(f"referral-{urgent}")).to_have_attribute("data-status", "completed")
    expect(page.get_by_test_id(f"referral-{urgent}")).to_have_attribute("data-overdue", "no")
    expect(page.get_by_test_id(f"referral-{urgent}").get_by_test_id("closing-outcome")).to_have_text(
        "· Reached and supported")


@pytest.mark.routing
def test_the_queue_shows_its_referrals_first_at_1366x768(live_app, live_sandbox, new_context, tmp_path):
    # Referrals first: filters in one compact bar, notices collapsed, one line per referral (at most 60 px), so
    # that at least 8 referrals are in sight without scrolling on a 1366x768 screen.
    tag = secrets.token_hex(3)
    made = [_refer(live_app, live_sandbox, "bwh", f"pat-row{k}", f"enc-row{k}-bwh", f"Row{k} Fold{tag}",
                   danger=k % 3 == 0, channel="phone", hours_ago=1 + k) for k in range(12)]
    page = new_context(viewport={"width": 1366, "height": 768}).new_page()
    open_queue(page, live_app.url, "prac-devon")
    page.screenshot(path=str(shots_dir(tmp_path) / "queue-1366x768.png"))
    rows = page.locator("[data-testid^='referral-']")
    boxes = [b for b in rows.evaluate_all("rs => rs.map(r => { const b = r.getBoundingClientRect();"
                                          " return {top: b.top, bottom: b.bottom, height: b.height}; })")]
    assert len(boxes) >= len(made)
    assert max(b["height"] for b in boxes) <= 60
    in_sight = [b for b in boxes if b["top"] >= 0 and b["bottom"] <= 768]
    assert len(in_sight) >= 8, f"{len(in_sight)} referrals visible without scrolling"
