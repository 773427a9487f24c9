"""Outbox behaviour against a scripted in-memory EHR: retries, refusals, labels, crash recovery."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from config.current import replace_settings
from config.ehr_profile import EhrProfile
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem
from tests.writeback.support import FakeEhr, add_launch, add_referral

ISS = "http://ehr.test/fhir"


def rows(app, referral_id=None):
    with app.app_context(), session_scope(app) as db:
        q = select(OutboxItem).order_by(OutboxItem.id)
        if referral_id:
            q = q.where(OutboxItem.referral_id == referral_id)
        return list(db.scalars(q))


def setup(app, profile="sandbox", **kw):
    lid = add_launch(app, ISS, "tok")
    rid = add_referral(app, lid, ISS, EhrProfile.load(profile), **kw)
    return lid, rid


def test_writes_in_order_resolves_references_and_verifies_labels(fast_app):
    ehr = FakeEhr()
    _, rid = setup(fast_app)
    stats = OutboxWorker(fast_app, client_for=ehr.client).drain()
    assert stats.written == 3 and stats.failed == 0
    by_kind = {r.kind: r for r in rows(fast_app, rid)}
    assert {r.status for r in by_kind.values()} == {"written"}
    assert {r.label_status for r in by_kind.values()} == {"ok"}
    sr = ehr.resources[("ServiceRequest", by_kind["ServiceRequest"].server_id)]
    assert sr["reasonReference"] == [{"reference": f"Observation/{by_kind['Observation'].server_id}"}]
    doc = ehr.resources[("DocumentReference", by_kind["DocumentReference"].server_id)]
    assert doc["context"]["related"] == [{"reference": f"ServiceRequest/{by_kind['ServiceRequest'].server_id}"}]
    # Contacting prohibited: the safe-contact channel was "none".
    assert sr["orderDetail"][0]["coding"][0]["code"] == "contacting-subject-prohibited"


def test_resource_is_encrypted_at_rest(fast_app):
    _, rid = setup(fast_app, patient="pat-secret-42")
    for row in rows(fast_app, rid):
        assert b"pat-secret-42" not in row.resource_enc
        assert b"DocumentReference" not in row.resource_enc


def test_transient_failures_are_retried_without_duplicates(fast_app):
    ehr = FakeEhr()
    ehr.script = [503, "timeout", 429, None, "after_commit:500", 502, None, None, "timeout", None, None, None]
    _, rid = setup(fast_app)
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    assert {r.status for r in rows(fast_app, rid)} == {"written"}
    for kind in ("Observation", "ServiceRequest", "DocumentReference"):
        assert ehr.count(kind) == 1


def test_refused_write_is_kept_and_retried_exactly_once_then_fails_plainly(fast_app, caplog):
    ehr = FakeEhr()
    _, rid = setup(fast_app, resources=["DocumentReference"])
    worker = OutboxWorker(fast_app, client_for=ehr.client)
    ehr.script = [422]
    worker.run_once()
    (row,) = rows(fast_app, rid)
    assert row.status == "pending" and row.final_retry
    assert "refused" in row.last_error and "HTTP 422" in row.last_error
    ehr.script = [422]
    caplog.set_level(logging.INFO, logger="ipv.outbox")
    worker.drain()
    (row,) = rows(fast_app, rid)
    assert row.status == "failed" and row.attempts == 2
    assert row.last_error == "HTTP 422: invalid"
    assert ehr.sent.count(row.identifier_value) == 2  # the first try and exactly one more
    # The EHR's diagnostics (which may echo PHI) are never stored or logged.
    assert "Rosa" not in row.last_error and "Rosa" not in caplog.text


def test_refused_then_accepted_on_the_final_retry(fast_app):
    ehr = FakeEhr()
    ehr.script = [409]
    _, rid = setup(fast_app, resources=["DocumentReference"])
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app, rid)
    assert row.status == "written" and ehr.count("DocumentReference") == 1


def test_transient_tries_used_up_then_one_final_retry(fast_app):
    replace_settings(fast_app, OUTBOX_MAX_ATTEMPTS=3)
    ehr = FakeEhr()
    ehr.script = [502, 502, 502, 502, 502]
    _, rid = setup(fast_app, resources=["DocumentReference"])
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app, rid)
    # A gateway's 502 may come after the EHR filed it: "not written" could be false, so the last word is
    # "check the chart", never "failed" (which asks social work to document it by hand: a duplicate). An EHR's
    # own 503 or 429 filed nothing: that ends "failed" (tests/ops/test_writeback_outcomes.py).
    assert row.status == "check" and row.attempts == 4 and "HTTP 502: invalid" in row.last_error
    assert ehr.count("DocumentReference") == 0


def test_a_refusal_before_filing_fails_plainly(fast_app):
    replace_settings(fast_app, OUTBOX_MAX_ATTEMPTS=3)
    ehr = FakeEhr()
    ehr.script = [429, 429, 429, 429, 429]  # 4xx: refused before filing, nothing can be in the chart
    _, rid = setup(fast_app, resources=["DocumentReference"])
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app, rid)
    assert row.status == "failed" and row.attempts == 4 and ehr.count("DocumentReference") == 0


def test_dropped_labels_are_flagged_and_logged_without_phi(fast_app, caplog):
    ehr = FakeEhr()
    ehr.drop_labels = True
    _, rid = setup(fast_app, patient="pat-phi-99")
    caplog.set_level(logging.INFO, logger="ipv.outbox")
    stats = OutboxWorker(fast_app, client_for=ehr.client).drain()
    assert stats.label_flags == 3
    for row in rows(fast_app, rid):
        assert row.status == "written" and row.label_status == "flagged"
        assert "v3-Confidentiality#R" in row.label_detail and "v3-ActCode#SDV" in row.label_detail
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("security labels" in w for w in warnings)
    assert "pat-phi-99" not in caplog.text and "Test Patient" not in caplog.text


def test_failed_read_back_is_retried_later(fast_app):
    ehr = FakeEhr()
    ehr.return_minimal = True  # the create answer carries no resource: labels are read back
    ehr.script = [None, 503]  # create ok, read-back fails
    _, rid = setup(fast_app, resources=["DocumentReference"])
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app, rid)
    assert row.status == "written" and row.label_status == "ok"
    assert ehr.calls.count(("read", "DocumentReference")) == 2


def test_launch_without_token_fails_plainly_and_sends_nothing(fast_app):
    lid = add_launch(fast_app, ISS, None, tokens={})
    rid = add_referral(fast_app, lid, ISS, EhrProfile.load("sandbox"), resources=["DocumentReference"])
    stats = OutboxWorker(fast_app).drain()  # default provider: the launch's own tokens
    (row,) = rows(fast_app, rid)
    assert stats.sends == 0 and row.status == "failed" and "sign-in" in row.last_error


def test_expired_token_without_refresh_fails_plainly(fast_app):
    lid = add_launch(fast_app, ISS, None, tokens={"access_token": "old", "expires_at": 1})
    rid = add_referral(fast_app, lid, ISS, EhrProfile.load("sandbox"), resources=["DocumentReference"])
    OutboxWorker(fast_app).drain()
    (row,) = rows(fast_app, rid)
    assert row.status == "failed" and "expired" in row.last_error


def test_row_stuck_in_sending_is_reclaimed_after_its_lease_and_not_duplicated(fast_app):
    ehr = FakeEhr()
    _, rid = setup(fast_app, resources=["DocumentReference"])
    crashed = OutboxWorker(fast_app, client_for=ehr.client, worker_id="crashed")
    with fast_app.app_context(), session_scope(fast_app) as db:
        crashed.claim(db)
    (row,) = rows(fast_app, rid)
    assert row.status == "sending"
    # The crashed worker's request did reach the EHR before it died.
    from smart_app.store.crypto import decrypt_json
    with fast_app.app_context():
        ehr.create(decrypt_json(row.resource_enc), if_none_exist=f"identifier={row.identifier_system}|"
                                                                  f"{row.identifier_value}")
    other = OutboxWorker(fast_app, client_for=ehr.client)
    assert other.run_once().claimed == 0  # lease still held
    with fast_app.app_context(), session_scope(fast_app) as db:
        db.execute(update(OutboxItem).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    other.drain()
    (row,) = rows(fast_app, rid)
    assert row.status == "written" and ehr.count("DocumentReference") == 1


def test_task_needs_its_service_request(fast_app):
    ehr = FakeEhr()
    _, rid = setup(fast_app, resources=["ServiceRequest", "DocumentReference", "Task"])
    ehr.script = [400, 400]  # ServiceRequest refused twice
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    by_kind = {r.kind: r for r in rows(fast_app, rid)}
    assert by_kind["ServiceRequest"].status == "failed"
    assert by_kind["Task"].status == "failed" and "ServiceRequest" in by_kind["Task"].last_error
    # The note is still written, without the link to the missing request.
    assert by_kind["DocumentReference"].status == "written"
    doc = ehr.resources[("DocumentReference", by_kind["DocumentReference"].server_id)]
    assert "related" not in (doc.get("context") or {})


def test_parallel_workers_on_sqlite_never_send_a_row_twice(fast_app):
    ehr = FakeEhr()
    lid = add_launch(fast_app, ISS, "tok")
    profile = EhrProfile.load("sandbox")
    for _ in range(20):
        add_referral(fast_app, lid, ISS, profile)
    workers = [OutboxWorker(fast_app, client_for=ehr.client) for _ in range(4)]
    threads = [threading.Thread(target=w.drain, kwargs={"max_seconds": 60}) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status for r in rows(fast_app)} == {"written"}
    assert len(ehr.sent) == 60 and len(set(ehr.sent)) == 60


def test_note_waits_for_its_link_only_for_a_while(fast_app):
    replace_settings(fast_app, OUTBOX_LINK_WAIT_SECONDS=0)
    ehr = FakeEhr()
    ehr.script = [503, None, None]  # the score fails once; referral and note go on without waiting
    _, rid = setup(fast_app)
    worker = OutboxWorker(fast_app, client_for=ehr.client)
    worker.run_once()
    by_kind = {r.kind: r for r in rows(fast_app, rid)}
    assert by_kind["Observation"].status == "pending"
    assert by_kind["DocumentReference"].status == "written"
    sr = ehr.resources[("ServiceRequest", by_kind["ServiceRequest"].server_id)]
    assert "reasonReference" not in sr
    worker.drain()
    assert {r.status for r in rows(fast_app, rid)} == {"written"}


def test_429_retry_after_is_honoured(fast_app):
    ehr = FakeEhr()
    _, rid = setup(fast_app, resources=["DocumentReference"])
    original = ehr._raise

    def throttled(fault):
        if fault == 429:
            from fhir.client import FhirError
            raise FhirError(429, "slow down", None, retry_after=30.0)
        original(fault)

    ehr._raise = throttled
    ehr.script = [429]
    before = datetime.now(UTC)
    OutboxWorker(fast_app, client_for=ehr.client).run_once()
    (row,) = rows(fast_app, rid)
    due = row.next_attempt_at if row.next_attempt_at.tzinfo else row.next_attempt_at.replace(tzinfo=UTC)
    assert row.status == "pending" and row.last_error == "HTTP 429"
    assert due >= before + timedelta(seconds=30)


def test_a_conditional_send_with_no_answer_is_searched_for_by_a_worker_that_cannot_trust_if_none_exist(fast_app):
    """Worker 1 sends with If-None-Exist; the EHR files it but the answer is lost. Worker 2's CapabilityStatement
    read failed, so it cannot rely on If-None-Exist: it must find the filed note, not create a second one."""
    replace_settings(fast_app, OUTBOX_BASE_DELAY=0.0)
    ehr = FakeEhr()
    ehr.script = ["after_commit:timeout"]
    _, rid = setup(fast_app, resources=["DocumentReference"])
    first = OutboxWorker(fast_app, client_for=ehr.client)
    first.honours_conditional_create = lambda *args: True
    first.run_once()
    assert ehr.count("DocumentReference") == 1
    (row,) = rows(fast_app, rid)
    assert row.status != "written"  # no answer: the worker does not know it was filed
    second = OutboxWorker(fast_app, client_for=ehr.client)
    second.honours_conditional_create = lambda *args: False
    second.drain()
    (row,) = rows(fast_app, rid)
    assert row.status == "written" and ehr.count("DocumentReference") == 1
