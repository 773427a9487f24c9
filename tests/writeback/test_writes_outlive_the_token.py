"""Writes outlive the visit's token (issue 8 item 9): with SMART Backend Services registered, the worker writes
with a system token (client_credentials + private_key_jwt) against the live sandbox when the launch's token is
gone; without it, the write fails plainly as before. Also: the consent page for a note-only EHR profile."""

from __future__ import annotations

from sqlalchemy import select

from config.ehr_profile import EhrProfile
from smart_app import create_app
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem
from tests.conftest import app_config, default_context
from tests.writeback.conftest import FAST
from tests.writeback.support import REFERRAL, SCREENING, add_launch, add_referral


def _rows(app):
    with app.app_context(), session_scope(app) as db:
        return list(db.scalars(select(OutboxItem)))


def _app(tmp_path, sandbox, backend: bool):
    without = {} if backend else {"BACKEND_SERVICES": None}
    return create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", ALLOWED_ISS=[sandbox.iss], **without, **FAST))


def test_worker_uses_a_system_token_when_the_launch_token_is_gone(tmp_path, sandbox):
    app = _app(tmp_path, sandbox, backend=True)
    try:
        lid = add_launch(app, sandbox.iss, None, patient="pat-alice", tokens={})  # the visit's token is gone
        add_referral(app, lid, sandbox.iss, EhrProfile.load("sandbox"), patient="pat-alice",
                     resources=["DocumentReference"])
        OutboxWorker(app, timeout=5).drain()
        (row,) = _rows(app)
        assert row.status == "written" and row.server_id
        from sandbox_ehr.store import get_store

        with sandbox.app.app_context():
            doc = get_store(sandbox.app).read("DocumentReference", row.server_id)
        assert doc["subject"] == {"reference": "Patient/pat-alice"}
    finally:
        app.extensions["db_engine"].dispose()


def test_without_backend_services_the_write_fails_plainly(tmp_path, sandbox):
    app = _app(tmp_path, sandbox, backend=False)
    try:
        lid = add_launch(app, sandbox.iss, None, patient="pat-alice", tokens={})
        add_referral(app, lid, sandbox.iss, EhrProfile.load("sandbox"), patient="pat-alice",
                     resources=["DocumentReference"])
        OutboxWorker(app, timeout=5).drain()
        (row,) = _rows(app)
        assert row.status == "failed" and "sign-in" in row.last_error
    finally:
        app.extensions["db_engine"].dispose()


def test_consent_page_for_a_note_only_ehr_offers_the_note_and_says_why_not_the_rest(tmp_path, make_launch):
    app = create_app(app_config(f"sqlite:///{tmp_path / 'e.db'}", EHR_PROFILE="epic",
                                RESTRICTED_NOTE_TYPE="urn:site:note-type|SW-CONF|Confidential social work note"))
    try:
        client = app.test_client()
        from tests.conftest import launch_for

        ctx = default_context(scope="launch patient/DocumentReference.write patient/DocumentReference.read")
        lid = launch_for(app, client, context=ctx, data={"screening": SCREENING, "referral": REFERRAL})
        page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
        assert 'data-testid="res-DocumentReference"' in page and 'data-testid="res-ServiceRequest"' not in page
        assert "this EHR does not accept it from apps" in page
        assert "Confidential social work note" in page  # the note's type and how it is protected
        assert "does not keep confidentiality labels" in page
        ctx = default_context(scope="launch patient/DocumentReference.read", encounter=None)
        lid = launch_for(app, client, context=ctx, data={"screening": SCREENING, "referral": REFERRAL})
        page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
        assert "needs patient/DocumentReference.write" in page and 'data-testid="res-DocumentReference"' not in page
    finally:
        app.extensions["db_engine"].dispose()
