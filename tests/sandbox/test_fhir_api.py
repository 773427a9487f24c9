"""Sandbox FHIR REST API through the Flask test client: CRUD, search, conditional create, bundles, auth."""

from __future__ import annotations

import json

import pytest

FHIR_JSON = "application/fhir+json"


def _obs(patient: str = "pat-alice", code: str = "76499-3", ident: str | None = None, **extra) -> dict:
    resource = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-03-04T10:00:00Z",
    }
    if ident:
        resource["identifier"] = [{"system": "urn:test:obs", "value": ident}]
    resource.update(extra)
    return resource


def _post(fhir, path, body, headers, **more):
    return fhir.post(path, data=json.dumps(body), headers={**headers, "Content-Type": FHIR_JSON, **more})


def _put(fhir, path, body, headers, **more):
    return fhir.put(path, data=json.dumps(body), headers={**headers, "Content-Type": FHIR_JSON, **more})


def _ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


# --- metadata ----------------------------------------------------------------------------------------------

def test_metadata_is_public_and_names_smart_oauth_uris(fhir):
    r = fhir.get("/fhir/metadata")
    assert r.status_code == 200
    assert r.content_type.startswith(FHIR_JSON)
    cap = r.json
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    security = cap["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    ext = security["extension"][0]
    assert ext["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris == {"authorize": "http://ehr.test/auth/authorize", "token": "http://ehr.test/auth/token"}


def test_capability_statement_is_valid_r4b(fhir):
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    CapabilityStatement.model_validate(fhir.get("/fhir/metadata").json)


# --- read / vread / history --------------------------------------------------------------------------------

def test_read_returns_resource_with_etag_and_last_modified(fhir, auth):
    r = fhir.get("/fhir/Patient/pat-alice", headers=auth)
    assert r.status_code == 200
    assert r.json["id"] == "pat-alice"
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Last-Modified"].endswith("GMT")
    assert r.headers["Cache-Control"] == "no-store"


def test_head_answers_headers_only(fhir, auth):
    r = fhir.head("/fhir/Patient/pat-alice", headers=auth)
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"1"' and r.data == b""


def test_read_unknown_is_404_operation_outcome(fhir, auth):
    r = fhir.get("/fhir/Patient/nobody", headers=auth)
    assert r.status_code == 404
    assert r.json["resourceType"] == "OperationOutcome"
    assert r.json["issue"][0]["code"] == "not-found"


def test_unknown_resource_type_is_404(fhir, auth):
    r = fhir.get("/fhir/Banana/1", headers=auth)
    assert r.status_code == 404
    assert r.json["resourceType"] == "OperationOutcome"


def test_update_versions_and_vread_history(fhir, auth):
    patient = fhir.get("/fhir/Patient/pat-alice", headers=auth).json
    patient["gender"] = "other"
    r = _put(fhir, "/fhir/Patient/pat-alice", patient, auth)
    assert r.status_code == 200
    assert r.json["meta"]["versionId"] == "2"
    assert r.headers["ETag"] == 'W/"2"'
    assert r.headers["Location"].endswith("/fhir/Patient/pat-alice/_history/2")
    old = fhir.get("/fhir/Patient/pat-alice/_history/1", headers=auth)
    assert old.status_code == 200 and old.json["gender"] != "other"
    hist = fhir.get("/fhir/Patient/pat-alice/_history", headers=auth).json
    assert hist["type"] == "history" and hist["total"] == 2


def test_update_with_stale_if_match_is_412(fhir, auth):
    patient = fhir.get("/fhir/Patient/pat-alice", headers=auth).json
    assert _put(fhir, "/fhir/Patient/pat-alice", patient, auth, **{"If-Match": 'W/"1"'}).status_code == 200
    r = _put(fhir, "/fhir/Patient/pat-alice", patient, auth, **{"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert r.json["resourceType"] == "OperationOutcome"


def test_update_id_must_match_url(fhir, auth):
    patient = fhir.get("/fhir/Patient/pat-alice", headers=auth).json
    r = _put(fhir, "/fhir/Patient/pat-carmen", patient, auth)
    assert r.status_code == 400
    assert r.json["resourceType"] == "OperationOutcome"


def test_update_as_create_returns_201(fhir, auth):
    r = _put(fhir, "/fhir/Observation/obs-new", {**_obs(), "id": "obs-new"}, auth)
    assert r.status_code == 201
    assert fhir.get("/fhir/Observation/obs-new", headers=auth).status_code == 200


def test_delete_then_read_is_410(fhir, auth):
    created = _post(fhir, "/fhir/Observation", _obs(), auth).json
    r = fhir.delete(f"/fhir/Observation/{created['id']}", headers=auth)
    assert r.status_code == 204
    assert fhir.get(f"/fhir/Observation/{created['id']}", headers=auth).status_code == 410


# --- create ------------------------------------------------------------------------------------------------

def test_create_returns_201_location_and_representation(fhir, auth):
    body = {**_obs(), "id": "client-chosen"}
    r = _post(fhir, "/fhir/Observation", body, auth)
    assert r.status_code == 201
    created = r.json
    assert created["id"] != "client-chosen"  # the server assigns ids on create
    assert r.headers["Location"] == f"http://ehr.test/fhir/Observation/{created['id']}/_history/1"
    assert r.headers["ETag"] == 'W/"1"'
    assert fhir.get(f"/fhir/Observation/{created['id']}", headers=auth).json["code"] == body["code"]


def test_create_prefer_minimal_has_no_body(fhir, auth):
    r = _post(fhir, "/fhir/Observation", _obs(), auth, Prefer="return=minimal")
    assert r.status_code == 201
    assert r.data == b""
    assert "/fhir/Observation/" in r.headers["Location"]


def test_create_prefer_operation_outcome(fhir, auth):
    r = _post(fhir, "/fhir/Observation", _obs(), auth, Prefer="return=OperationOutcome")
    assert r.status_code == 201
    assert r.json["resourceType"] == "OperationOutcome"


def test_create_keeps_security_labels(fhir, auth):
    label = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    created = _post(fhir, "/fhir/Observation", {**_obs(), "meta": {"security": [label]}}, auth).json
    read = fhir.get(f"/fhir/Observation/{created['id']}", headers=auth).json
    assert read["meta"]["security"] == [label]


@pytest.mark.parametrize("body, message", [
    ({"resourceType": "Observation", "status": "final"}, "code"),  # required element missing
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "bogus": 1}, "bogus"),
    ({"resourceType": "Patient"}, "does not match"),
])
def test_invalid_resource_is_rejected_with_operation_outcome(fhir, auth, body, message):
    r = _post(fhir, "/fhir/Observation", body, auth)
    assert r.status_code in (400, 422)
    assert r.json["resourceType"] == "OperationOutcome"
    assert message in r.json["issue"][0]["diagnostics"]
    assert fhir.get("/fhir/Observation", headers=auth).json["total"] == 0


def test_non_json_body_is_400(fhir, auth):
    r = fhir.post("/fhir/Observation", data="not json", headers={**auth, "Content-Type": FHIR_JSON})
    assert r.status_code == 400
    assert r.json["resourceType"] == "OperationOutcome"


def test_conditional_create_zero_one_many(fhir, auth):
    cond = {"If-None-Exist": "identifier=urn:test:obs|A1"}
    first = _post(fhir, "/fhir/Observation", _obs(ident="A1"), auth, **cond)
    assert first.status_code == 201
    again = _post(fhir, "/fhir/Observation", _obs(ident="A1"), auth, **cond)
    assert again.status_code == 200
    assert again.json["id"] == first.json["id"]
    assert fhir.get("/fhir/Observation?identifier=urn:test:obs|A1", headers=auth).json["total"] == 1
    # Two resources share an identifier -> the condition is ambiguous -> 412.
    _post(fhir, "/fhir/Observation", _obs(ident="A1"), auth)
    many = _post(fhir, "/fhir/Observation", _obs(ident="A1"), auth, **cond)
    assert many.status_code == 412
    assert many.json["resourceType"] == "OperationOutcome"


# --- search ------------------------------------------------------------------------------------------------

def test_search_returns_searchset_bundle(fhir, auth):
    r = fhir.get("/fhir/Patient", headers=auth)
    assert r.status_code == 200
    bundle = r.json
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] >= 12
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"http://ehr.test/fhir/Patient/{entry['resource']['id']}"
    assert entry["search"]["mode"] == "match"


@pytest.mark.parametrize("query, expected", [
    ("/fhir/Patient?_id=pat-alice,pat-carmen", {"pat-alice", "pat-carmen"}),
    ("/fhir/Patient?identifier=SBX-1003", {"pat-joana"}),
    ("/fhir/Encounter?patient=pat-lucia", {"enc-lucia-mgh", "enc-lucia-bwh"}),
    ("/fhir/Encounter?subject=Patient/pat-lucia&status=finished", {"enc-lucia-mgh"}),
    ("/fhir/PractitionerRole?practitioner=Practitioner/prac-devon", {"role-devon-bwh"}),
    ("/fhir/PractitionerRole?role=http://snomed.info/sct|106328005",
     {"role-devon-bwh", "role-emery-mgh", "role-harper-bwh", "role-jules-bwh-ed"}),
    ("/fhir/Location?identifier=urn:ipv-sandbox:site|mgh-chelsea", {"loc-mgh-chelsea"}),
])
def test_search_parameters(fhir, auth, query, expected):
    r = fhir.get(query, headers=auth)
    assert r.status_code == 200, r.json
    assert set(_ids(r.json)) == expected


def test_search_by_encounter_code_and_date(fhir, auth):
    _post(fhir, "/fhir/Observation", _obs(code="111", encounter={"reference": "Encounter/enc-alice-bwh"}), auth)
    _post(fhir, "/fhir/Observation", _obs(code="222", effectiveDateTime="2025-01-01T00:00:00Z"), auth)
    by_enc = fhir.get("/fhir/Observation?encounter=enc-alice-bwh", headers=auth).json
    assert by_enc["total"] == 1
    assert fhir.get("/fhir/Observation?code=http://loinc.org|222", headers=auth).json["total"] == 1
    assert fhir.get("/fhir/Observation?date=ge2026-01-01", headers=auth).json["total"] == 1
    assert fhir.get("/fhir/Observation?date=lt2026-01-01", headers=auth).json["total"] == 1


def test_search_count_pages_with_next_link(fhir, auth):
    first = fhir.get("/fhir/Patient?_count=5&_sort=_id", headers=auth).json
    assert len(_ids(first)) == 5 and first["total"] >= 12
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = fhir.get(nxt.replace("http://ehr.test", ""), headers=auth).json
    assert len(_ids(second)) == 5
    assert not set(_ids(first)) & set(_ids(second))
    assert _ids(first) == sorted(_ids(first))


def test_search_sort_descending(fhir, auth):
    ids = _ids(fhir.get("/fhir/Patient?_sort=-_id", headers=auth).json)
    assert ids == sorted(ids, reverse=True)


def test_search_unknown_parameter_is_reported_and_strict_rejects(fhir, auth):
    lenient = fhir.get("/fhir/Patient?shoe-size=9", headers=auth).json
    outcomes = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcomes and "shoe-size" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    assert "shoe-size" not in lenient["link"][0]["url"]
    strict = fhir.get("/fhir/Patient?shoe-size=9", headers={**auth, "Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_post_search(fhir, auth):
    r = fhir.post("/fhir/Patient/_search", data={"_id": "pat-kim"}, headers=auth)
    assert r.status_code == 200
    assert _ids(r.json) == ["pat-kim"]


# --- batch and transaction ---------------------------------------------------------------------------------

def _bundle(kind: str, entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_batch_reads_with_per_entry_status(fhir, auth):
    bundle = _bundle("batch", [
        {"request": {"method": "GET", "url": "Patient/pat-alice"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}},
        {"request": {"method": "GET", "url": "PractitionerRole?practitioner=Practitioner/prac-devon"}},
        {"resource": _obs(), "request": {"method": "POST", "url": "Observation"}},
    ])
    r = _post(fhir, "/fhir/", bundle, auth)
    assert r.status_code == 200
    out = r.json
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses[0].startswith("200") and statuses[1].startswith("404") and statuses[2].startswith("200")
    assert statuses[3].startswith("201")
    assert out["entry"][0]["resource"]["id"] == "pat-alice"
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert out["entry"][2]["resource"]["type"] == "searchset"


def test_transaction_resolves_urn_uuid_references(fhir, auth):
    urn = "urn:uuid:0b6a4c0e-1111-4a4a-9c9c-000000000001"
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/pat-alice"}, "code": {"text": "Referral"}}
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "focus": {"reference": urn}, "for": {"reference": "Patient/pat-alice"}}
    bundle = _bundle("transaction", [
        {"fullUrl": "urn:uuid:0b6a4c0e-1111-4a4a-9c9c-000000000002", "resource": task,
         "request": {"method": "POST", "url": "Task"}},
        {"fullUrl": urn, "resource": sr, "request": {"method": "POST", "url": "ServiceRequest"}},
    ])
    r = _post(fhir, "/fhir", bundle, auth)
    assert r.status_code == 200, r.json
    out = r.json
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["201", "201"]
    task_out, sr_out = out["entry"][0]["resource"], out["entry"][1]["resource"]
    assert task_out["focus"]["reference"] == f"ServiceRequest/{sr_out['id']}"
    assert fhir.get(f"/fhir/Task/{task_out['id']}", headers=auth).json["focus"]["reference"] == \
        f"ServiceRequest/{sr_out['id']}"


def test_transaction_conditional_create_reuses_existing(fhir, auth):
    entry = {"fullUrl": "urn:uuid:0b6a4c0e-1111-4a4a-9c9c-000000000009", "resource": _obs(ident="T1"),
             "request": {"method": "POST", "url": "Observation", "ifNoneExist": "identifier=urn:test:obs|T1"}}
    first = _post(fhir, "/fhir", _bundle("transaction", [entry]), auth).json
    second = _post(fhir, "/fhir", _bundle("transaction", [entry]), auth).json
    assert first["entry"][0]["response"]["status"].startswith("201")
    assert second["entry"][0]["response"]["status"].startswith("200")
    assert second["entry"][0]["resource"]["id"] == first["entry"][0]["resource"]["id"]


def test_transaction_rolls_back_everything_on_error(fhir, auth):
    bad = {"resourceType": "Observation", "status": "final"}  # code is required
    bundle = _bundle("transaction", [
        {"resource": _obs(ident="R1"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": _obs(ident="R2"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": bad, "request": {"method": "POST", "url": "Observation"}},
    ])
    r = _post(fhir, "/fhir", bundle, auth)
    assert r.status_code == 400
    assert r.json["resourceType"] == "OperationOutcome"
    assert "nothing was written" in r.json["issue"][0]["diagnostics"]
    assert fhir.get("/fhir/Observation", headers=auth).json["total"] == 0


def test_transaction_ambiguous_condition_is_412_and_rolls_back(fhir, auth):
    _post(fhir, "/fhir/Observation", _obs(ident="D"), auth)
    _post(fhir, "/fhir/Observation", _obs(ident="D"), auth)
    bundle = _bundle("transaction", [
        {"resource": _obs(ident="new"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": _obs(ident="D"), "request": {"method": "POST", "url": "Observation",
                                                  "ifNoneExist": "identifier=urn:test:obs|D"}},
    ])
    r = _post(fhir, "/fhir", bundle, auth)
    assert r.status_code == 412
    assert fhir.get("/fhir/Observation?identifier=urn:test:obs|new", headers=auth).json["total"] == 0


def test_bundle_must_be_batch_or_transaction(fhir, auth):
    r = _post(fhir, "/fhir", _bundle("collection", []), auth)
    assert r.status_code == 400
    assert r.json["resourceType"] == "OperationOutcome"


# --- authentication and scopes -----------------------------------------------------------------------------

def test_missing_token_is_401_with_operation_outcome(fhir):
    r = fhir.get("/fhir/Patient/pat-alice")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json["resourceType"] == "OperationOutcome"


def test_unknown_or_expired_token_is_401(fhir, token):
    assert fhir.get("/fhir/Patient/pat-alice", headers={"Authorization": "Bearer nope"}).status_code == 401
    expired = token("user/*.cruds", lifetime=-1)
    r = fhir.get("/fhir/Patient/pat-alice", headers=expired)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_discovery_needs_no_token(fhir):
    assert fhir.get("/fhir/.well-known/smart-configuration").status_code == 200


@pytest.mark.parametrize("scope, method, path, expected", [
    ("user/Patient.read", "GET", "/fhir/Patient/pat-alice", 200),  # v1 read
    ("user/Patient.read", "GET", "/fhir/Patient?_id=pat-alice", 200),  # v1 read covers search
    ("user/Patient.r", "GET", "/fhir/Patient/pat-alice", 200),  # v2 read
    ("user/Patient.r", "GET", "/fhir/Patient?_id=pat-alice", 403),  # v2: search needs s
    ("user/Patient.s", "GET", "/fhir/Patient/pat-alice", 403),
    ("user/Encounter.rs", "GET", "/fhir/Patient/pat-alice", 403),  # other type
    ("user/*.rs", "GET", "/fhir/Encounter/enc-alice-bwh", 200),
    ("user/*.rs", "POST", "/fhir/Observation", 403),  # no c
    ("user/Observation.c", "POST", "/fhir/Observation", 201),
    ("user/Observation.write", "POST", "/fhir/Observation", 201),  # v1 write
    ("user/Observation.*", "POST", "/fhir/Observation", 201),
    ("system/Observation.cruds", "POST", "/fhir/Observation", 201),
    ("openid fhirUser", "GET", "/fhir/Patient/pat-alice", 403),
    ("user/Patient.sr", "GET", "/fhir/Patient/pat-alice", 403),  # v2 letters out of order: not a scope
])
def test_scopes(fhir, token, scope, method, path, expected):
    headers = token(scope)
    if method == "GET":
        r = fhir.get(path, headers=headers)
    else:
        r = _post(fhir, path, _obs(), headers)
    assert r.status_code == expected, r.json
    if expected == 403:
        assert r.json["resourceType"] == "OperationOutcome"
        assert r.json["issue"][0]["code"] == "forbidden"


def test_patient_scope_limits_reads_to_the_compartment(fhir, token):
    headers = token("patient/*.rs", patient="pat-alice")
    assert fhir.get("/fhir/Patient/pat-alice", headers=headers).status_code == 200
    assert fhir.get("/fhir/Encounter/enc-alice-bwh", headers=headers).status_code == 200
    other = fhir.get("/fhir/Patient/pat-carmen", headers=headers)
    assert other.status_code == 403 and other.json["resourceType"] == "OperationOutcome"
    assert fhir.get("/fhir/Encounter/enc-carmen-sjphc", headers=headers).status_code == 403
    # Shared resources (locations, organizations, practitioners) stay readable.
    assert fhir.get("/fhir/Location/loc-bwh", headers=headers).status_code == 200
    assert fhir.get("/fhir/Practitioner/prac-avery", headers=headers).status_code == 200


def test_patient_scope_filters_searches(fhir, token):
    headers = token("patient/*.rs", patient="pat-lucia")
    encounters = fhir.get("/fhir/Encounter", headers=headers).json
    assert set(_ids(encounters)) == {"enc-lucia-mgh", "enc-lucia-bwh"}
    assert _ids(fhir.get("/fhir/Patient", headers=headers).json) == ["pat-lucia"]
    r = fhir.get("/fhir/Encounter?patient=pat-alice", headers=headers)
    assert r.status_code == 403


def test_patient_scope_writes_only_into_the_compartment(fhir, token):
    headers = token("patient/Observation.crs", patient="pat-alice")
    assert _post(fhir, "/fhir/Observation", _obs("pat-alice"), headers).status_code == 201
    r = _post(fhir, "/fhir/Observation", _obs("pat-carmen"), headers)
    assert r.status_code == 403
    assert r.json["resourceType"] == "OperationOutcome"


def test_patient_scope_without_patient_context_is_403(fhir, token):
    assert fhir.get("/fhir/Patient/pat-alice", headers=token("patient/*.rs")).status_code == 403


def test_granular_v2_scope_query_restricts(fhir, token, auth):
    lab = _obs(category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}])
    survey = _obs(category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                         "code": "survey"}]}])
    lab_id = _post(fhir, "/fhir/Observation", lab, auth).json["id"]
    survey_id = _post(fhir, "/fhir/Observation", survey, auth).json["id"]
    headers = token("user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category"
                    "|laboratory")
    assert fhir.get(f"/fhir/Observation/{lab_id}", headers=headers).status_code == 200
    assert fhir.get(f"/fhir/Observation/{survey_id}", headers=headers).status_code == 403
    assert _ids(fhir.get("/fhir/Observation", headers=headers).json) == [lab_id]


def test_transaction_with_forbidden_entry_writes_nothing(fhir, token, auth):
    headers = token("patient/Observation.crs", patient="pat-alice")
    bundle = _bundle("transaction", [
        {"resource": _obs("pat-alice", ident="X1"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": _obs("pat-carmen", ident="X2"), "request": {"method": "POST", "url": "Observation"}},
    ])
    r = _post(fhir, "/fhir", bundle, headers)
    assert r.status_code == 403
    assert fhir.get("/fhir/Observation", headers=auth).json["total"] == 0


def test_racing_conditional_creates_store_one_resource(tmp_path):
    """Ten clients create the same business identifier at once over real HTTP: one 201, nine 200, one stored."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from sandbox_ehr import authstore
    from sandbox_ehr.app import create_sandbox_app
    from sandbox_ehr.harness.live import LiveServer

    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "s.db"), "SANDBOX_FAULTS": False})
    server = LiveServer(app).start()
    try:
        with app.app_context():
            token = authstore.issue_access_token("t", "user/*.cruds")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON,
                   "If-None-Exist": "identifier=urn:test:obs|RACE"}

        def post(_):
            return requests.post(server.url + "/fhir/Observation", data=json.dumps(_obs(ident="RACE")),
                                 headers=headers, timeout=30)

        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(post, range(10)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 9 + [201]
        assert len({r.json()["id"] for r in responses}) == 1
        found = requests.get(server.url + "/fhir/Observation?identifier=urn:test:obs|RACE",
                             headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert found["total"] == 1
    finally:
        server.stop()


def test_search_include_returns_the_encounters_location_and_organization(fhir, token):
    """_include (FHIR R4 search 3.1.1.5.5): the generic personality returns the referenced resources once,
    marked search.mode = include, only where the token may read them; the launch reads the visit in one round."""
    url = "/fhir/Encounter?_id=enc-alice-bwh&_include=Encounter:location&_include=Encounter:service-provider"
    bundle = fhir.get(url, headers=token("user/*.rs")).get_json()
    modes = sorted((e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"])
    assert modes == [("Encounter", "match"), ("Location", "include"), ("Organization", "include")]
    assert bundle["total"] == 1  # included resources are not matches
    narrow = fhir.get(url, headers=token("user/Encounter.rs user/Location.rs")).get_json()
    assert sorted(e["resource"]["resourceType"] for e in narrow["entry"]) == ["Encounter", "Location"]


@pytest.mark.vendor
@pytest.mark.parametrize("personality", ["epic", "oracle"])
def test_vendors_ignore_search_include_and_say_so(tmp_path, personality):
    """Neither vendor documents _include on these searches: the strict sandbox ignores it and reports it."""
    from sandbox_ehr import authstore
    from sandbox_ehr.app import create_sandbox_app

    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "s.db"), "SANDBOX_BASE_URL": "http://e.test",
                              "SANDBOX_PERSONALITY": personality})
    with app.app_context():
        tok = authstore.issue_access_token("test-client", "user/Encounter.read user/Location.read")
    bundle = app.test_client().get("/fhir/Encounter?_id=enc-alice-bwh&_include=Encounter:location",
                                   headers={"Authorization": "Bearer " + tok}).get_json()
    kinds = [(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]]
    assert ("Location", "include") not in kinds
    assert ("Encounter", "match") in kinds and ("OperationOutcome", "outcome") in kinds
    app.extensions["sandbox_store"].close()
