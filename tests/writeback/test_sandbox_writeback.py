"""Write-back against the live sandbox EHR with its fault injection (/__faults).

Counts are taken from the sandbox's own store: what the EHR holds, not what the app believes.
"""

from __future__ import annotations

import base64
import threading
from collections import Counter

import pytest
import requests
from sqlalchemy import select

from config.current import replace_settings
from config.ehr_profile import EhrProfile
from fhir.client import FhirClient
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem
from tests.conftest import default_context
from tests.writeback.support import (
    REFERRAL,
    SCREENING,
    add_launch,
    add_referral,
    consent,
    sandbox_token,
    set_tokens,
)

PATIENTS = [("pat-alice", "enc-alice-bwh"), ("pat-carmen", "enc-carmen-sjphc"), ("pat-joana", "enc-joana-chelsea")]
IDENT_SYSTEM = "urn:ipv-screen:writeback"


@pytest.fixture
def faults(sandbox):
    """Set the sandbox's fault injection for one test; always reset afterwards (the sandbox is shared)."""

    def configure(**settings):
        resp = requests.post(sandbox.url + "/__faults", json=settings, timeout=5)
        resp.raise_for_status()
        return resp.json()

    yield configure
    requests.delete(sandbox.url + "/__faults", timeout=5)


def injected(sandbox) -> dict:
    return requests.get(sandbox.url + "/__faults", timeout=5).json()["injected"]


def stored(sandbox, kind: str, referral_ids: set[str]) -> Counter:
    """How many resources of ``kind`` the sandbox holds per business identifier of these referrals."""
    from sandbox_ehr.store import get_store

    wanted = {f"{rid}.{kind.lower()}" for rid in referral_ids}
    counts: Counter = Counter()
    with sandbox.app.app_context():
        for res in get_store(sandbox.app).search(kind):
            idents = res.get("identifier")
            for ident in idents if isinstance(idents, list) else [idents] if idents else []:
                if ident.get("system") == IDENT_SYSTEM and ident.get("value") in wanted:
                    counts[ident["value"]] += 1
    return counts


def launches(app, sandbox) -> list[tuple[str, str, str]]:
    out = []
    for patient, encounter in PATIENTS:
        lid = add_launch(app, sandbox.iss, sandbox_token(sandbox, patient, encounter), patient=patient,
                         encounter=encounter)
        out.append((lid, patient, encounter))
    return out


def enqueue_many(app, sandbox, n: int, profile: EhrProfile, resources=None) -> set[str]:
    ls = launches(app, sandbox)
    ids = set()
    for i in range(n):
        lid, patient, encounter = ls[i % len(ls)]
        ids.add(add_referral(app, lid, sandbox.iss, profile, patient=patient, encounter=encounter,
                             resources=resources))
    return ids


def all_rows(app) -> list[OutboxItem]:
    with app.app_context(), session_scope(app) as db:
        return list(db.scalars(select(OutboxItem)))


def drain_parallel(app, workers: int, timeout: float, max_seconds: float = 600) -> None:
    ws = [OutboxWorker(app, timeout=timeout) for _ in range(workers)]
    threads = [threading.Thread(target=w.drain, kwargs={"max_seconds": max_seconds}) for w in ws]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_500_referrals_with_30_percent_failures_end_with_exactly_500_notes(app, sandbox, faults):
    replace_settings(app, OUTBOX_MAX_ATTEMPTS=25)  # 30% failure on every call, reads too: plenty of room
    profile = EhrProfile.load("sandbox")
    referrals = enqueue_many(app, sandbox, 500, profile)
    faults(error_rate=0.2, statuses=[500, 502, 503, 429], timeout_rate=0.05, timeout_seconds=0.6,
           fail_after_commit_rate=0.1, seed=500)
    drain_parallel(app, workers=4, timeout=0.3)
    hit = injected(sandbox)
    faults()  # healthy again for the checks below
    assert hit["errors"] > 100 and hit["timeouts"] > 20 and hit["failed_after_commit"] > 50
    rows = all_rows(app)
    assert len(rows) == 1500
    assert Counter(r.status for r in rows) == {"written": 1500}
    docs = stored(sandbox, "DocumentReference", referrals)
    assert len(docs) == 500 and set(docs.values()) == {1}  # none lost, none duplicated
    for kind in ("ServiceRequest", "Observation"):
        counts = stored(sandbox, kind, referrals)
        assert len(counts) == 500 and set(counts.values()) == {1}
    assert {r.label_status for r in rows} == {"ok"}
    assert max(r.attempts for r in rows) > 1  # retries really happened


def test_ehr_down_for_a_while_then_back(app, sandbox, faults):
    profile = EhrProfile.load("sandbox")
    referrals = enqueue_many(app, sandbox, 6, profile, resources=["DocumentReference"])
    faults(down=True)
    worker = OutboxWorker(app, timeout=10)  # the test is about "down, then back", not slow answers
    for _ in range(3):
        worker.run_once()
    rows = all_rows(app)
    assert {r.status for r in rows} == {"pending"} and all(r.last_error == "HTTP 503: transient" for r in rows)
    assert stored(sandbox, "DocumentReference", referrals) == Counter()
    faults()  # back up
    worker.drain()
    assert {r.status for r in all_rows(app)} == {"written"}
    docs = stored(sandbox, "DocumentReference", referrals)
    assert len(docs) == 6 and set(docs.values()) == {1}


def test_dropped_labels_are_detected(app, sandbox, faults):
    referrals = enqueue_many(app, sandbox, 2, EhrProfile.load("sandbox"))
    faults(drop_security_labels=True)
    stats = OutboxWorker(app, timeout=2).drain()
    assert stats.label_flags == 6
    rows = all_rows(app)
    assert {r.label_status for r in rows} == {"flagged"} and len(stored(sandbox, "DocumentReference", referrals)) == 2


def test_transaction_profile_writes_each_referral_in_one_bundle(app, sandbox, faults):
    # 30 % injected failures on every write: room for retries, and a timeout long enough that a slow answer on a
    # loaded machine is not one more failure (a clean-clone run ran a row out of tries that way).
    replace_settings(app, OUTBOX_MAX_ATTEMPTS=25)
    profile = EhrProfile.load("generic-smart2")
    referrals = enqueue_many(app, sandbox, 20, profile)
    faults(error_rate=0.3, statuses=[500, 503], fail_after_commit_rate=0.1, seed=11, apply_to="writes")
    drain_parallel(app, workers=2, timeout=10)
    faults()
    assert {r.status for r in all_rows(app)} == {"written"}
    for kind in ("DocumentReference", "ServiceRequest", "Observation"):
        counts = stored(sandbox, kind, referrals)
        assert len(counts) == 20 and set(counts.values()) == {1}


def test_transaction_answer_with_the_resources_verifies_labels_without_a_read_back(app, sandbox):
    # The sandbox answers a transaction with each stored resource (Prefer: return=representation): the labels
    # are judged from that answer, so the referral costs the one transaction call (issue 14's floor).
    from sandbox_ehr.fhir_api import calls

    referrals = enqueue_many(app, sandbox, 2, EhrProfile.load("generic-smart2"))
    before = len(calls(sandbox.app))
    OutboxWorker(app, timeout=10).drain()
    sent = [c for c in calls(sandbox.app)[before:] if c["method"] != "GET" or "/metadata" not in c["path"]]
    assert {r.label_status for r in all_rows(app)} == {"ok"} and len(referrals) == 2
    assert [c["method"] for c in sent] == ["POST", "POST"]


def counting_workers(app, sandbox, n: int) -> tuple[list[OutboxWorker], Counter]:
    """Workers whose FHIR clients count every create per business identifier."""
    sends: Counter = Counter()
    lock = threading.Lock()
    tokens = {}

    def client_for(row):
        if row.launch_id not in tokens:
            with app.app_context(), session_scope(app) as db:
                from smart_app.store.crypto import decrypt_json
                from smart_app.store.models import LaunchRecord
                tokens[row.launch_id] = decrypt_json(db.get(LaunchRecord, row.launch_id).tokens_enc)["access_token"]
        # A generous timeout: this test is about claiming (two workers never send one row), and under a loaded
        # machine a 5 s timeout made the outbox retry a slow create, which counted as a second send.
        client = FhirClient(row.iss, tokens[row.launch_id], timeout=60)
        create = client.create

        def counted(resource, if_none_exist=None):
            with lock:
                sends[if_none_exist] += 1
            return create(resource, if_none_exist=if_none_exist)

        client.create = counted
        return client

    return [OutboxWorker(app, client_for=client_for) for _ in range(n)], sends


def _parallel_no_double_send(app, sandbox) -> None:
    replace_settings(app, OUTBOX_BATCH_SIZE=5)
    referrals = enqueue_many(app, sandbox, 40, EhrProfile.load("sandbox"))
    workers, sends = counting_workers(app, sandbox, 2)
    threads = [threading.Thread(target=w.drain, kwargs={"max_seconds": 300}) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status for r in all_rows(app)} == {"written"}
    assert len(sends) == 120 and set(sends.values()) == {1}  # every row sent exactly once
    assert len(stored(sandbox, "DocumentReference", referrals)) == 40


def test_two_workers_on_sqlite_never_send_the_same_row_twice(app, sandbox):
    _parallel_no_double_send(app, sandbox)


def test_two_workers_on_postgresql_never_send_the_same_row_twice(postgres_url, sandbox):
    from smart_app import create_app
    from tests.conftest import app_config
    from tests.writeback.conftest import FAST

    app = create_app(app_config(postgres_url, **FAST))
    try:
        _parallel_no_double_send(app, sandbox)
    finally:
        app.extensions["db_engine"].dispose()


def test_a_send_slower_than_the_workers_timeout_is_not_reclaimed_while_in_flight(app, sandbox):
    # The lease renewed before a send covers the timeout of the client actually used: a client allowed 3 s on a
    # worker configured for 0.1 s keeps its row while the EHR takes 2 s to answer; the second worker, trying
    # after the worker-sized lease (1.2 s) has passed, claims nothing and sends nothing.
    replace_settings(app, outbox_lease_seconds=0.5, http_timeout_seconds=0.1)
    enqueue_many(app, sandbox, 1, EhrProfile.load("sandbox"), resources=["DocumentReference"])
    workers, sends = counting_workers(app, sandbox, 2)
    sending, slow_create = threading.Event(), workers[0]._client_for

    def slow_client_for(row):
        client = slow_create(row)
        client.timeout = 3.0
        create = client.create

        def slow(resource, if_none_exist=None):
            sending.set()
            threading.Event().wait(2.0)  # the EHR is slow to answer, within this client's timeout
            return create(resource, if_none_exist=if_none_exist)

        client.create = slow
        return client

    workers[0]._client_for = slow_client_for
    first = threading.Thread(target=workers[0].run_once)
    first.start()
    assert sending.wait(30)
    threading.Event().wait(1.5)  # past a lease sized by the worker's 0.1 s timeout
    second = workers[1].run_once()
    first.join()
    assert second.claimed == 0
    assert list(sends.values()) == [1]
    assert {r.status for r in all_rows(app)} == {"written"}


def test_consent_writes_to_the_live_sandbox_and_confirms(app, sandbox, make_launch):
    client = app.test_client()
    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "id": "pat-joana"}
    ctx["encounter"] = {**ctx["encounter"], "id": "enc-joana-chelsea"}
    lid = make_launch(client, context=ctx, iss=sandbox.iss, data={"screening": SCREENING, "referral": REFERRAL})
    set_tokens(app, lid, {"access_token": sandbox_token(sandbox, "pat-joana", "enc-joana-chelsea"),
                          "token_type": "Bearer"})
    resp = consent(client, lid, channel="none", resources=["Observation", "ServiceRequest"])
    assert resp.status_code == 302
    OutboxWorker(app, timeout=5).drain()  # the worker sends; the consent request did not
    page = client.get(f"/l/{lid}/consent/done").get_data(as_text=True)
    assert "Everything was written to the chart." in page
    assert page.count('data-state="written"') == 3 and page.count("Verified") == 3
    rows = {r.kind: r for r in all_rows(app)}
    fhir = FhirClient(sandbox.iss, sandbox_token(sandbox, "pat-joana"))
    doc = fhir.read("DocumentReference", rows["DocumentReference"].server_id)
    assert doc["type"]["coding"][0]["code"] == "57133-1"
    assert {c["code"] for c in doc["meta"]["security"]} >= {"R", "SDV", "NOPAT"}
    assert doc["context"]["encounter"] == [{"reference": "Encounter/enc-joana-chelsea"}]
    text = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    assert "Do not contact the patient" in text and "HITS" not in text and "14" not in text
    sr = fhir.read("ServiceRequest", rows["ServiceRequest"].server_id)
    assert sr["orderDetail"][0]["coding"][0]["code"] == "contacting-subject-prohibited"


def test_consent_with_labels_dropped_warns_the_clinician(app, sandbox, make_launch, faults):
    client = app.test_client()
    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "id": "pat-alice"}
    lid = make_launch(client, context=ctx, iss=sandbox.iss, data={"screening": SCREENING, "referral": REFERRAL})
    set_tokens(app, lid, {"access_token": sandbox_token(sandbox, "pat-alice"), "token_type": "Bearer"})
    faults(drop_security_labels=True)
    consent(client, lid, channel="none")
    OutboxWorker(app, timeout=5).drain()
    page = client.get(f"/l/{lid}/consent/done").get_data(as_text=True)
    assert 'data-testid="label-alert" >' in page and "Not kept by the EHR" in page


def test_token_rejected_by_the_ehr_without_refresh_fails_plainly(app, sandbox):
    token = sandbox_token(sandbox, "pat-alice", lifetime=0)  # already expired at the EHR; the app cannot know
    lid = add_launch(app, sandbox.iss, token, patient="pat-alice")
    referrals = {add_referral(app, lid, sandbox.iss, EhrProfile.load("sandbox"), patient="pat-alice",
                              resources=["DocumentReference"])}
    OutboxWorker(app, timeout=2).drain()
    (row,) = all_rows(app)
    assert row.status == "failed"
    assert row.last_error == "the EHR no longer accepts the visit's sign-in; nothing was written"
    assert stored(sandbox, "DocumentReference", referrals) == Counter()


def test_cli_run_once_drains_the_outbox(app, sandbox):
    referrals = enqueue_many(app, sandbox, 3, EhrProfile.load("sandbox"), resources=["DocumentReference"])
    result = app.test_cli_runner().invoke(args=["outbox-run-once", "--drain", "--max-seconds", "60"])
    assert result.exit_code == 0 and "written=3" in result.output
    assert len(stored(sandbox, "DocumentReference", referrals)) == 3
