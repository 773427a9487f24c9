"""Closed loop against the live sandbox EHR: the social worker's status changes reach the referral's Task and
ServiceRequest in the chart through the outbox, exactly once in effect, while the sandbox injects 5xx/429
and fail-after-commit on writes (/__faults). What the EHR holds is read from its own store."""

from __future__ import annotations

import secrets

import pytest
import requests
from sqlalchemy import select

from smart_app import create_app
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem, ReferralRecord
from tests.conftest import app_config, store_launch
from tests.worklist.support import SNOMED_SW, clinician_context, referral_data, role, worker_context
from tests.writeback.conftest import FAST
from tests.writeback.support import consent, sandbox_token

pytestmark = pytest.mark.worklist

SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus user/Patient.rs"


@pytest.fixture
def loop_app(tmp_path, sandbox):
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", **FAST, OUTBOX_MAX_ATTEMPTS=20))
    yield app
    app.extensions["db_engine"].dispose()


@pytest.fixture
def faults(sandbox):
    def configure(**settings):
        requests.post(sandbox.url + "/__faults", json=settings, timeout=5).raise_for_status()

    yield configure
    requests.delete(sandbox.url + "/__faults", timeout=5)


def _browser(app):
    client = app.test_client()
    with client.session_transaction() as sess:
        bid = sess.setdefault("bid", secrets.token_urlsafe(24))
    return client, bid


def _held(sandbox, kind, server_id):
    from sandbox_ehr.store import get_store

    with sandbox.app.app_context():
        store = get_store(sandbox.app)
        return store.read(kind, server_id), store.history(kind, server_id)


def test_status_changes_reach_the_chart_exactly_once_under_faults(loop_app, sandbox, faults):
    from sandbox_ehr.authstore import issue_access_token

    app = loop_app
    # The clinician's referral, with its Task and ServiceRequest written to the sandbox chart.
    clinician, bid = _browser(app)
    ctx = clinician_context("bwh", "pat-alice", "Alice Sample", encounter="enc-alice-bwh")
    token = sandbox_token(sandbox, "pat-alice", "enc-alice-bwh")
    lid = store_launch(app, bid=bid, context=ctx, data=referral_data("bwh"), iss=sandbox.iss,
                       tokens={"access_token": token, "token_type": "Bearer"})
    assert consent(clinician, lid, channel="phone", resources=["ServiceRequest", "Task"]).status_code == 302
    OutboxWorker(app).drain(max_seconds=30)
    with app.app_context(), session_scope(app) as db:
        rid = db.scalar(select(ReferralRecord.id))
        created = {r.kind: r.server_id for r in db.scalars(select(OutboxItem).where(OutboxItem.status == "written"))}
    assert {"Task", "ServiceRequest"} <= set(created)

    # Devon (BWH) with a user-level token that may update Task and ServiceRequest.
    sw, sw_bid = _browser(app)
    with sandbox.app.app_context():
        sw_token = issue_access_token("ipv-screen-jwt", SW_SCOPE, fhir_user="Practitioner/prac-devon")
    sw_ctx = worker_context("Practitioner/prac-devon", "Devon Testsocialwork",
                            [role([SNOMED_SW], organizations=["Organization/org-bwh"])], SW_SCOPE)
    swid = store_launch(app, bid=sw_bid, context=sw_ctx, iss=sandbox.iss, kind="standalone",
                        tokens={"access_token": sw_token, "token_type": "Bearer"})
    page = sw.get(f"/l/{swid}/worklist/{rid}").get_data(as_text=True)
    assert 'data-on="yes"' in page

    # Accept and complete under 5xx/429 on half the writes; "in progress" with every write committed but its
    # reply lost (fail-after-commit): the retry must find the status set and not write again.
    phases = {"accepted": {"error_rate": 0.5, "statuses": [500, 503, 429]},
              "in-progress": {"fail_after_commit_rate": 1.0},
              "completed": {"error_rate": 0.5, "statuses": [500, 503, 429]}}
    hits = 0
    for step, settings in phases.items():
        faults(**settings, apply_to="writes", seed=11)
        assert sw.post(f"/l/{swid}/worklist/{rid}/status",
                       data={"status": step, "outcome": "reached_supported"}).status_code == 302
        OutboxWorker(app).drain(max_seconds=60)
        injected = requests.get(sandbox.url + "/__faults", timeout=5).json()["injected"]
        hits += injected["errors"] + injected["failed_after_commit"]
        if step == "in-progress":
            # One PUT (the Task; the ServiceRequest stays "active"), its reply lost; the retry reads the
            # status already set and writes nothing more.
            assert injected["failed_after_commit"] == 1
    faults()
    assert hits > 2

    task, task_versions = _held(sandbox, "Task", created["Task"])
    sr, _sr_versions = _held(sandbox, "ServiceRequest", created["ServiceRequest"])
    assert task["status"] == "completed" and sr["status"] == "completed"
    # How it ended travels with the Task's closing status; the ServiceRequest has no place for it.
    assert task["statusReason"]["coding"][0] == {"system": "urn:ipv-screen:closing-outcome",
                                                 "code": "reached_supported", "display": "Reached and supported"}
    assert "statusReason" not in sr
    statuses = [v["status"] for v in sorted(task_versions, key=lambda v: int(v["meta"]["versionId"]))]
    # Never the same change twice: each stored version differs from the one before it.
    assert all(a != b for a, b in zip(statuses, statuses[1:], strict=False))
    assert len(statuses) <= 4 and statuses[0] == "requested"
    # The labels the app wrote survive its updates.
    assert {c["code"] for c in task["meta"].get("security", [])} >= {"R", "SDV"}
    with app.app_context(), session_scope(app) as db:
        rows = list(db.scalars(select(OutboxItem).where(OutboxItem.operation == "status")))
        assert rows and all(r.status in ("written", "superseded") for r in rows)
    history = sw.get(f"/l/{swid}/worklist/{rid}/history").get_data(as_text=True)
    assert "Chart updated: follow-up task set to “Completed (Reached and supported)”" in history


def test_nothing_is_attempted_where_the_sign_in_cannot_update(loop_app, sandbox):
    app = loop_app
    clinician, bid = _browser(app)
    ctx = clinician_context("bwh", "pat-alice", "Alice Sample", encounter="enc-alice-bwh")
    lid = store_launch(app, bid=bid, context=ctx, data=referral_data("bwh"), iss=sandbox.iss,
                       tokens={"access_token": sandbox_token(sandbox, "pat-alice", "enc-alice-bwh"),
                               "token_type": "Bearer"})
    assert consent(clinician, lid, channel="phone", resources=["Task"]).status_code == 302
    sw, sw_bid = _browser(app)
    sw_ctx = worker_context("Practitioner/prac-devon", "Devon", [role([SNOMED_SW],
                                                                     organizations=["Organization/org-bwh"])],
                            "openid fhirUser user/Task.rs")  # read only
    swid = store_launch(app, bid=sw_bid, context=sw_ctx, iss=sandbox.iss, kind="standalone")
    with app.app_context(), session_scope(app) as db:
        rid = db.scalar(select(ReferralRecord.id))
    page = sw.get(f"/l/{swid}/worklist/{rid}").get_data(as_text=True)
    assert 'data-on="no"' in page and "does not allow updating the chart" in page
    sw.post(f"/l/{swid}/worklist/{rid}/status", data={"status": "accepted"})
    with app.app_context(), session_scope(app) as db:
        assert not list(db.scalars(select(OutboxItem).where(OutboxItem.operation == "status")))
