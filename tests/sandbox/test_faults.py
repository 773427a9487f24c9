"""Fault injection knobs of the sandbox (/__faults)."""

from __future__ import annotations

import json

import pytest
import requests

from sandbox_ehr import authstore
from sandbox_ehr.app import create_sandbox_app
from sandbox_ehr.harness.live import LiveServer

FHIR_JSON = "application/fhir+json"
OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "test"},
       "identifier": [{"system": "urn:test:obs", "value": "F1"}],
       "subject": {"reference": "Patient/pat-alice"}}


def _faults(fhir, **settings):
    r = fhir.post("/__faults", json=settings)
    assert r.status_code == 200, r.json
    return r.json


def _create(fhir, auth, body=OBS, **headers):
    return fhir.post("/fhir/Observation", data=json.dumps(body),
                     headers={**auth, "Content-Type": FHIR_JSON, **headers})


def test_get_shows_defaults_post_sets_delete_resets(fhir):
    shown = fhir.get("/__faults").json
    assert shown["config"]["error_rate"] == 0 and shown["config"]["down"] is False
    _faults(fhir, error_rate=0.25, statuses=[503], seed=7)
    config = fhir.get("/__faults").json["config"]
    assert (config["error_rate"], config["statuses"], config["seed"]) == (0.25, [503], 7)
    assert fhir.delete("/__faults").json["config"]["error_rate"] == 0


@pytest.mark.parametrize("settings", [
    {"error_rate": 1.5}, {"error_rate": "high"}, {"statuses": [200]}, {"statuses": []}, {"apply_to": "reads"},
    {"nonsense": 1}, {"down": "yes"}, {"seed": 1.5}, {"timeout_seconds": -1}, {"timeout_action": "hang"},
])
def test_bad_settings_are_rejected(fhir, settings):
    r = fhir.post("/__faults", json=settings)
    assert r.status_code == 400
    assert r.json["error"]


def test_down_answers_503_for_every_fhir_call(fhir, auth):
    _faults(fhir, down=True)
    assert fhir.get("/fhir/Patient/pat-alice", headers=auth).status_code == 503
    r = fhir.get("/fhir/metadata")
    assert r.status_code == 503
    assert r.json["resourceType"] == "OperationOutcome"
    fhir.delete("/__faults")
    assert fhir.get("/fhir/Patient/pat-alice", headers=auth).status_code == 200


def test_error_rate_uses_the_listed_statuses(fhir, auth):
    _faults(fhir, error_rate=1, statuses=[502])
    r = fhir.get("/fhir/Patient/pat-alice", headers=auth)
    assert r.status_code == 502
    assert r.json["resourceType"] == "OperationOutcome"
    assert fhir.get("/__faults").json["injected"]["errors"] == 1


def test_429_carries_retry_after_0_or_1(fhir, auth):
    _faults(fhir, error_rate=1, statuses=[429], seed=3)
    seen = set()
    for _ in range(10):
        r = fhir.get("/fhir/Patient/pat-alice", headers=auth)
        assert r.status_code == 429
        seen.add(r.headers["Retry-After"])
    assert seen <= {"0", "1"} and seen


def test_seed_makes_a_run_reproducible(fhir, auth):
    def run() -> list[int]:
        _faults(fhir, error_rate=0.5, statuses=[500, 503], seed=42)
        return [fhir.get("/fhir/Patient/pat-alice", headers=auth).status_code for _ in range(30)]

    first = run()
    assert first == run()
    assert {200, 500, 503} <= set(first)


def test_apply_to_writes_leaves_reads_alone(fhir, auth):
    _faults(fhir, error_rate=1, statuses=[500], apply_to="writes")
    assert fhir.get("/fhir/Patient/pat-alice", headers=auth).status_code == 200
    assert fhir.post("/fhir/Patient/_search", data={"_id": "pat-alice"}, headers=auth).status_code == 200
    reads = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": "Patient/pat-alice"}}]}
    assert fhir.post("/fhir/", json=reads, headers=auth).status_code == 200  # a batch of reads is a read
    assert _create(fhir, auth).status_code == 500
    writes = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "POST", "url": "Observation"}, "resource": OBS}]}
    assert fhir.post("/fhir/", json=writes, headers=auth).status_code == 500
    fhir.delete("/__faults")
    assert fhir.get("/fhir/Observation", headers=auth).json["total"] == 0


def test_timeout_answers_504(fhir, auth):
    _faults(fhir, timeout_rate=1, timeout_seconds=0)
    r = fhir.get("/fhir/Patient/pat-alice", headers=auth)
    assert r.status_code == 504
    assert fhir.get("/__faults").json["injected"]["timeouts"] == 1


def test_timeout_drop_closes_the_connection(tmp_path):
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "s.db")})
    server = LiveServer(app).start()
    try:
        with app.app_context():
            token = authstore.issue_access_token("t", "user/*.rs")
        requests.post(server.url + "/__faults", json={"timeout_rate": 1, "timeout_seconds": 0,
                                                      "timeout_action": "drop"}, timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/fhir/Patient/pat-alice", headers={"Authorization": f"Bearer {token}"},
                         timeout=5)
    finally:
        server.stop()
        app.extensions["sandbox_store"].close()


def test_fail_after_commit_stores_the_write_but_answers_500(fhir, auth):
    _faults(fhir, fail_after_commit_rate=1)
    assert fhir.get("/fhir/Patient/pat-alice", headers=auth).status_code == 200  # reads are not writes
    r = _create(fhir, auth, **{"If-None-Exist": "identifier=urn:test:obs|F1"})
    assert r.status_code == 500
    assert r.json["resourceType"] == "OperationOutcome"
    fhir.delete("/__faults")
    assert fhir.get("/fhir/Observation", headers=auth).json["total"] == 1  # committed
    # An idempotent retry (conditional create) finds the committed resource instead of duplicating it.
    retry = _create(fhir, auth, **{"If-None-Exist": "identifier=urn:test:obs|F1"})
    assert retry.status_code == 200
    assert fhir.get("/fhir/Observation", headers=auth).json["total"] == 1


def test_drop_security_labels_strips_meta_security(fhir, auth):
    label = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    body = {**OBS, "meta": {"security": [label], "tag": [{"system": "urn:test", "code": "t"}]}}
    _faults(fhir, drop_security_labels=True)
    created = _create(fhir, auth, body).json
    stored = fhir.get(f"/fhir/Observation/{created['id']}", headers=auth).json
    assert "security" not in stored["meta"]
    assert stored["meta"]["tag"] == body["meta"]["tag"]
    fhir.delete("/__faults")
    kept = _create(fhir, auth, body).json
    assert fhir.get(f"/fhir/Observation/{kept['id']}", headers=auth).json["meta"]["security"] == [label]


def test_faults_can_be_disabled(tmp_path):
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "s.db"), "SANDBOX_FAULTS": False})
    client = app.test_client()
    assert client.post("/__faults", json={"down": True}).status_code == 404
    assert client.get("/fhir/metadata").status_code == 200
    app.extensions["sandbox_store"].close()
