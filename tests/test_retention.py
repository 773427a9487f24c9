"""Retention: an ended or expired launch leaves nothing of the patient behind, except what an unsent
chart write still needs; old replay guards go too. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from config.ehr_profile import EhrProfile
from smart_app import create_app
from smart_app.launch.retention import purge
from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord, OutboxItem, ReferralRecord, UsedCode
from tests.conftest import app_config, launch_for, store_launch
from tests.writeback.support import add_referral


def _launch_ids(app) -> set[str]:
    with app.app_context(), session_scope(app) as db:
        return set(db.scalars(select(LaunchRecord.id)))


def _set(app, model, where, **values) -> None:
    with app.app_context(), session_scope(app) as db:
        db.execute(update(model).where(where).values(**values))


def _purge(app, now: datetime | None = None) -> dict[str, int]:
    with app.app_context(), session_scope(app) as db:
        return purge(db, now)


def _check_retention(app) -> None:
    active = store_launch(app, bid="b1")
    store_launch(app, bid="b1", status="ended")
    expired = store_launch(app, bid="b2")
    _set(app, LaunchRecord, LaunchRecord.id == expired, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    waiting = store_launch(app, bid="b3", status="ended")  # quick exit right after consent
    referral = add_referral(app, waiting, "http://ehr.test/fhir", EhrProfile.load("sandbox"))

    counts = _purge(app)
    assert counts["launches"] == 2
    assert _launch_ids(app) == {active, waiting}  # the unsent writes still need the launch's token

    _set(app, OutboxItem, OutboxItem.referral_id == referral, status="written", label_status="unverified")
    assert _purge(app)["writes_emptied"] == 0  # the label check still needs what was sent
    # ...but a pending read-back never holds the ended launch's tokens and answers (issue 8).
    assert _launch_ids(app) == {active}
    _set(app, OutboxItem, OutboxItem.referral_id == referral, label_status="ok")
    assert _purge(app)["writes_emptied"] == 3  # in the chart, labels checked: our copy goes
    assert _launch_ids(app) == {active}
    assert _purge(app)["writes_emptied"] == 0
    with app.app_context(), session_scope(app) as db:
        assert all(r.resource_enc == b"" for r in db.scalars(select(OutboxItem)))
    with app.app_context(), session_scope(app) as db:  # social work keeps its queue entry
        assert db.scalar(select(func.count()).select_from(ReferralRecord)) == 1

    with app.app_context(), session_scope(app) as db:
        db.add_all([UsedCode(code_hash="old", used_at=datetime.now(UTC) - timedelta(days=2)),
                    UsedCode(code_hash="new", used_at=datetime.now(UTC))])
    assert _purge(app)["used_codes"] == 1


def test_purge_keeps_only_what_is_still_needed(app):
    _check_retention(app)


@pytest.mark.postgres
def test_purge_on_postgresql(postgres_url):
    app = create_app(app_config(postgres_url))
    try:
        _check_retention(app)
    finally:
        app.extensions["db_engine"].dispose()


def test_quick_exit_then_purge_command_leaves_no_patient_data(app, client):
    lid = launch_for(app, client, data={"screening": {"answers": {"hurt": "frequently"}}})
    client.post("/exit")
    # Held (encrypted) for its 15-minute resume window only (issue 12 item 9), then nothing is left.
    result = app.test_cli_runner().invoke(args=["purge-launches"])
    assert result.exit_code == 0 and "launches=0" in result.output and lid in _launch_ids(app)
    _set(app, LaunchRecord, LaunchRecord.id == lid, resumable_until=datetime.now(UTC) - timedelta(seconds=1))
    result = app.test_cli_runner().invoke(args=["purge-launches"])
    assert result.exit_code == 0 and "launches=1" in result.output
    assert lid not in _launch_ids(app)
    with app.extensions["db_engine"].connect() as conn:  # nothing encrypted or plain is left of it
        assert conn.exec_driver_sql("SELECT count(*) FROM launch").scalar() == 0


def test_the_outbox_worker_purges_as_it_runs(app):
    from smart_app.outbox.worker import OutboxWorker

    ended = store_launch(app, bid="b", status="ended")
    rounds = iter([False, True])  # one round, then stop
    OutboxWorker(app).loop(idle_sleep=0, stop=lambda: next(rounds))
    assert ended not in _launch_ids(app)
