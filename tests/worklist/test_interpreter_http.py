"""Interpreter need: asked once on the consent page when the EHR does not say (yes / no, the language), kept in the
referral's encrypted summary, shown on the social worker's queue row and referral page; never asked when the EHR
says (US Core interpreter-needed), whose answer wins."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from smart_app.store.crypto import decrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from tests.worklist.support import EHR1, SNOMED_SW, clinician_context, referral_data, role, worker_context
from tests.writeback.support import consent

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"


def launch(app, make_launch, patient, interpreter=None, language="en"):
    client = app.test_client()
    ctx = clinician_context("bwh", patient, "Pat Example", interpreter=interpreter, language=language)
    return client, make_launch(client, context=ctx, data=referral_data("bwh"), iss=EHR1)


def refer(client, lid, app, **answer):
    assert consent(client, lid, channel="phone", resources=["ServiceRequest"], **answer).status_code == 302
    with app.app_context(), session_scope(app) as db:
        record = db.scalar(select(ReferralRecord).where(ReferralRecord.launch_id == lid))
        return record.id, decrypt_json(record.summary_enc)


def queue_row(app, make_launch, rid):
    client = app.test_client()
    lid = make_launch(client, context=worker_context(
        "Practitioner/sw", "Sam Social", [role([SNOMED_SW], organizations=["Organization/org-bwh"])], SW_SCOPE),
        iss=EHR1, kind="standalone")
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    row = page.split(f'data-testid="referral-{rid}"')[1].split("</tr>")[0]
    return row, client.get(f"/l/{lid}/worklist/{rid}").get_data(as_text=True)


def test_asked_when_the_ehr_does_not_say_and_shown_in_the_queue(app, make_launch):
    client, lid = launch(app, make_launch, "p1", language="es")
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    assert 'data-testid="interpreter-question"' in page
    # The patient's language from the EHR is offered and chosen by default.
    assert re.search(r'<option value="es" selected>Spanish</option>', page)
    rid, summary = refer(client, lid, app, interpreter="yes", interpreter_language="pt")
    assert (summary["interpreter_needed"], summary["interpreter_language"], summary["interpreter_source"]) == \
        (True, "pt", "asked")
    with app.app_context(), session_scope(app) as db:
        assert b"Portuguese" not in db.get(ReferralRecord, rid).summary_enc  # encrypted
    row, detail = queue_row(app, make_launch, rid)
    assert 'data-need="yes"' in row and ">Portuguese</td>" in row
    assert "Interpreter needed (Portuguese)" in detail


def test_asked_once_the_answer_is_kept_when_the_page_is_shown_again(app, make_launch):
    client, lid = launch(app, make_launch, "p1")
    again = client.post(f"/l/{lid}/consent", data={"shown": "1", "channel": "phone", "interpreter": "no",
                                                    "action": "preview"}).get_data(as_text=True)
    assert re.search(r'value="no" checked data-testid="interpreter-no"', again)
    rid, summary = refer(client, lid, app, interpreter="no")
    assert summary["interpreter_needed"] is False
    row, detail = queue_row(app, make_launch, rid)
    assert 'data-need="no"' in row and "No interpreter needed" in detail


def test_not_asked_when_the_ehr_says_and_the_ehrs_answer_wins(app, make_launch):
    client, lid = launch(app, make_launch, "p1", interpreter=True, language="ht")
    assert 'data-testid="interpreter-question"' not in client.get(f"/l/{lid}/consent").get_data(as_text=True)
    rid, summary = refer(client, lid, app, interpreter="no")
    assert (summary["interpreter_needed"], summary["interpreter_language"], summary["interpreter_source"]) == \
        (True, "ht", "ehr")
    row, _detail = queue_row(app, make_launch, rid)
    assert 'data-need="yes"' in row and ">Haitian Creole</td>" in row


def test_unanswered_never_holds_the_referral_back_and_the_queue_says_so(app, make_launch):
    client, lid = launch(app, make_launch, "p1")
    rid, summary = refer(client, lid, app)
    assert summary["interpreter_needed"] is None and summary["interpreter_source"] == "none"
    row, detail = queue_row(app, make_launch, rid)
    assert 'data-need="unknown"' in row and "not asked" in row and "Interpreter need not recorded" in detail
