"""/healthz and /readyz: JSON, no cookie, every check named; a dead database is not ready; the worker's
heartbeat and the outbox backlog are reported (and fail readiness in strict mode)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, update
from sqlalchemy.orm import sessionmaker

from config.current import replace_settings
from config.ehr_profile import EhrProfile
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem
from tests.writeback.support import add_launch, add_referral

pytestmark = pytest.mark.ops


def test_healthz_is_json_without_a_cookie(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}
    assert "Set-Cookie" not in resp.headers and resp.headers["Cache-Control"].startswith("no-store")


def test_readyz_names_every_check_and_reports_the_worker_heartbeat(app, client):
    resp = client.get("/readyz")
    body = resp.get_json()
    assert set(body["checks"]) == {"database", "schema", "directory", "keys", "outbox_backlog", "worker_heartbeat",
                                   "referral_alerts"}
    assert all(body["checks"][c]["ok"] for c in ("database", "schema", "directory", "keys", "outbox_backlog"))
    # No worker has run yet: reported, not fatal by default.
    assert body["checks"]["worker_heartbeat"] == {"ok": False, "critical": False,
                                                  "detail": {"age_seconds": None, "limit_seconds": 120.0}}
    assert resp.status_code == 200 and body["status"] == "degraded" and "Set-Cookie" not in resp.headers

    OutboxWorker(app).beat()
    body = client.get("/readyz").get_json()
    assert body["status"] == "ready" and body["checks"]["worker_heartbeat"]["detail"]["age_seconds"] <= 120


def test_strict_mode_fails_readiness_without_a_worker(app, client):
    replace_settings(app, READYZ_STRICT="1")
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["status"] == "not ready"


def test_an_old_outbox_backlog_is_reported(app, client):
    lid = add_launch(app, "http://ehr.test/fhir", "tok")
    add_referral(app, lid, "http://ehr.test/fhir", EhrProfile.load("sandbox"), resources=["DocumentReference"])
    OutboxWorker(app).beat()
    assert client.get("/readyz").get_json()["checks"]["outbox_backlog"]["ok"] is True
    with app.app_context(), session_scope(app) as db:
        db.execute(update(OutboxItem).values(created_at=datetime.now(UTC) - timedelta(hours=2)))
    check = client.get("/readyz").get_json()["checks"]["outbox_backlog"]
    assert check["ok"] is False and check["detail"]["oldest_age_seconds"] >= 7200


def test_database_down_is_not_ready(app, client):
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 2})
    app.extensions["db_engine"] = dead
    app.extensions["db_sessionmaker"] = sessionmaker(dead)
    resp = client.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 503 and body["checks"]["database"] == {
        "ok": False, "critical": True, "detail": "OperationalError"}
    assert client.get("/healthz").status_code == 200  # alive, just not ready
