"""The queue a social worker works from: triage view, contact log, Task statuses, memory across launches,
retention. HTTP through the Flask test client; the EHR is unreachable here (writes stay queued)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from config.current import replace_settings
from fhir.builders import reference_code
from smart_app.store.db import session_scope
from smart_app.store.models import (
    ContactAttempt,
    OutboxItem,
    PatientMark,
    ReferralEvent,
    ReferralProgram,
    ReferralRecord,
    ReferralSite,
)
from smart_app.worklist.retention import purge_referrals
from tests.worklist.support import (
    EHR1,
    SNOMED_SW,
    clinician_context,
    make_referral,
    referral_data,
    role,
    worker_context,
)
from tests.writeback.support import consent

pytestmark = pytest.mark.worklist

BWH_AND_MGH = [role([SNOMED_SW], organizations=["Organization/org-bwh", "Organization/org-mgh"])]


SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"


def _sw(app, make_launch, roles=BWH_AND_MGH):
    client = app.test_client()
    return client, make_launch(client, context=worker_context("Practitioner/sw", "Sam Social", roles, SW_SCOPE),
                               iss=EHR1, kind="standalone")


def _age(app, rid, hours):
    """Made ``hours`` ago, before due times were stored: due its urgency's time later, around the clock (1 hour
    urgent, 2 days routine by default)."""
    with app.app_context(), session_scope(app) as db:
        db.execute(update(ReferralRecord).where(ReferralRecord.id == rid)
                   .values(created_at=datetime.now(UTC) - timedelta(hours=hours), due_at=None))


def _rows(page):
    return re.findall(r'data-testid="referral-([^"]+)"', page)


def test_triage_view_names_times_phones_and_highlights(app, make_launch):
    urgent_old = make_referral(app, make_launch, "mgh", "p1", "Uma Urgent", danger=True, language="es",
                               interpreter=True)
    urgent_new = make_referral(app, make_launch, "bwh", "p2", "Ursula Recent", danger=True)
    routine = make_referral(app, make_launch, "bwh", "p3", "Rita Routine")
    _age(app, urgent_old, 30)
    _age(app, routine, 24 * 9)
    client, lid = _sw(app, make_launch)
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    # Overdue first (urgent before routine), then urgent, then the longest waiting.
    assert _rows(page) == [urgent_old, routine, urgent_new]
    row = page.split(f'data-testid="referral-{urgent_old}"')[1].split("</tr>")[0]
    assert 'data-overdue="yes"' in page.split(f'data-testid="referral-{urgent_old}"')[1][:200]
    assert 'data-overdue="no"' in page.split(f'data-testid="referral-{urgent_new}"')[1][:200]
    assert "Overdue" in row and "29 h late" in row and "30 h" in row  # due an hour after it was made
    assert "Massachusetts General Hospital" in row and "mgh" not in re.sub(r"<[^>]+>", "", row).split("Hospital")[0]
    # One line per referral: name, program, safe contact, plain status label and the chart's reference code.
    assert "Uma Urgent" in row and "HAVEN at MGH" in row and "Phone" in row and "New — not yet accepted" in row
    assert reference_code(urgent_old) in row and "passageway-bwh" not in page
    # The details are on the referral's own page: language, interpreter, clinician, visit date, both HAVEN lines
    # from the directory (never wrapped, each a link that dials it), local time zone.
    detail = client.get(f"/l/{lid}/worklist/{urgent_old}").get_data(as_text=True)
    assert "Spanish" in detail and "Interpreter needed" in detail and "Dr. Avery Testdoctor" in detail
    assert "Visit 2026-11-29" in detail  # encounter date
    assert '<a href="tel:+16177240054" class="phone" data-testid="phone-main">1-617-724-0054</a>' in detail
    assert '<a href="tel:+16177262241" class="phone" data-testid="phone-after-hours">1-617-726-2241</a>' in detail
    assert "New — not yet accepted" in detail and ("EST" in detail or "EDT" in detail) and "UTC" not in detail
    assert reference_code(urgent_old) in detail
    css = client.get("/static/worklist.css").get_data(as_text=True)
    assert re.search(r"\.phone[^{]*\{[^}]*white-space:\s*nowrap", css)
    # Filters with counts.
    urgent = client.get(f"/l/{lid}/worklist?urgency=urgent").get_data(as_text=True)
    assert _rows(urgent) == [urgent_old, urgent_new]
    assert re.search(r'data-testid="filter-urgency-overdue"[^>]*>[^<]*<span class="count">\(2\)', urgent)
    assert re.search(r'data-testid="filter-site-Brigham and Women&#39;s Hospital"[^>]*>[^<]*<span class="count">\(1\)',
                     urgent)  # with urgency=urgent kept: one urgent referral at BWH
    assert _rows(client.get(f"/l/{lid}/worklist?age=over_7_days").get_data(as_text=True)) == [routine]
    assert _rows(client.get(f"/l/{lid}/worklist?program=Passageway at BWH").get_data(as_text=True)) == \
        [routine, urgent_new]  # the routine one is overdue (9 days)
    assert _rows(client.get(f"/l/{lid}/worklist?sort=newest").get_data(as_text=True))[0] == urgent_new
    assert _rows(client.get(f"/l/{lid}/worklist?site=Massachusetts General Hospital").get_data(as_text=True)) == \
        [urgent_old]


def test_contact_log_only_on_safe_channels_encrypted_and_in_history(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Tess Text", channel="text", danger=True)
    none = make_referral(app, make_launch, "bwh", "p2", "Nora Nochannel", channel="none")
    _age(app, rid, 30)
    client, lid = _sw(app, make_launch)
    page = client.get(f"/l/{lid}/worklist/{rid}").get_data(as_text=True)
    select_html = page.split('data-testid="contact-channel"')[1].split("</select>")[0]
    options = re.findall(r'<option value="([^"]+)"', select_html)
    assert options == ["text", "patient_initiated"]
    refused = client.post(f"/l/{lid}/worklist/{rid}/contact", data={"channel": "phone", "outcome": "reached"})
    assert "error=channel" in refused.headers["Location"]
    none_page = client.get(f"/l/{lid}/worklist/{none}").get_data(as_text=True)
    assert re.findall(r'<option value="([^"]+)"', none_page.split('data-testid="contact-channel"')[1]
                      .split("</select>")[0]) == ["patient_initiated"]
    note = "Left no message; try Tuesday am"
    assert client.post(f"/l/{lid}/worklist/{rid}/contact",
                       data={"channel": "text", "outcome": "no_answer", "note": note}).status_code == 302
    assert client.post(f"/l/{lid}/worklist/{rid}/contact",
                       data={"channel": "text", "outcome": "reached", "note": "x" * 281}).status_code == 302
    with app.app_context(), session_scope(app) as db:
        attempts = list(db.scalars(select(ContactAttempt)))
        assert len(attempts) == 1 and note.encode() not in attempts[0].detail_enc
        assert b"text" not in attempts[0].detail_enc and b"no_answer" not in attempts[0].detail_enc
    history = client.get(f"/l/{lid}/worklist/{rid}/history").get_data(as_text=True)
    assert "Text message: No answer (no message left)" in history and note in history and "Sam Social" in history
    # A contact attempt ends the overdue highlight.
    assert 'data-overdue="no"' in client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert client.get(f"/l/{lid}/worklist/{rid}/export.txt").get_data(as_text=True).count(note) == 1


def test_statuses_follow_task_status_with_valid_moves_only(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Sue Status")
    client, lid = _sw(app, make_launch)
    page = client.get(f"/l/{lid}/worklist/{rid}").get_data(as_text=True)
    assert re.findall(r'data-testid="set-([a-z-]+)"', page) == ["accepted", "rejected", "cancelled"]
    for bad in ("completed", "in-progress", "bogus", ""):
        assert client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": bad}).status_code == 400
    for step in ("accepted", "in-progress", "on-hold", "in-progress", "completed"):
        assert client.post(f"/l/{lid}/worklist/{rid}/status",
                           data={"status": step, "outcome": "reached_supported"}).status_code == 302
    page = client.get(f"/l/{lid}/worklist/{rid}").get_data(as_text=True)
    assert 'data-status="completed"' in page and 'data-testid="set-' not in page
    assert "On hold → In progress" in page and "contact-form" not in page
    assert client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": "in-progress"}).status_code == 400
    with app.app_context(), session_scope(app) as db:
        assert db.scalar(select(func.count()).select_from(ReferralEvent)) == 5
        assert db.get(ReferralRecord, rid).closed_at is not None
    # The sandbox profile takes status updates: each change queued a chart update (the EHR is down here).
    assert "Status changes are sent to the chart" in page


def test_queue_says_when_the_ehr_takes_no_status_updates(app, make_launch):
    replace_settings(app, EHR_PROFILE="epic")
    rid = make_referral(app, make_launch, "bwh", "p1", "Eve Epic")
    client, lid = _sw(app, make_launch)
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert 'data-on="no"' in page and "does not take status updates" in page
    client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": "accepted"})
    with app.app_context(), session_scope(app) as db:
        assert db.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.operation == "status")) == 0


def test_second_launch_shows_one_line_and_asks_before_a_second_referral(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p-same", "Mona Memory", encounter="enc-same")
    clinician = app.test_client()
    data = referral_data("bwh")
    lid = make_launch(clinician, context=clinician_context("bwh", "p-same", "Mona Memory", encounter="enc-same"),
                      data={"referral": data["referral"]}, iss=EHR1)
    gate = clinician.get(f"/l/{lid}/").get_data(as_text=True)
    line = gate.split('data-testid="gate-earlier"')[1].split("</p>")[0]
    assert "referral open, not contacted yet" in line and "(this visit)" in line
    assert "14" not in line and "positive" not in line.lower() and "HITS" not in line
    # Social work reaches the patient; the next launch says "contacted".
    sw, swid = _sw(app, make_launch)
    sw.post(f"/l/{swid}/worklist/{rid}/contact", data={"channel": "phone", "outcome": "reached"})
    assert "referral open, contacted" in clinician.get(f"/l/{lid}/").get_data(as_text=True)
    # Another EHR's launch for a patient with the same id knows nothing.
    other = app.test_client()
    olid = make_launch(other, context=clinician_context("bwh", "p-same", "Mona Memory"), iss=EHR1 + "2")
    assert 'data-testid="gate-earlier"' not in other.get(f"/l/{olid}/").get_data(as_text=True)
    # Same visit: no second referral without the explicit choice.
    clinician2 = app.test_client()
    lid2 = make_launch(clinician2, context=clinician_context("bwh", "p-same", "Mona Memory", encounter="enc-same"),
                       data=referral_data("bwh"), iss=EHR1)
    resp = consent(clinician2, lid2, channel="phone")
    assert resp.status_code == 409 and 'data-testid="second-referral-notice"' in resp.get_data(as_text=True)
    with app.app_context(), session_scope(app) as db:
        assert db.scalar(select(func.count()).select_from(ReferralRecord)) == 1
    resp = consent(clinician2, lid2, channel="phone", second_referral="yes")
    assert resp.status_code == 302
    with app.app_context(), session_scope(app) as db:
        assert db.scalar(select(func.count()).select_from(ReferralRecord)) == 2


def test_screen_without_referral_is_remembered_by_date_only(app, make_launch):
    first = app.test_client()
    ctx = clinician_context("mgh", "p-scr", "Sara Screened")
    lid = make_launch(first, context=ctx, iss=EHR1)
    first.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
    never = "LA6270-8"  # HITS "Never" (LOINC answer code)
    resp = first.post(f"/l/{lid}/screen", data={"instrument": "hits", "q-hurt": never, "q-insult": never,
                                               "q-threaten": never, "q-scream": never})
    assert resp.status_code == 302
    with app.app_context(), session_scope(app) as db:
        marks = list(db.scalars(select(PatientMark)))
        assert len(marks) == 1 and marks[0].kind == "screen" and "p-scr" not in marks[0].patient_key
    second = app.test_client()
    lid2 = make_launch(second, context=clinician_context("mgh", "p-scr", "Sara Screened", encounter="enc-later"),
                       iss=EHR1)
    line = second.get(f"/l/{lid2}/").get_data(as_text=True).split('data-testid="gate-earlier"')[1].split("</p>")[0]
    assert "screened, no referral" in line and "(this visit)" not in line and "negative" not in line.lower()
    # Outside the window it is forgotten (and purged).
    replace_settings(app, WORKLIST_MEMORY_DAYS=0)
    assert 'data-testid="gate-earlier"' not in second.get(f"/l/{lid2}/").get_data(as_text=True)


def test_gate_memory_prefers_a_referral_to_a_later_screen_and_ignores_this_launch(app):
    from smart_app.launch.visit_memory import encounter_key, patient_key, recent

    ctx = {"patient": {"id": "p-both"}, "encounter": {"id": "enc-1"}}
    now = datetime.now(UTC)
    with app.app_context(), session_scope(app) as db:
        assert recent(db, EHR1, ctx) is None
        db.add(ReferralRecord(id="r-both", launch_id="launch-both", iss=EHR1, profile="generic", status="requested",
                              patient_key=patient_key(EHR1, ctx), encounter_key=encounter_key(EHR1, ctx),
                              created_at=now - timedelta(days=3)))
        db.add(PatientMark(patient_key=patient_key(EHR1, ctx), encounter_key="enc-other", kind="screen",
                           at=now - timedelta(days=1)))
        db.flush()
        found = recent(db, EHR1, ctx)
        assert found["kind"] == "referral" and found["same_visit"] and not found["contacted"]
        assert found["at"].date() == (now - timedelta(days=3)).date()
        found = recent(db, EHR1, ctx, exclude_launch="launch-both")  # the launch's own referral is not "earlier"
        assert found["kind"] == "screen" and not found["same_visit"]


def test_closed_referrals_and_logs_are_purged_after_the_retention_period(app, make_launch):
    closed = make_referral(app, make_launch, "bwh", "p1", "Cora Closed")
    still_open = make_referral(app, make_launch, "bwh", "p2", "Olive Open")
    client, lid = _sw(app, make_launch)
    client.post(f"/l/{lid}/worklist/{closed}/contact", data={"channel": "phone", "outcome": "reached"})
    client.post(f"/l/{lid}/worklist/{closed}/status", data={"status": "rejected", "outcome": "duplicate"})
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert "deleted 365 days after they close" in page
    with app.app_context(), session_scope(app) as db:
        db.execute(update(OutboxItem).values(status="written"))  # nothing left to send
        assert purge_referrals(db)["referrals"] == 0  # not yet
        db.execute(update(ReferralRecord).where(ReferralRecord.id == closed)
                   .values(closed_at=datetime.now(UTC) - timedelta(days=366)))
        db.commit()
        counts = purge_referrals(db)
        assert counts["referrals"] == 1 and counts["contacts"] == 1 and counts["events"] == 1
        assert db.get(ReferralRecord, closed) is None and db.get(ReferralRecord, still_open) is not None
        assert not list(db.scalars(select(ReferralSite).where(ReferralSite.referral_id == closed)))
        assert not list(db.scalars(select(ReferralProgram).where(ReferralProgram.referral_id == closed)))
        assert list(db.scalars(select(ReferralProgram).where(ReferralProgram.referral_id == still_open)))


def test_a_referral_for_this_visit_is_asked_about_on_the_programs_page_before_consent(app, make_launch):
    make_referral(app, make_launch, "bwh", "p-twice", "Tess Twice", encounter="enc-twice")
    clinician = app.test_client()
    lid = make_launch(clinician, context=clinician_context("bwh", "p-twice", "Tess Twice", encounter="enc-twice"),
                      data=referral_data("bwh"), iss=EHR1)
    html = clinician.get(f"/l/{lid}/referrals").get_data(as_text=True)
    question = html.split('data-testid="second-referral-question"')[1].split("</div>")[0]
    assert "A referral already exists for this visit" in question and 'value="second_referral"' in question
    assert 'data-testid="to-consent"' not in html  # the conversation waits for the answer
    resp = clinician.post(f"/l/{lid}/referrals", data={"action": "second_referral"})
    assert resp.status_code == 302
    html = clinician.get(f"/l/{lid}/referrals").get_data(as_text=True)
    assert 'data-testid="second-referral-question"' not in html and 'data-testid="to-consent"' in html
    # Answered before the conversation: consent is not asked the question again.
    assert consent(clinician, lid, channel="phone").status_code == 302
    with app.app_context(), session_scope(app) as db:
        assert db.scalar(select(func.count()).select_from(ReferralRecord)) == 2
