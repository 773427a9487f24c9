"""Resume after an accidental quick exit (issue 12 item 9), through the real EHR launch (sandbox EHR): the same
user relaunching for the same patient and encounter within 15 minutes is offered to continue; nobody else is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from smart_app.launch.retention import purge
from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord
from tests.conftest import store_launch
from tests.launch.test_launch_sandbox import configure, launch, launch_id
from tests.screening.helpers import launch_data
from tests.screening.test_flow import HITS_NEGATIVE

PATIENT, ENCOUNTER, USER = "pat-lucia", "enc-lucia-mgh", "prac-blair"


def _record(app, lid: str) -> LaunchRecord:
    with app.app_context(), session_scope(app) as db:
        record = db.get(LaunchRecord, lid)
        db.expunge(record)
        return record


def screened_then_quick_exit(app, client, sandbox) -> str:
    """Launch, screen (negative HITS), quick exit: the ended launch's id."""
    configure(app, sandbox)
    lid = launch_id(launch(client, sandbox, PATIENT, ENCOUNTER, USER)[0])
    assert client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes",
                                               "action": "start"}).status_code == 302
    assert client.post(f"/l/{lid}/screen", data=HITS_NEGATIVE).status_code == 302
    assert client.post("/exit").status_code == 302
    record = _record(app, lid)
    assert record.status == "ended" and record.data_enc
    until = record.resumable_until if record.resumable_until.tzinfo else record.resumable_until.replace(tzinfo=UTC)
    assert timedelta(minutes=14) < until - datetime.now(UTC) <= timedelta(minutes=15)
    assert client.get(f"/l/{lid}/result").status_code == 404  # the quick exit still ended it
    return lid


def relaunch(client, sandbox, patient=PATIENT, encounter=ENCOUNTER, user=USER) -> tuple[str, str]:
    lid = launch_id(launch(client, sandbox, patient, encounter, user)[0])
    page = client.get(f"/l/{lid}/")
    assert page.status_code == 200
    return lid, page.get_data(as_text=True)


def test_relaunch_within_15_minutes_offers_to_continue_and_restores_the_answers(app, client, sandbox):
    old = screened_then_quick_exit(app, client, sandbox)
    answers = {k[2:]: v for k, v in HITS_NEGATIVE.items() if k.startswith("q-")}
    new, page = relaunch(client, sandbox)
    assert 'data-testid="gate-resume"' in page and "Continue where you left off" in page
    # Neutral on a shared screen: no instrument, no result on the gate.
    assert "HITS" not in page and "egative" not in page and "score" not in page.lower()
    assert "screening" not in launch_data(app, new)
    r = client.post(f"/l/{new}/resume", data={"action": "continue"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/l/{new}/result")
    data = launch_data(app, new)
    assert data["screening"]["answers"] == answers and data["gate"]["status"] == "confirmed"
    assert "resume_offer" not in data
    assert client.get(f"/l/{new}/result").status_code == 200
    old_record = _record(app, old)
    assert old_record.data_enc is None and old_record.resumable_until is None  # held only until used
    assert 'data-testid="gate-resume"' not in client.get(f"/l/{new}/").get_data(as_text=True)


def test_start_over_deletes_the_old_answers(app, client, sandbox):
    old = screened_then_quick_exit(app, client, sandbox)
    new, page = relaunch(client, sandbox)
    assert 'data-testid="gate-resume"' in page
    r = client.post(f"/l/{new}/resume", data={"action": "start_over"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/l/{new}/")
    assert "screening" not in launch_data(app, new) and "resume_offer" not in launch_data(app, new)
    old_record = _record(app, old)
    assert old_record.data_enc is None and old_record.resumable_until is None
    assert 'data-testid="gate-resume"' not in client.get(f"/l/{new}/").get_data(as_text=True)


def test_no_offer_for_another_user_patient_or_encounter(app, client, sandbox):
    old = screened_then_quick_exit(app, client, sandbox)
    for who in ({"user": "prac-avery"}, {"patient": "pat-joana", "encounter": "enc-joana-chelsea"},
                {"encounter": "enc-lucia-bwh"}):
        new, page = relaunch(client, sandbox, **who)
        assert 'data-testid="gate-resume"' not in page, who
        assert "resume_offer" not in launch_data(app, new)
        # Posting the choice anyway carries nothing over.
        client.post(f"/l/{new}/resume", data={"action": "continue"})
        assert "screening" not in launch_data(app, new)
    assert _record(app, old).data_enc  # still held for its own user, within the window


def test_no_offer_after_15_minutes(app, client, sandbox):
    old = screened_then_quick_exit(app, client, sandbox)
    with app.app_context(), session_scope(app) as db:
        db.execute(update(LaunchRecord).where(LaunchRecord.id == old)
                   .values(resumable_until=datetime.now(UTC) - timedelta(seconds=1)))
    new, page = relaunch(client, sandbox)
    assert 'data-testid="gate-resume"' not in page and "resume_offer" not in launch_data(app, new)


def test_done_back_to_the_chart_is_not_resumable(app, client, sandbox):
    configure(app, sandbox)
    lid = launch_id(launch(client, sandbox, PATIENT, ENCOUNTER, USER)[0])
    client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
    client.post(f"/l/{lid}/screen", data=HITS_NEGATIVE)
    assert client.post(f"/l/{lid}/finish").status_code == 200
    assert _record(app, lid).resumable_until is None
    _, page = relaunch(client, sandbox)
    assert 'data-testid="gate-resume"' not in page


def test_purge_keeps_a_quick_exit_only_while_its_window_is_open(app):
    now = datetime.now(UTC)
    kept = store_launch(app, bid="b1", status="ended", data={"screening": {"answers": {"hurt": "x"}}})
    closed = store_launch(app, bid="b2", status="ended", data={"screening": {"answers": {"hurt": "x"}}})
    with app.app_context(), session_scope(app) as db:
        db.execute(update(LaunchRecord).where(LaunchRecord.id == kept).values(
            resumable_until=now + timedelta(minutes=10), expires_at=now - timedelta(minutes=1)))
        db.execute(update(LaunchRecord).where(LaunchRecord.id == closed).values(
            resumable_until=now - timedelta(seconds=1)))
    with app.app_context(), session_scope(app) as db:
        purge(db, now)
    with app.app_context(), session_scope(app) as db:
        assert set(db.scalars(select(LaunchRecord.id))) == {kept}
    # Once the window has passed, the launch and its answers go.
    with app.app_context(), session_scope(app) as db:
        purge(db, now + timedelta(minutes=10, seconds=1))
    with app.app_context(), session_scope(app) as db:
        assert set(db.scalars(select(LaunchRecord.id))) == set()
