"""The optional neutral chart line after a negative screen, through the app's pages against the live sandbox EHR.

The screen is answered through the app's own pages; the line goes through the outbox (the worker sends it, never
the request); counts are what the sandbox EHR holds."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from config.current import replace_settings
from fhir.client import FhirClient
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem, ReferralRecord
from smart_app.worklist.retention import purge_referrals
from smart_app.writeback.checkin import CHECKIN_SENTENCE
from tests.conftest import default_context, launch_for
from tests.writeback.support import sandbox_token, set_tokens

pytestmark = pytest.mark.writeback

PATIENT, ENCOUNTER = "pat-joana", "enc-joana-chelsea"
IDENT_SYSTEM = "urn:ipv-screen:writeback"
# A negative HITS (every answer "never" but one "rarely"): the answer codes must never reach the chart line.
HITS_NEGATIVE = {"instrument": "hits", "q-hurt": "LA6270-8", "q-insult": "LA10066-1", "q-threaten": "LA6270-8",
                 "q-scream": "LA6270-8"}
CONFIDENTIAL = {"R", "SDV", "NOPAT"}


def negative_screen(app, sandbox) -> tuple[object, str]:
    """A launch for the sandbox's patient, screened negative through the app's pages; returns (client, lid)."""
    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "id": PATIENT}
    ctx["encounter"] = {**ctx["encounter"], "id": ENCOUNTER}
    client = app.test_client()
    lid = launch_for(app, client, ctx, iss=sandbox.iss)
    set_tokens(app, lid, {"access_token": sandbox_token(sandbox, PATIENT, ENCOUNTER), "token_type": "Bearer"})
    assert client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes",
                                               "action": "start"}).status_code == 302
    assert client.post(f"/l/{lid}/screen", data=HITS_NEGATIVE).status_code == 302
    return client, lid


def rows(app) -> list[OutboxItem]:
    with app.app_context(), session_scope(app) as db:
        return list(db.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def chart_notes(sandbox, key: str) -> list[dict]:
    """The DocumentReferences the sandbox holds with this check-in's business identifier."""
    from sandbox_ehr.store import get_store

    wanted = f"{key}.documentreference"
    with sandbox.app.app_context():
        return [r for r in get_store(sandbox.app).search("DocumentReference")
                if any(i.get("system") == IDENT_SYSTEM and i.get("value") == wanted for i in r.get("identifier") or [])]


def text_of(doc: dict) -> str:
    return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()


def test_not_offered_by_default_and_a_post_writes_nothing(app, sandbox):
    client, lid = negative_screen(app, sandbox)
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert 'data-testid="done-back-to-chart"' in page
    assert 'data-testid="chart-line"' not in page and CHECKIN_SENTENCE not in page
    resp = client.post(f"/l/{lid}/chart-line", data={"add_line": "yes"})
    assert resp.status_code == 409 and "Nothing was written" in resp.get_data(as_text=True)
    assert rows(app) == []


def test_offered_unticked_with_the_exact_words_and_nothing_written_without_the_tick(app, sandbox):
    replace_settings(app, NEUTRAL_CHECKIN_RECORD=True)
    client, lid = negative_screen(app, sandbox)
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    box = page.split('data-testid="chart-line"')[1].split("</section>")[0]
    assert "Add a neutral line to the chart:" in box
    # The sandbox EHR is searched by business identifier: the words are the one sentence and nothing else.
    assert f'data-testid="chart-line-words">{CHECKIN_SENTENCE}</pre>' in box
    assert 'data-testid="chart-line-tick">' in box and "checked" not in box
    resp = client.post(f"/l/{lid}/chart-line", data={})  # the button pressed without the tick
    assert resp.status_code == 422 and "Nothing was written" in resp.get_data(as_text=True)
    assert rows(app) == []
    OutboxWorker(app, timeout=5).drain()
    with app.app_context(), session_scope(app) as db:
        assert db.scalars(select(ReferralRecord)).first() is None


def test_ticked_writes_one_confidential_note_once_through_the_outbox(app, sandbox):
    replace_settings(app, NEUTRAL_CHECKIN_RECORD=True)
    client, lid = negative_screen(app, sandbox)
    client.get(f"/l/{lid}/result")
    resp = client.post(f"/l/{lid}/chart-line", data={"add_line": "yes"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/l/{lid}/result#chart-line")
    (row,) = rows(app)
    assert row.kind == "DocumentReference" and row.status == "pending" and row.attempts == 0  # not sent in the request
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert 'data-testid="chart-line-queued"' in page and 'data-state="queued"' in page
    assert 'data-testid="chart-line-form"' not in page
    # Reload and double submit: still one row.
    assert client.post(f"/l/{lid}/chart-line", data={"add_line": "yes"}).status_code == 302
    client.get(f"/l/{lid}/result")
    assert len(rows(app)) == 1
    OutboxWorker(app, timeout=5).drain()
    assert client.post(f"/l/{lid}/chart-line", data={"add_line": "yes"}).status_code == 302
    OutboxWorker(app, timeout=5).drain()
    (row,) = rows(app)
    assert row.status == "written"
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    status = page.split('data-testid="chart-line-status"')[1].split("</table>")[0]
    assert 'data-state="written"' in status and "Written to the chart" in status
    assert "Check-in note" in status and "Referral" not in status
    (doc,) = chart_notes(sandbox, row.referral_id)
    assert text_of(doc) == CHECKIN_SENTENCE
    assert CONFIDENTIAL <= {c["code"] for c in doc["meta"]["security"]}
    assert CONFIDENTIAL <= {c["coding"][0]["code"] for c in doc["securityLabel"]}
    assert doc["type"]["coding"][0]["code"] == "57133-1"  # the referral note's type under this profile
    assert doc["description"] == "Check-in note" and "referral" not in doc["content"][0]["attachment"]["title"]
    assert doc["context"]["encounter"] == [{"reference": f"Encounter/{ENCOUNTER}"}]
    read = FhirClient(sandbox.iss, sandbox_token(sandbox, PATIENT)).read("DocumentReference", row.server_id)
    assert text_of(read) == CHECKIN_SENTENCE
    # Nothing of the answers, the instrument or the score anywhere in what was written.
    written = str(doc) + text_of(doc)
    for secret in ("HITS", "hits", "LA6270-8", "LA10066-1", "negative", "score", "answer"):
        assert secret not in written
    with app.app_context(), session_scope(app) as db:
        assert db.scalars(select(ReferralRecord)).first() is None  # nothing in the social-work queue


def test_not_offered_after_a_positive_screen(app, sandbox):
    replace_settings(app, NEUTRAL_CHECKIN_RECORD=True)
    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "id": PATIENT}
    client = app.test_client()
    positive = {"screening": {"instrument": "hits", "interpretation": "positive", "score": 14, "answers": {},
                              "completed_at": "2026-01-01T10:00:00+00:00"},
                "danger_check": {"instrument": "da5", "interpretation": "declined"}}
    lid = launch_for(app, client, ctx, data=positive, iss=sandbox.iss)
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert 'data-testid="done-back-to-chart"' in page and 'data-testid="chart-line"' not in page
    assert client.post(f"/l/{lid}/chart-line", data={"add_line": "yes"}).status_code == 409
    assert rows(app) == []


def test_the_box_is_in_the_clinicians_language_and_the_words_in_the_charts(app, sandbox):
    replace_settings(app, NEUTRAL_CHECKIN_RECORD=True, CLINICIAN_LANGUAGE="es")
    client, lid = negative_screen(app, sandbox)
    box = client.get(f"/l/{lid}/result").get_data(as_text=True).split('data-testid="chart-line"')[1]
    assert "Añadir una línea neutra a la historia clínica:" in box and "Add a neutral line" not in box
    assert f'data-testid="chart-line-words">{CHECKIN_SENTENCE}</pre>' in box  # the chart's language, as the note


def test_the_lines_row_goes_a_retention_period_after_it_was_written_never_while_on_its_way(app, sandbox):
    replace_settings(app, NEUTRAL_CHECKIN_RECORD=True)
    client, lid = negative_screen(app, sandbox)
    client.post(f"/l/{lid}/chart-line", data={"add_line": "yes"})
    later = datetime.now(UTC) + timedelta(days=366)
    with app.app_context(), session_scope(app) as db:
        assert purge_referrals(db, now=later)["lines"] == 0  # pending: still to be sent
    OutboxWorker(app, timeout=5).drain()
    with app.app_context(), session_scope(app) as db:
        assert purge_referrals(db)["lines"] == 0  # written just now: kept
        assert purge_referrals(db, now=later)["lines"] == 1
    assert rows(app) == []
