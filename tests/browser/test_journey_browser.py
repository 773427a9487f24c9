"""The whole product in one real-browser run, by clicking only what a user clicks:
EHR launch -> private gate -> HITS -> danger check -> result -> referral list -> consent -> chart write,
then the social worker covering that site (MGH, through her EHR role) finds the referral in the queue and accepts it.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import lid_of
from tests.support.pages import DA5_NO, HITS_POSITIVE, check_answers, pass_gate, refer_to_the_first


def test_clinician_to_chart_to_social_work(launched_page, live_app, live_sandbox, new_context):
    page = launched_page("pat-joana", "enc-joana-chelsea")
    lid = lid_of(page)
    assert "Joana" in page.get_by_test_id("patient-name").inner_text()

    pass_gate(page)
    check_answers(page, HITS_POSITIVE)
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")  # the danger check is asked at /result (finding M2)
    check_answers(page, DA5_NO)
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")
    page.get_by_test_id("summary").wait_for()  # /result again after the danger check
    assert page.get_by_test_id("summary").get_attribute("data-interpretation") == "positive"
    assert page.get_by_test_id("urgent").count() == 0
    assert "hurt" not in page.url and "sometimes" not in page.url  # answers never travel in URLs

    page.get_by_test_id("to-referral").click()
    page.wait_for_url(f"**/l/{lid}/referrals")
    first = page.locator('[data-testid="result"]').first
    assert "HAVEN" in first.inner_text()  # MGH Chelsea's own advocacy program leads
    page.fill('[data-testid="safe-zip"]', "02150")
    with page.expect_navigation():  # POST, then the redirect back
        page.click('[data-testid="find"]')
    assert "02150" not in page.url
    refer_to_the_first(page, lid)
    # Safe contact is asked here, with no answer preselected; the preview follows the answer.
    assert not page.get_by_test_id("channel-none").is_checked()
    page.check('[data-testid="channel-none"]')
    expect(page.get_by_test_id("note-preview")).to_contain_text("Do not contact the patient")
    shown = page.get_by_test_id("note-preview").inner_text()
    page.get_by_test_id("consent-yes").click()
    page.get_by_test_id("all-written").wait_for()
    expect(page.get_by_test_id("label-alert")).to_be_hidden()

    # The chart holds exactly one labelled, minimal note with the text shown (other tests of this session
    # may write other notes for Joana in the shared sandbox).
    import base64

    from sandbox_ehr.store import get_store

    notes = [n for n in get_store(live_sandbox.app).search("DocumentReference", {"subject": "Patient/pat-joana"})
             if base64.b64decode(n["content"][0]["attachment"]["data"]).decode() == shown]
    assert len(notes) == 1
    codes = {c["code"] for c in notes[0]["meta"]["security"]}
    assert {"R", "SDV"} <= codes

    # Social work at MGH (Emery's PractitionerRole names MGH), in another browser profile, sees the referral.
    sw_page = new_context().new_page()
    sw_page.goto(live_app.url + "/launch/standalone")
    sw_page.select_option("#practitioner", "prac-emery")
    sw_page.click("#approve-button")
    sw_page.wait_for_url("**/worklist")
    row = sw_page.locator('[data-testid^="referral-"]').filter(has_text="Joana")
    assert row.count() == 1
    assert row.get_attribute("data-status") == "requested"
    text = row.inner_text().lower()
    assert "sometimes" not in text and "frequently" not in text and " 15 " not in text  # no answers, no score
    with sw_page.expect_navigation():
        row.get_by_test_id("open").click()
    with sw_page.expect_navigation():
        sw_page.get_by_test_id("set-accepted").click()
    expect(sw_page.get_by_test_id("facts")).to_have_attribute("data-status", "accepted")
