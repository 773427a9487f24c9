"""Access audit: each action leaves exactly one row (who, what, which patient encrypted, where), the table is
append-only through the app and (on PostgreSQL) in the database, and the privacy office's CLI finds rows by
patient, user and date."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.exc import DBAPIError

from config.current import replace_settings
from config.ehr_profile import EhrProfile
from smart_app import create_app
from smart_app.ops.audit import AppendOnlyError, purge_audit, query_audit, record_audit
from smart_app.ops.observability import launch_ref
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import AuditEvent, OutboxItem, ReferralRecord
from tests.conftest import app_config, default_context
from tests.launch.test_launch_sandbox import configure, launch, launch_id
from tests.writeback.support import REFERRAL, SCREENING, FakeEhr, add_launch, add_referral, consent

pytestmark = pytest.mark.ops
DOWN_ISS = "http://127.0.0.1:9/fhir"
DATA = {"screening": dict(SCREENING), "referral": REFERRAL}


def rows(app, action: str | None = None) -> list[AuditEvent]:
    with app.app_context(), session_scope(app) as db:
        q = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            q = q.where(AuditEvent.action == action)
        return list(db.scalars(q))


def patient_of(app, row: AuditEvent) -> dict:
    from smart_app.store.crypto import decrypt_json

    with app.app_context():
        return decrypt_json(row.patient_enc) or {}


def test_launch_leaves_one_row_with_user_iss_and_encrypted_patient(app, client, sandbox):
    configure(app, sandbox)
    resp, _ = launch(client, sandbox, "pat-joana", "enc-joana-chelsea", "prac-blair")
    lid = launch_id(resp)
    [row] = rows(app)
    assert (row.action, row.actor, row.iss, row.detail) == ("launch", "Practitioner/prac-blair", sandbox.iss, "ehr")
    assert row.launch_ref == launch_ref(lid) and lid not in row.launch_ref and row.instance
    assert b"pat-joana" not in row.patient_enc and patient_of(app, row)["id"] == "pat-joana"


def test_viewing_the_result_leaves_one_row_per_view(app, client, make_launch):
    lid = make_launch(client, data={"screening": dict(SCREENING)})
    assert client.get(f"/l/{lid}/result").status_code == 200
    [row] = rows(app)
    assert (row.action, row.actor, row.detail) == ("view_result", "Practitioner/prac-test", SCREENING["instrument"])
    assert patient_of(app, row) == {"id": "pat-test", "mrn": "TEST-1"}
    client.get(f"/l/{lid}/result")
    assert len(rows(app, "view_result")) == 2


def test_a_result_view_is_audited_even_when_the_page_then_fails(app, client, make_launch, monkeypatch):
    from smart_app.screening import views as screening

    lid = make_launch(client, data={"screening": dict(SCREENING)})

    def broken(*_args, **_kwargs):
        raise RuntimeError("template failed")

    monkeypatch.setattr(screening, "render_template", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.get(f"/l/{lid}/result").status_code == 500
    assert len(rows(app, "view_result")) == 1


def test_worklist_referral_and_status_each_leave_one_row(app, make_launch):
    clinician = app.test_client()
    lid = make_launch(clinician, data=DATA, iss=DOWN_ISS)
    consent(clinician, lid, channel="none")  # as the page does it: with the digest of what was shown
    with app.app_context(), session_scope(app) as db:
        rid = db.scalar(select(ReferralRecord.id))
    sw = app.test_client()
    ctx = default_context(patient=None, encounter=None,
                          user={"reference": "Practitioner/sw-1", "name": "Sam Social", "roles": ["social_worker"]})
    swid = make_launch(sw, context=ctx, iss=DOWN_ISS, kind="standalone")
    # The social worker covers the referral's site (MGH Chelsea) through the deployment file (issue 11 scope).
    replace_settings(app, worklist={"coverage": {"roles": {"social_worker": ["urn:ipv-sandbox:site|mgh-chelsea"]}}})
    before = len(rows(app))

    sw.get(f"/l/{swid}/worklist")
    [view] = rows(app)[before:]
    assert (view.action, view.actor, view.patient_enc) == ("view_worklist", "Practitioner/sw-1", None)

    sw.get(f"/l/{swid}/worklist/{rid}/history")
    [opened] = rows(app)[before + 1:]
    assert (opened.action, opened.object_id) == ("open_referral", rid)
    assert patient_of(app, opened)["id"] == "pat-test"

    assert sw.post(f"/l/{swid}/worklist/{rid}/status", data={"status": "accepted"}).status_code == 302
    [changed] = rows(app)[before + 2:]
    assert (changed.action, changed.detail, changed.actor) == ("change_status", "requested->accepted",
                                                               "Practitioner/sw-1")
    # A refused change is audited as refused, and changes nothing.
    assert sw.post(f"/l/{swid}/worklist/{rid}/status", data={"status": "requested"}).status_code == 400
    [refused] = rows(app)[before + 3:]
    assert (refused.action, refused.detail) == ("change_status", "refused: invalid-transition")


def test_each_chart_write_leaves_one_row_naming_the_launch_user(app):
    ehr = FakeEhr()
    profile = EhrProfile.load("sandbox")
    lid = add_launch(app, "http://ehr.test/fhir", "tok")
    rid = add_referral(app, lid, "http://ehr.test/fhir", profile, resources=["DocumentReference", "ServiceRequest"])
    OutboxWorker(app, client_for=ehr.client).drain()
    written = rows(app, "write_resource")
    with app.app_context(), session_scope(app) as db:
        sent = sorted(db.scalars(select(OutboxItem.kind).where(OutboxItem.status == "written")))
    assert len(sent) >= 2 and sorted(r.detail for r in written) == sent  # exactly one row per write
    for row in written:
        assert row.actor == "Practitioner/prac-test" and row.object_id == rid
        secret = patient_of(app, row)
        assert secret["id"] == "pat-1" and secret["resources"][0].startswith(row.detail + "/")
    OutboxWorker(app, client_for=ehr.client).drain()  # nothing more to send: no more rows
    assert len(rows(app, "write_resource")) == len(written)


def test_rows_cannot_be_changed_or_deleted_through_the_app(app):
    with app.app_context():
        record_audit("export", actor="cli:test", detail="x")
        with session_scope(app) as db:
            row = db.scalar(select(AuditEvent))
            row.detail = "changed"
            with pytest.raises(AppendOnlyError):
                db.flush()
            db.rollback()
        with session_scope(app) as db:
            db.delete(db.scalar(select(AuditEvent)))
            with pytest.raises(AppendOnlyError):
                db.flush()
            db.rollback()
        with session_scope(app) as db, pytest.raises(DBAPIError):  # SQLite trigger
            db.execute(update(AuditEvent).values(detail="changed"))
    [row] = rows(app)
    assert row.detail == "x"


@pytest.mark.postgres
def test_postgresql_refuses_update_delete_truncate_except_the_retention_purge(postgres_url):
    app = create_app(app_config(postgres_url))
    try:
        with app.app_context():
            record_audit("export", actor="cli:test", detail="old")
            record_audit("export", actor="cli:test", detail="new")
        engine = create_engine(postgres_url)
        with engine.begin() as conn:  # the owner ages one row past the retention floor (6 years)
            conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
            conn.execute(text("UPDATE audit_event SET at = now() - interval '2200 days' WHERE detail = 'old'"))
            conn.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))
        # Even the owner, with the settings that once opened the trigger: no change, no young row deleted.
        for sql in ("UPDATE audit_event SET detail = 'x'", "DELETE FROM audit_event WHERE detail = 'new'",
                    "TRUNCATE audit_event"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text("SELECT set_config('ipv.audit_purge', 'on', true), "
                                  "set_config('ipv.audit_rekey', 'on', true)"))
                conn.execute(text(sql))
        with app.app_context(), session_scope(app) as db:
            assert purge_audit(db, days=5) == 1  # the database's clock and floor decide: only the old row
        assert [r.detail for r in rows(app)] == ["new"]
        engine.dispose()
    finally:
        app.extensions["db_engine"].dispose()


def test_privacy_office_cli_by_patient_user_and_date(app, make_launch):
    a, b = app.test_client(), app.test_client()
    lid_a = make_launch(a, data={"screening": dict(SCREENING)})
    ctx_b = default_context(user={"reference": "Practitioner/prac-other", "name": "Other", "roles": ["clinician"]})
    ctx_b["patient"] = {**ctx_b["patient"], "id": "pat-other", "mrn": "MRN-9"}
    lid_b = make_launch(b, context=ctx_b, data={"screening": dict(SCREENING)})
    a.get(f"/l/{lid_a}/result")
    b.get(f"/l/{lid_b}/result")
    runner = app.test_cli_runner()

    out = runner.invoke(args=["audit", "--patient", "MRN-9", "--format", "json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.output)
    assert [(r["action"], r["actor"], r["patient_id"]) for r in found] == [
        ("view_result", "Practitioner/prac-other", "pat-other")]

    found = json.loads(runner.invoke(args=["audit", "--user", "prac-test", "--format", "json"]).output)
    assert {r["patient_id"] for r in found} == {"pat-test"}

    today = datetime.now(UTC).date()
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert json.loads(runner.invoke(args=["audit", "--since", tomorrow, "--format", "json"]).output) == []
    csv_out = runner.invoke(args=["audit", "--since", today.isoformat(), "--until", today.isoformat(),
                                  "--format", "csv"]).output
    assert csv_out.splitlines()[0].startswith("at,action,actor") and "pat-other" in csv_out
    # Every listing is itself audited.
    with app.app_context(), session_scope(app) as db:
        exports = db.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "export"))
        assert exports == 4
        assert len(query_audit(db, patient="pat-test", action="view_result")) == 1


def test_unknown_action_is_refused(app):
    with app.app_context(), pytest.raises(ValueError):
        record_audit("looked_around")


def test_program_report_view_and_csv_export_each_leave_one_row_without_a_patient(app, make_launch):
    manager = app.test_client()
    ctx = default_context(user={"reference": "Practitioner/pm-1", "name": "Pat Manager",
                                "roles": ["program_manager"]})
    lid = make_launch(manager, context=ctx)
    assert manager.get(f"/l/{lid}/report?month=2026-11").status_code == 200
    assert manager.get(f"/l/{lid}/report.csv?month=2026-11").status_code == 200
    viewed, exported = rows(app)
    assert (viewed.action, viewed.actor, viewed.detail, viewed.patient_enc) == (
        "view_report", "Practitioner/pm-1", "2026-11", None)
    assert (exported.action, exported.detail, exported.patient_enc) == ("export", "program report CSV 2026-11", None)
