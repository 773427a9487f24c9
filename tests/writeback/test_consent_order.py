"""Consent = payload, server-side order and one referral per launch (issue 8), through the Flask test client.
No EHR is called by any of these requests: the outbox worker does all sending."""

from __future__ import annotations

import base64
import re
import secrets
import threading

import pytest
from sqlalchemy import func, select

from smart_app import create_app
from smart_app.store.crypto import decrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem, ReferralRecord
from tests.conftest import app_config, store_launch
from tests.writeback.conftest import FAST
from tests.writeback.support import REFERRAL, SCREENING, consent

DOWN_ISS = "http://127.0.0.1:9/fhir"
DATA = {"screening": SCREENING, "referral": REFERRAL}
NEGATIVE = dict(SCREENING, score=6, interpretation="negative")


def counts(app):
    with app.app_context(), session_scope(app) as db:
        return (db.scalar(select(func.count()).select_from(ReferralRecord)),
                db.scalar(select(func.count()).select_from(OutboxItem)))


def note_of(app):
    with app.app_context(), session_scope(app) as db:
        for row in db.scalars(select(OutboxItem).where(OutboxItem.kind == "DocumentReference")):
            doc = decrypt_json(row.resource_enc)
            return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    return None


def test_consent_without_a_screen_is_409_and_writes_nothing(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data={"referral": REFERRAL}, iss=DOWN_ISS)
    assert client.get(f"/l/{lid}/consent").status_code == 409
    resp = client.post(f"/l/{lid}/consent", data={"consent": "yes", "channel": "phone", "shown": "1"})
    assert resp.status_code == 409 and "Nothing was written" in resp.get_data(as_text=True)
    assert counts(fast_app) == (0, 0)


def test_negative_screen_needs_the_patients_request(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data={"screening": NEGATIVE, "referral": REFERRAL}, iss=DOWN_ISS)
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    assert 'data-testid="patient-asks"' in page
    assert consent(client, lid, channel="phone").status_code == 409
    assert counts(fast_app) == (0, 0)
    assert consent(client, lid, channel="phone", patient_asks="yes", resources=["ServiceRequest"]).status_code == 302
    assert counts(fast_app) == (1, 2)


def test_preview_follows_every_choice_and_the_note_written_is_the_note_shown(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    # Score and optional resources off by default; the script does not mention a score.
    box = re.search(r'<input type="checkbox" name="resources" value="Observation"[^>]*>', page).group(0)
    assert "checked" not in box
    assert "screening score will be recorded" not in page
    form = {"shown": "1", "channel": "email", "contact_note": "after 5pm", "resources": ["Observation"]}
    shown = client.post(f"/l/{lid}/consent/preview", data=form).get_json()
    assert "contact by email is safe (after 5pm)" in shown["note"]
    assert any("screening score will be recorded" in line["text"] for line in shown["script"])
    assert [i["kind"] for i in shown["items"]] == ["Observation", "DocumentReference"]
    # Without JavaScript: the "Update preview" button re-renders the page with the same plan.
    page = client.post(f"/l/{lid}/consent", data={**form, "action": "preview"}).get_data(as_text=True)
    assert "contact by email is safe (after 5pm)" in page and shown["digest"] in page
    assert consent(client, lid, **{k: v for k, v in form.items() if k != "shown"}).status_code == 302
    assert note_of(fast_app) == shown["note"]


def test_changed_choice_after_the_preview_writes_nothing_and_shows_the_page_again(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    digest = client.post(f"/l/{lid}/consent/preview", data={"shown": "1", "channel": "none"}).get_json()["digest"]
    # The channel changed on the page but the preview was not updated (JavaScript off, no "Update preview").
    resp = client.post(f"/l/{lid}/consent", data={"shown": "1", "channel": "email", "consent": "yes",
                                                 "digest": digest})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 409 and "what you were about to agree to changed" in body.lower()
    assert "contact by email is safe" in body  # the page now shows what would be written
    assert counts(fast_app) == (0, 0)


def test_progress_endpoint_is_neutral_and_carries_no_phi(fast_app, make_launch):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    consent(client, lid, channel="none")
    resp = client.get(f"/l/{lid}/progress")
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["Cache-Control"].startswith("no-store")
    data = resp.get_json()
    assert not data["done"] and {r["state"] for r in data["rows"]} == {"queued"}
    for secret in ("Rosa", "pat-test", "HAVEN", "TEST-1"):
        assert secret not in body
    page = client.get(f"/l/{lid}/consent/done").get_data(as_text=True)
    assert "writeback_status.js" in page and "<script>" not in page  # CSP: no inline script


def _three_at_once(app):
    bid = secrets.token_urlsafe(24)
    lid = store_launch(app, bid=bid, data=DATA, iss=DOWN_ISS)
    clients = [app.test_client() for _ in range(3)]
    for c in clients:
        with c.session_transaction() as sess:
            sess["bid"] = bid
    form = {"shown": "1", "channel": "phone", "resources": ["ServiceRequest"]}
    digest = clients[0].post(f"/l/{lid}/consent/preview", data=form).get_json()["digest"]
    barrier = threading.Barrier(3)
    statuses = []

    def post(c):
        barrier.wait()
        statuses.append(c.post(f"/l/{lid}/consent", data={"shown": "1", "channel": "phone", "consent": "yes",
                                                          "resources": ["ServiceRequest"],
                                                          "digest": digest}).status_code)

    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [302, 302, 302]
    assert counts(app) == (1, 2)  # one referral, one set of writes (referral order + note)


def test_three_concurrent_consent_posts_make_one_referral_on_sqlite(fast_app):
    _three_at_once(fast_app)


def test_three_concurrent_consent_posts_make_one_referral_on_postgresql(postgres_url):
    app = create_app(app_config(postgres_url, **FAST))
    try:
        _three_at_once(app)
    finally:
        app.extensions["db_engine"].dispose()


@pytest.mark.parametrize("channel", ["none", "phone", "text", "email", "portal", "in_person"])
@pytest.mark.parametrize("detailed", [False, True])
def test_stored_note_equals_the_preview_for_every_channel_and_detail(fast_app, make_launch, channel, detailed):
    client = fast_app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    form = {"channel": channel, "contact_note": "weekdays"}
    if detailed:
        form.update(detailed="yes", detail_text="As the patient asked.")
    shown = client.post(f"/l/{lid}/consent/preview", data={"shown": "1", **form}).get_json()
    assert consent(client, lid, **form).status_code == 302
    assert note_of(fast_app) == shown["note"]
