"""Retention run by the worker: failed writes keep their content for FAILED_WRITE_RETENTION_DAYS, audit rows for
AUDIT_RETENTION_DAYS (the only deletion the append-only table allows), stale worker heartbeats go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, select, text, update

from config.current import replace_settings
from config.ehr_profile import EhrProfile
from smart_app import create_app
from smart_app.ops.audit import record_audit
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import AuditEvent, OutboxItem, WorkerHeartbeat
from tests.conftest import app_config
from tests.writeback.support import add_launch, add_referral

pytestmark = pytest.mark.ops
ISS = "http://ehr.test/fhir"


def _failed_write(app) -> int:
    lid = add_launch(app, ISS, "tok")
    add_referral(app, lid, ISS, EhrProfile.load("sandbox"), resources=["DocumentReference"])
    with app.app_context(), session_scope(app) as db:
        row = db.scalar(select(OutboxItem))
        row.status, row.updated_at = "failed", datetime.now(UTC)
        return row.id


def _state(app, row_id: int) -> tuple[str, bool]:
    with app.app_context(), session_scope(app) as db:
        row = db.get(OutboxItem, row_id)
        return row.status, bool(row.resource_enc)


def test_worker_purge_applies_failed_write_audit_and_heartbeat_retention(app):
    replace_settings(app, FAILED_WRITE_RETENTION_DAYS="180", AUDIT_RETENTION_DAYS="365")
    row_id = _failed_write(app)
    worker = OutboxWorker(app)
    worker.beat()
    with app.app_context():
        record_audit("export", actor="cli:test", detail="recent")
        record_audit("export", actor="cli:test", detail="old")
    with app.app_context(), session_scope(app) as db:
        # SQLite allows a test to age a row (its trigger refuses changes of the other columns only via UPDATE OF).
        db.execute(text("DROP TRIGGER IF EXISTS audit_event_no_update"))
        db.execute(update(AuditEvent).where(AuditEvent.detail == "old")
                   .values(at=datetime.now(UTC) - timedelta(days=400)))

    counts = worker.purge_launches()
    assert counts["failed_writes_emptied"] == 0 and _state(app, row_id) == ("failed", True)  # still documented
    assert counts["audit_rows"] == 1 and counts["heartbeats"] == 0

    with app.app_context(), session_scope(app) as db:
        db.execute(update(OutboxItem).values(updated_at=datetime.now(UTC) - timedelta(days=181)))
        db.execute(update(WorkerHeartbeat).values(beat_at=datetime.now(UTC) - timedelta(days=8)))
    counts = worker.purge_launches()
    assert counts["failed_writes_emptied"] == 1 and counts["heartbeats"] == 1
    assert _state(app, row_id) == ("failed", False)  # the row stays: the queue still says "not in the chart"
    with app.app_context(), session_scope(app) as db:
        assert [r.detail for r in db.scalars(select(AuditEvent).where(AuditEvent.action == "export"))] == ["recent"]


@pytest.mark.postgres
def test_audit_retention_purge_passes_the_append_only_trigger_on_postgresql(postgres_url):
    app = create_app(app_config(postgres_url, AUDIT_RETENTION_DAYS="30"))
    try:
        with app.app_context():
            record_audit("export", actor="cli:test", detail="old")
            record_audit("export", actor="cli:test", detail="new")
        engine = create_engine(postgres_url)
        with engine.begin() as conn:  # age one row as the superuser would, past the trigger
            conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
            conn.execute(text("UPDATE audit_event SET at = now() - interval '40 days' WHERE detail = 'old'"))
            conn.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))
            # The database's retention floor (6 years; only the table's owner may lower it) bounds the purge.
            conn.execute(text("CREATE OR REPLACE FUNCTION audit_event_retention_floor() RETURNS integer "
                              "LANGUAGE sql IMMUTABLE AS 'SELECT 30'"))
        engine.dispose()
        counts = OutboxWorker(app).purge_launches()
        assert counts["audit_rows"] == 1
        with app.app_context(), session_scope(app) as db:
            assert [r.detail for r in db.scalars(select(AuditEvent))] == ["new"]
    finally:
        app.extensions["db_engine"].dispose()
