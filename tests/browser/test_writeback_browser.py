"""Real browser: consent -> chart write through the outbox -> confirmation, launched from the sandbox EHR."""

from __future__ import annotations

import base64

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import lid_of

pytestmark = pytest.mark.browser

SCREENING = {"instrument": "hits", "questionnaire": "urn:test:hits", "score": 14, "interpretation": "positive",
             "danger": True, "answers": {}, "completed_at": "2026-01-01T10:00:00+00:00"}
REFERRAL = {"site": "mgh-chelsea", "results": [{"service_id": "haven", "program": "HAVEN at MGH",
                                                "phone": "617-724-0054"}],
            "selected": ["haven"]}


def _screened(live_app, lid: str) -> None:
    """The screening and referral steps (other features) leave this in the launch's working data."""
    from smart_app.launch.state import Launch
    from smart_app.store.db import session_scope
    from smart_app.store.models import LaunchRecord

    with live_app.app.app_context(), session_scope(live_app.app) as db:
        Launch(db.get(LaunchRecord, lid)).update_data(screening=SCREENING, referral=REFERRAL)


def _stored_note(live_sandbox, identifier_value: str) -> list[dict]:
    from sandbox_ehr.store import get_store

    with live_sandbox.app.app_context():
        return get_store(live_sandbox.app).search(
            "DocumentReference", {"identifier": f"urn:ipv-screen:writeback|{identifier_value}"})


def test_consent_writes_to_the_chart_and_confirms(launched_page, live_app, live_sandbox):
    page = launched_page("pat-june", "enc-june-bwh")
    lid = lid_of(page)
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/consent")
    preview = page.get_by_test_id("note-preview").inner_text()
    assert "Safe contact: not answered yet." in preview and "HAVEN at MGH" in preview
    assert not page.get_by_test_id("res-Observation").is_checked()  # the score is off by default
    # Each change updates the preview and the script before consent (live, no inline script).
    page.check('[data-testid="channel-email"]')
    expect(page.get_by_test_id("note-preview")).to_contain_text("contact by email is safe")
    page.check('[data-testid="res-Observation"]')
    expect(page.get_by_test_id("script")).to_contain_text("screening score will be recorded")
    page.check('[data-testid="channel-none"]')
    expect(page.get_by_test_id("note-preview")).to_contain_text("Do not contact the patient")
    shown = page.get_by_test_id("note-preview").inner_text()
    page.get_by_test_id("consent-yes").click()
    page.wait_for_url(f"{live_app.url}/l/{lid}/consent/done")
    # The page polls /progress until the worker has written everything.
    expect(page.get_by_test_id("all-written")).to_be_visible(timeout=20_000)
    for kind in ("Observation", "ServiceRequest", "DocumentReference"):
        row = page.get_by_test_id(f"row-{kind}")
        expect(row).to_have_attribute("data-state", "written")
        expect(row).to_contain_text("Verified")
    # What the EHR holds: one note with the business identifier of this referral, labelled.
    from smart_app.store.db import session_scope
    from smart_app.store.models import OutboxItem

    with live_app.app.app_context(), session_scope(live_app.app) as db:
        doc_row = db.query(OutboxItem).filter_by(kind="DocumentReference", launch_id=lid).one()
        ident = doc_row.identifier_value
    (note,) = _stored_note(live_sandbox, ident)
    assert {c["code"] for c in note["meta"]["security"]} >= {"R", "SDV", "NOPAT"}
    assert base64.b64decode(note["content"][0]["attachment"]["data"]).decode() == shown
    # Back + resubmit does not write a second referral.
    page.goto(f"{live_app.url}/l/{lid}/consent")
    page.wait_for_url(f"{live_app.url}/l/{lid}/consent/done")
    assert len(_stored_note(live_sandbox, ident)) == 1


def test_no_consent_writes_nothing(launched_page, live_app):
    page = launched_page("pat-alice", "enc-alice-bwh")
    lid = lid_of(page)
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/consent")
    page.get_by_test_id("consent-no").click()
    page.get_by_test_id("declined-message").wait_for()
    from smart_app.store.db import session_scope
    from smart_app.store.models import OutboxItem

    with live_app.app.app_context(), session_scope(live_app.app) as db:
        assert db.query(OutboxItem).filter_by(launch_id=lid).count() == 0


def test_confirmation_updates_itself_inside_the_ehr_frame(launched_page, live_app, live_sandbox):
    """Inside the EHR's frame: the preview follows the safe-contact answer and, after consent, the status
    polled from /l/<lid>/progress turns to written without a reload."""
    frame = launched_page("pat-grace", "enc-grace-mgh", iframe=True)
    lid = lid_of(frame)
    _screened(live_app, lid)
    frame.goto(f"{live_app.url}/l/{lid}/consent")
    frame.check('[data-testid="channel-phone"]')
    expect(frame.get_by_test_id("note-preview")).to_contain_text("contact by phone is safe")
    frame.get_by_test_id("consent-yes").click()
    frame.wait_for_url(f"{live_app.url}/l/{lid}/consent/done")
    expect(frame.get_by_test_id("row-DocumentReference")).to_have_attribute("data-state", "written",
                                                                            timeout=20_000)
    expect(frame.get_by_test_id("all-written")).to_be_visible()
    assert "progress" not in frame.url
