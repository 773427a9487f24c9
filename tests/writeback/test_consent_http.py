"""Consent, no consent and the social-work queue through the Flask test client (EHR unreachable here:
the live-EHR path is in test_sandbox_writeback.py)."""

from __future__ import annotations

import base64

from sqlalchemy import func, select

from smart_app.store.crypto import decrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem, ReferralEvent, ReferralRecord
from tests.conftest import default_context
from tests.writeback.support import REFERRAL, SCREENING, consent

DOWN_ISS = "http://127.0.0.1:9/fhir"  # nothing listens: connection refused at once
DATA = {"screening": dict(SCREENING, answers={"95618-5": {"code": "LA-secret-answer"}}),
        "referral": REFERRAL}


def count(app, model):
    with app.app_context(), session_scope(app) as db:
        return db.scalar(select(func.count()).select_from(model))


def outbox_rows(app):
    with app.app_context(), session_scope(app) as db:
        return list(db.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def test_consent_page_shows_minimal_note_and_safe_contact(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    assert "Confidential referral to support services" in page
    assert "Safe contact: not answered yet." in page  # asked here, nothing preselected
    assert "checked data-testid=\"channel-" not in page
    assert "HAVEN at MGH" in page
    assert "Detailed documentation" in page
    assert "LA-secret-answer" not in page and "14" not in page.split("note-preview")[1].split("</pre>")[0]


def test_no_consent_writes_and_queues_nothing(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    resp = client.post(f"/l/{lid}/consent", data={"consent": "no"})
    assert resp.status_code == 200
    assert "Nothing was written to the chart" in resp.get_data(as_text=True)
    assert count(fast_app, OutboxItem) == 0 and count(fast_app, ReferralRecord) == 0


def test_consent_with_ehr_down_queues_everything_and_says_so(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    resp = consent(client, lid, channel="none", resources=["Observation", "ServiceRequest"])
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/l/{lid}/consent/done")
    rows = outbox_rows(fast_app)
    assert sorted(r.kind for r in rows) == ["DocumentReference", "Observation", "ServiceRequest"]
    # The consent request itself never calls the EHR: the worker does all sending.
    assert all(r.status == "pending" and r.attempts == 0 for r in rows)
    page = client.get(f"/l/{lid}/consent/done").get_data(as_text=True)
    assert 'data-testid="queued-note" >' in page and "keeps trying" in page and 'data-state="queued"' in page
    # A second submit (double click, back button) never creates a second referral.
    consent(client, lid, channel="phone")
    assert count(fast_app, ReferralRecord) == 1 and len(outbox_rows(fast_app)) == 3


def test_detailed_documentation_only_when_chosen(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    consent(client, lid, detailed="yes", channel="phone", resources=["Observation", "ServiceRequest"],
            detail_text="Patient asks to document the injury on 3 Jan.")
    with fast_app.app_context():
        doc = next(decrypt_json(r.resource_enc) for r in outbox_rows(fast_app) if r.kind == "DocumentReference")
        sr = next(decrypt_json(r.resource_enc) for r in outbox_rows(fast_app) if r.kind == "ServiceRequest")
    text = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    assert "Documented at the patient's request" in text and "injury on 3 Jan" in text
    assert "contact by phone is safe" in text
    assert sr["orderDetail"] == [{"text": "Safe contact channel: phone"}]
    codes = {c["code"] for c in doc["meta"]["security"]}
    assert codes == {"R", "SDV", "NOPAT"}


def test_worklist_is_for_social_workers_only(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    resp = client.get(f"/l/{lid}/worklist")
    assert resp.status_code == 403 and "only for social workers" in resp.get_data(as_text=True)


def _social_worker(app, make_launch):
    """A social worker covering the default context's site (MGH Chelsea) through the deployment file."""
    from tests.worklist.support import with_deployment

    with_deployment(app, worklist={"coverage": {"roles": {"social_worker": ["urn:ipv-sandbox:site|mgh-chelsea"]}}})
    sw = app.test_client()
    ctx = default_context(patient=None, encounter=None,
                          user={"reference": "Practitioner/sw-1", "name": "Sam Social", "roles": ["social_worker"]})
    return sw, make_launch(sw, context=ctx, iss=DOWN_ISS, kind="standalone")


def test_worklist_lists_referrals_without_answers_and_records_status_changes(fast_app, make_launch):
    clinician = fast_app.test_client()
    lid = make_launch(clinician, data={**DATA, "screening": {**DATA["screening"], "danger": True}}, iss=DOWN_ISS)
    consent(clinician, lid, channel="none")

    sw, swid = _social_worker(fast_app, make_launch)
    page = sw.get(f"/l/{swid}/worklist").get_data(as_text=True)
    assert "Rosa Test" in page and "MGH Chelsea HealthCare Center" in page and "Urgent" in page
    assert "HAVEN at MGH" in page and "No contact is safe" in page
    assert 'data-write="queued"' in page
    assert "LA-secret-answer" not in page and "Total score" not in page
    with fast_app.app_context(), session_scope(fast_app) as db:
        rid = db.scalar(select(ReferralRecord.id))
    assert sw.post(f"/l/{swid}/worklist/{rid}/status", data={"status": "accepted"}).status_code == 302
    assert sw.post(f"/l/{swid}/worklist/{rid}/status", data={"status": "requested"}).status_code == 400
    assert sw.post(f"/l/{swid}/worklist/{rid}/status",
                   data={"status": "completed", "outcome": "reached_supported"}).status_code == 302
    with fast_app.app_context(), session_scope(fast_app) as db:
        events = list(db.scalars(select(ReferralEvent).order_by(ReferralEvent.id)))
        record = db.get(ReferralRecord, rid)
        assert [(e.from_status, e.to_status, e.by_reference) for e in events] == [
            ("requested", "accepted", "Practitioner/sw-1"), ("accepted", "completed", "Practitioner/sw-1")]
        assert record.status == "completed" and record.status_by == "Sam Social"
    history = sw.get(f"/l/{swid}/worklist/{rid}/history").get_data(as_text=True)
    assert "Accepted → Completed: Sam Social" in history
    # Closed referrals leave the open queue.
    assert 'data-reason="filtered"' in sw.get(f"/l/{swid}/worklist").get_data(as_text=True)
    # The clinician (no social-work role) cannot change a status either.
    assert clinician.post(f"/l/{lid}/worklist/{rid}/status", data={"status": "completed"}).status_code == 403


def test_consent_page_is_the_clinicians_with_the_patients_words_in_the_patients_language(fast_app, make_launch):
    """The page (buttons, plan, errors) is in the clinician's language; what is read to the patient is in the
    patient's, the clinician's language beneath (tests/test_languages.py walks every page and language pair)."""
    client = fast_app.test_client()
    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "language": "es", "languages": ["es"]}
    lid = make_launch(client, context=ctx, data=DATA, iss=DOWN_ISS)
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in page and "The patient agrees: write to the chart" in page
    assert '<span class="read-aloud" data-audience="patient" lang="es" dir="ltr">' in page
    page = client.get(f"/l/{lid}/consent?lang=en").get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in page and 'data-audience="patient" lang="en"' in page


def test_consent_without_a_safe_contact_answer_writes_nothing(fast_app, make_launch):
    """Safe contact has no default: consent without the patient's answer is refused, nothing stored."""
    client = fast_app.test_client()
    lid = make_launch(client, data={"screening": SCREENING}, iss=DOWN_ISS)
    resp = consent(client, lid, resources=["ServiceRequest"])
    assert resp.status_code == 422 and "Nothing was written" in resp.get_data(as_text=True)
    assert count(fast_app, OutboxItem) == 0 and count(fast_app, ReferralRecord) == 0
    consent(client, lid, channel="none", resources=["ServiceRequest"])
    with fast_app.app_context():
        sr = next(decrypt_json(r.resource_enc) for r in outbox_rows(fast_app) if r.kind == "ServiceRequest")
    assert sr["orderDetail"][0]["coding"][0]["code"] == "contacting-subject-prohibited"


def test_worklist_shows_failed_writes_and_label_warnings(fast_app, make_launch):
    from sqlalchemy import update

    clinician = fast_app.test_client()
    lid = make_launch(clinician, data=DATA, iss=DOWN_ISS)
    consent(clinician, lid, channel="none", resources=["Observation"])
    with fast_app.app_context(), session_scope(fast_app) as db:
        db.execute(update(OutboxItem).where(OutboxItem.kind == "DocumentReference")
                   .values(status="failed", last_error="HTTP 422: invalid", final_retry=True))
        db.execute(update(OutboxItem).where(OutboxItem.kind == "Observation")
                   .values(status="written", server_id="o1", label_status="flagged",
                           label_detail="missing v3-ActCode#SDV"))
    page = clinician.get(f"/l/{lid}/consent/done").get_data(as_text=True)
    assert 'data-testid="failed-alert" >' in page and 'data-testid="label-alert" >' in page  # shown, not hidden
    assert "HTTP 422: invalid" in page
    sw, swid = _social_worker(fast_app, make_launch)
    page = sw.get(f"/l/{swid}/worklist").get_data(as_text=True)
    assert 'data-write="failed"' in page and "Not written to the chart (HTTP 422: invalid)" in page
    assert 'data-testid="label-warning"' in page and "missing v3-ActCode#SDV" in page


def test_questionnaire_response_carries_the_answers_the_screening_pages_recorded(fast_app, make_launch):
    """Screening through its own pages, then consent with the optional QuestionnaireResponse: the
    answers arrive as the instrument's Codings (the screening state keeps bare codes in ``answers``)."""
    client = fast_app.test_client()
    lid = make_launch(client, data={"referral": REFERRAL}, iss=DOWN_ISS)
    client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
    hits = {"hurt": "LA10082-8", "insult": "LA6482-9", "threaten": "LA10066-1", "scream": "LA6482-9"}
    resp = client.post(f"/l/{lid}/screen", data={"instrument": "hits", **{f"q-{k}": v for k, v in hits.items()}})
    assert resp.headers["Location"].endswith("/result")  # the danger check is asked there (finding M2)
    resp = consent(client, lid, channel="none", resources=["Observation", "QuestionnaireResponse"])
    assert resp.status_code == 302
    with fast_app.app_context():
        qr = next(decrypt_json(r.resource_enc) for r in outbox_rows(fast_app) if r.kind == "QuestionnaireResponse")
    assert qr["questionnaire"].split("|")[0].endswith("/Questionnaire/hits")
    answers = {i["linkId"]: i["answer"][0]["valueCoding"] for i in qr["item"]}
    assert {k: c["code"] for k, c in answers.items()} == hits
    assert answers["insult"]["display"] == "Frequently" and answers["insult"]["system"] == "http://loinc.org"
    assert {c["code"] for c in qr["meta"]["security"]} >= {"R", "SDV"}


def test_consent_names_every_field_the_chart_shows_and_warns_that_the_contact_words_go_in_as_typed(
        fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    caution = page.split('data-testid="contact-note-caution"')[1].split("</p>")[0]
    assert "exactly as typed" in caution and "chart" in caution
    typed = "after 5pm, say it's the pharmacy"
    form = {"shown": "1", "channel": "phone", "contact_note": typed,
            "resources": ["Observation", "ServiceRequest", "DocumentReference", "Task", "QuestionnaireResponse"]}
    items = {i["kind"]: i["words"] for i in client.post(f"/l/{lid}/consent/preview", data=form).get_json()["items"]}
    sr = items["ServiceRequest"]
    assert "HAVEN at MGH" in sr and "priority: routine" in sr
    assert "“SDOH”" in sr and "“Intimate Partner Violence”" in sr  # the category codings, as the chart lists them
    assert "“Referral to confidential support services”" in sr and "phone" in sr
    assert f"“Safe contact: {typed}”" in sr
    assert consent(client, lid, **{k: v for k, v in form.items() if k != "shown"}).status_code == 302
    # What was queued is what was named: every category display and the note's words.
    for row in outbox_rows(fast_app):
        with fast_app.app_context():
            res = decrypt_json(row.resource_enc)
        words = items[row.kind]
        for cc in res.get("category") or []:
            assert f"“{cc['coding'][0]['display']}”" in words, (row.kind, cc)
        for note in res.get("note") or []:
            assert note["text"] in words
        if "priority" in res:
            assert f"priority: {res['priority']}" in words
