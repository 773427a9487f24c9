"""Launch records: encrypted at rest, served only to the browser that started them,
on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from flask import session
from sqlalchemy import text
from werkzeug.exceptions import NotFound

from smart_app import create_app
from smart_app.launch.state import load_launch
from tests.conftest import app_config, store_launch


def _raw_blobs(app) -> bytes:
    with app.extensions["db_engine"].connect() as conn:
        rows = conn.execute(text("SELECT tokens_enc, context_enc FROM launch")).all()
    return b"".join(bytes(col) for row in rows for col in row if col is not None)


def _store_launch(app, bid: str, status: str = "active") -> str:
    return store_launch(app, bid=bid, status=status, tokens={"access_token": "secret-access-token"})


def _assert_binding(app, lid: str, bid: str) -> None:
    with app.test_request_context():
        session["bid"] = bid
        launch = load_launch(lid)
        assert launch.tokens["access_token"] == "secret-access-token"
        assert launch.context["patient"]["name"] == "Rosa Test"
    with app.test_request_context():
        session["bid"] = "another-browser"
        with pytest.raises(NotFound):
            load_launch(lid)
    with app.test_request_context():
        with pytest.raises(NotFound):  # no session at all
            load_launch(lid)


def test_tokens_and_context_are_encrypted_and_bound_to_the_browser(app):
    lid = _store_launch(app, "browser-1")
    blobs = _raw_blobs(app)
    assert blobs and b"secret-access-token" not in blobs and b"Rosa Test" not in blobs
    _assert_binding(app, lid, "browser-1")


def test_ended_launch_is_gone(app):
    lid = _store_launch(app, "browser-1", status="ended")
    with app.test_request_context():
        session["bid"] = "browser-1"
        with pytest.raises(NotFound):
            load_launch(lid)


@pytest.mark.postgres
def test_launch_records_on_postgresql(postgres_url):
    app = create_app(app_config(postgres_url))
    try:
        assert app.extensions["db_engine"].dialect.name == "postgresql"
        lid = _store_launch(app, "browser-pg")
        assert b"secret-access-token" not in _raw_blobs(app)
        _assert_binding(app, lid, "browser-pg")
    finally:
        app.extensions["db_engine"].dispose()


def test_tokens_follow_the_stored_value_and_a_caller_cannot_change_them(app):
    """Launch.tokens decrypts once per stored value: a token stored meanwhile (a refresh in another request,
    re-read from the database) is what the next read gives, and changing a returned dict changes nothing."""
    from smart_app.store.crypto import encrypt_json
    from smart_app.store.db import get_session

    lid = _store_launch(app, "browser-1")
    with app.test_request_context():
        session["bid"] = "browser-1"
        launch = load_launch(lid)
        launch.tokens["access_token"] = "changed-by-a-caller"
        assert launch.tokens["access_token"] == "secret-access-token"
        with app.extensions["db_engine"].begin() as conn:  # another request refreshed the token
            conn.execute(text("UPDATE launch SET tokens_enc = :t WHERE id = :i"),
                         {"t": encrypt_json({"access_token": "refreshed"}), "i": lid})
        get_session().refresh(launch.record)
        assert launch.tokens["access_token"] == "refreshed"
        launch.set_tokens({"access_token": "set-here"})
        assert launch.tokens["access_token"] == "set-here"


def test_the_typed_context_reads_the_stored_one_and_follows_a_new_one(app):
    """Launch.typed_context is the stored context as fhir/launch_context.py types it, read again when the context
    is replaced (the callback stores the role mapping's result, a later page reads it)."""
    lid = _store_launch(app, "browser-1")
    with app.test_request_context():
        session["bid"] = "browser-1"
        launch = load_launch(lid)
        typed = launch.typed_context
        assert typed.patient_id == launch.context["patient"]["id"] and typed.patient.name == "Rosa Test"
        assert launch.typed_context is typed  # read once
        launch.set_context({**launch.context, "patient": {"id": "pat-2", "name": "Other"}, "encounter": None})
        assert launch.typed_context.patient_id == "pat-2" and launch.typed_context.encounter_id is None
