"""The Task's status and the closing outcome go back to the chart through the outbox, and only where the EHR profile
lets this app update the Task (``status_updates``) and the sign-in may: queued in the social worker's request, sent
by the worker (nothing is sent inside the request: the EHR here is unreachable and the page answers at once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, update

from config.ehr_profile import PROFILES_DIR
from smart_app.store.crypto import decrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem, ReferralRecord
from tests.worklist.support import EHR1, SNOMED_SW, make_referral, role, worker_context

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"


def social_worker(app, make_launch, scope=SW_SCOPE):
    client = app.test_client()
    return client, make_launch(client, context=worker_context(
        "Practitioner/sw", "Sam Social", [role([SNOMED_SW], organizations=["Organization/org-bwh"])], scope),
        iss=EHR1, kind="standalone")


def close(client, lid, rid, outcome):
    for status in ("accepted", "completed"):
        assert client.post(f"/l/{lid}/worklist/{rid}/status",
                           data={"status": status, "outcome": outcome}).status_code == 302


def status_rows(app, rid):
    with app.app_context(), session_scope(app) as db:
        return [(r.kind, r.status, decrypt_json(r.resource_enc)) for r in db.scalars(
            select(OutboxItem).where(OutboxItem.referral_id == rid, OutboxItem.operation == "status")
            .order_by(OutboxItem.id))]


def test_the_closing_status_and_outcome_are_queued_for_the_task(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Tara Task")
    client, lid = social_worker(app, make_launch)
    for _ in range(2):
        client.post(f"/l/{lid}/worklist/{rid}/contact", data={"channel": "phone", "outcome": "no_answer"})
    close(client, lid, rid, "unreachable")
    rows = status_rows(app, rid)
    pending = {kind: wanted for kind, state, wanted in rows if state == "pending"}
    assert len(rows) == 4 and set(pending) == {"Task", "ServiceRequest"}  # the older "accepted" ones superseded
    task, service_request = pending["Task"], pending["ServiceRequest"]
    assert task["status"] == "completed" and task["status_reason"] == {
        "coding": [{"system": "urn:ipv-screen:closing-outcome", "code": "unreachable",
                    "display": "Unable to reach safely"}],
        "text": "Unable to reach safely after 2 attempts"}
    assert service_request["status"] == "completed" and "status_reason" not in service_request
    history = client.get(f"/l/{lid}/worklist/{rid}/history").get_data(as_text=True)
    assert "Chart update queued: follow-up task to “Completed (Unable to reach safely after 2 attempts)”" in history


def test_nothing_is_queued_where_the_profile_does_not_allow_task_updates(app, make_launch, tmp_path):
    profile = yaml.safe_load((Path(PROFILES_DIR) / "sandbox.yaml").read_text())
    profile["status_updates"] = []
    path = tmp_path / "no-updates.yaml"
    path.write_text(yaml.safe_dump(profile))
    rid = make_referral(app, make_launch, "bwh", "p1", "Nell Noupdate")
    with app.app_context(), session_scope(app) as db:
        db.execute(update(ReferralRecord).where(ReferralRecord.id == rid).values(profile=str(path)))
    client, lid = social_worker(app, make_launch)
    assert 'data-on="no"' in client.get(f"/l/{lid}/worklist/{rid}").get_data(as_text=True)
    close(client, lid, rid, "reached_supported")
    assert status_rows(app, rid) == []
    with app.app_context(), session_scope(app) as db:
        assert db.get(ReferralRecord, rid).closing_outcome == "reached_supported"  # kept in the app all the same


def test_nothing_is_queued_where_the_sign_in_cannot_update_the_task(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Rae Readonly")
    client, lid = social_worker(app, make_launch, scope="openid fhirUser user/Task.rs user/ServiceRequest.rs")
    close(client, lid, rid, "referred_elsewhere")
    assert status_rows(app, rid) == []
