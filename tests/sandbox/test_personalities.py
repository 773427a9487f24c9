"""The sandbox EHR's vendor personalities (sandbox_ehr/personalities/*.yaml), at the FHIR API as a client meets
them: what each accepts, rejects (status + OperationOutcome), silently drops, and how it answers."""

from __future__ import annotations

import base64
import json

import pytest

from sandbox_ehr import authstore
from sandbox_ehr.app import create_sandbox_app
from sandbox_ehr.personality import PersonalityError, load

pytestmark = pytest.mark.vendor

NOTE = "Confidential referral to support services.\nRef: K7Q2"
LABELS = [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
          {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "SDV"}]
IDENT = [{"system": "urn:ipv-screen:writeback", "value": "ref-1.documentreference"}]


def make(tmp_path, personality: str, **config):
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / f"{personality}.db"),
                              "SANDBOX_BASE_URL": "http://ehr.test", "SANDBOX_PERSONALITY": personality, **config})
    return app


def bearer(app, scope: str, patient: str | None = "pat-alice", user: str | None = "Practitioner/prac-avery") -> dict:
    with app.app_context():
        return {"Authorization": "Bearer " + authstore.issue_access_token(
            "ipv-screen-jwt", scope, patient=patient, fhir_user=user)}


def note(content_type="text/plain", encounter="enc-alice-bwh", type_code=("http://loinc.org", "11506-3"),
         author="Practitioner/prac-avery", period=True, **over) -> dict:
    doc = {
        "resourceType": "DocumentReference", "status": "current", "docStatus": "final",
        "meta": {"security": LABELS}, "identifier": IDENT,
        "type": {"coding": [{"system": type_code[0], "code": type_code[1]}]},
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                                  "code": "clinical-note"}]}],
        "subject": {"reference": "Patient/pat-alice"},
        "date": "2026-01-05T10:00:00Z",
        "content": [{"attachment": {"contentType": content_type,
                                    "data": base64.b64encode(NOTE.encode()).decode()}}],
        "context": {},
    }
    if author:
        doc["author"] = [{"reference": author}]
    if encounter:
        doc["context"]["encounter"] = [{"reference": f"Encounter/{encounter}"}]
    if period:
        doc["context"]["period"] = {"start": "2026-01-05T09:30:00Z", "end": "2026-01-05T10:00:00Z"}
    if not doc["context"]:
        del doc["context"]
    doc.update(over)
    return doc


def post(client, headers, resource, **extra_headers):
    return client.post(f"/fhir/{resource['resourceType']}", data=json.dumps(resource),
                       headers={**headers, "Content-Type": "application/fhir+json", **extra_headers})


def stored_notes(app) -> list[dict]:
    from sandbox_ehr.store import get_store

    with app.app_context():
        return get_store(app).search("DocumentReference", {"patient": ["pat-alice"]})


def test_unknown_personality_is_a_clear_error(tmp_path):
    with pytest.raises(PersonalityError, match="choose generic, epic, oracle"):
        load("cerner-classic")
    with pytest.raises(PersonalityError):
        make(tmp_path, "nope")


def test_every_rule_cites_a_source_listed_in_its_file():
    for name in ("generic", "epic", "oracle"):
        personality = load(name)
        for rtype, spec in personality.create_rules.items():
            for key in [spec.get("source"), *(r.get("source") for r in spec.get("rules") or [])]:
                assert key in personality.sources, (name, rtype, key)


# --- generic ---------------------------------------------------------------------------------------------------

def test_generic_keeps_everything_and_honours_conditional_create(tmp_path):
    app = make(tmp_path, "generic")
    client = app.test_client()
    auth = bearer(app, "patient/DocumentReference.crs")
    cond = {"If-None-Exist": "identifier=urn:ipv-screen:writeback|ref-1.documentreference"}
    first = post(client, auth, note(), **cond)
    assert first.status_code == 201 and first.json["meta"]["security"] == LABELS
    assert "/_history/1" in first.headers["Location"] and first.headers["ETag"] == 'W/"1"'
    again = post(client, auth, note(), **cond)
    assert again.status_code == 200
    [kept] = stored_notes(app)
    assert kept["identifier"] == IDENT and kept["meta"]["security"] == LABELS
    meta = client.get("/fhir/metadata").json["rest"][0]
    assert meta["resource"][0]["conditionalCreate"] is True
    assert {i["code"] for i in meta["interaction"]} == {"batch", "transaction"}


# --- epic ------------------------------------------------------------------------------------------------------

def test_epic_files_a_signed_note_and_drops_what_it_does_not_read(tmp_path):
    app = make(tmp_path, "epic")
    client = app.test_client()
    auth = bearer(app, "patient/DocumentReference.read patient/DocumentReference.write")
    resp = post(client, auth, note())
    assert resp.status_code == 201 and resp.data == b""  # no Prefer: empty body
    rid = resp.headers["Location"].split("/")[-1]
    assert resp.headers["Location"] == f"DocumentReference/{rid}" and "ETag" not in resp.headers
    [kept] = stored_notes(app)
    assert "identifier" not in kept and "security" not in kept.get("meta", {})
    assert kept["docStatus"] == "final" and kept["context"] == {"encounter": [{"reference": "Encounter/enc-alice-bwh"}]}
    assert base64.b64decode(kept["content"][0]["attachment"]["data"]).decode() == NOTE
    shown = post(client, auth, note(), Prefer="return=representation")
    assert shown.status_code == 201 and shown.json["resourceType"] == "DocumentReference"


def test_epic_ignores_if_none_exist_so_a_replay_files_a_second_note(tmp_path):
    app = make(tmp_path, "epic")
    client = app.test_client()
    auth = bearer(app, "patient/DocumentReference.write")
    cond = {"If-None-Exist": "identifier=urn:ipv-screen:writeback|ref-1.documentreference"}
    assert post(client, auth, note(), **cond).status_code == 201
    assert post(client, auth, note(), **cond).status_code == 201
    assert len(stored_notes(app)) == 2
    meta = client.get("/fhir/metadata").json["rest"][0]
    assert all(r["conditionalCreate"] is False for r in meta["resource"]) and not meta["interaction"]


@pytest.mark.parametrize("bad, needle", [
    ({"encounter": None}, "context.encounter is required"),
    ({"encounter": "enc-carmen-sjphc"}, "belongs to another patient"),
    ({"encounter": "enc-nope"}, "does not exist"),
    ({"content_type": "text/html"}, "contentType"),
    ({"type_code": ("http://loinc.org", "57133-1")}, "not a note type this organisation files"),
    ({"docStatus": "amended"}, "docStatus"),
])
def test_epic_rejects_notes_it_cannot_file(tmp_path, bad, needle):
    app = make(tmp_path, "epic")
    resp = post(app.test_client(), bearer(app, "patient/DocumentReference.write"), note(**bad))
    assert resp.status_code == 400
    assert resp.json["resourceType"] == "OperationOutcome" and needle in resp.json["issue"][0]["diagnostics"]
    assert stored_notes(app) == []


def test_epic_keeps_only_the_first_attachment(tmp_path):
    app = make(tmp_path, "epic")
    doc = note()
    doc["content"].append({"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"second").decode()}})
    assert post(app.test_client(), bearer(app, "patient/DocumentReference.write"), doc).status_code == 201
    [kept] = stored_notes(app)
    assert len(kept["content"]) == 1


def test_epic_unregistered_apis_and_bundles_answer_403_with_an_empty_body(tmp_path):
    app = make(tmp_path, "epic")
    client = app.test_client()
    auth = bearer(app, "patient/*.read patient/*.write")
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/pat-alice"}}
    for resp in (post(client, auth, sr),
                 client.get("/fhir/Observation?patient=pat-alice", headers=auth),
                 client.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": []}),
                             headers={**auth, "Content-Type": "application/fhir+json"})):
        assert resp.status_code == 403 and resp.data == b""
    # What the client has registered still works; the registration can be narrowed per test.
    assert client.get("/fhir/Patient/pat-alice", headers=auth).status_code == 200
    app.config["SANDBOX_REGISTERED_APIS"] = ["DocumentReference.create"]
    assert client.get("/fhir/Patient/pat-alice", headers=auth).data == b""


def test_epic_observation_create_is_vital_signs_only(tmp_path):
    app = make(tmp_path, "epic", SANDBOX_REGISTERED_APIS=["Observation.create"])
    auth = bearer(app, "patient/Observation.write")
    obs = {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/pat-alice"},
           "encounter": {"reference": "Encounter/enc-alice-bwh"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "95614-4"}]}, "valueInteger": 15,
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                     "code": "survey"}]}]}
    resp = post(app.test_client(), auth, obs)
    assert resp.status_code == 400 and "vital-signs" in resp.json["issue"][0]["diagnostics"]


def test_epic_grants_scopes_in_smart_v1_spelling(tmp_path):
    from tests.sandbox.test_auth_server import exchange, get_code

    app = make(tmp_path, "epic")
    client = app.test_client()
    code, verifier, _ = get_code(client, app, scope="launch patient/Patient.rs patient/DocumentReference.crs")
    body = exchange(client, code, verifier).json
    assert body["scope"] == ("launch patient/Patient.read patient/DocumentReference.read "
                             "patient/DocumentReference.write")


# --- oracle ----------------------------------------------------------------------------------------------------

ORACLE_NOTE = {"content_type": "text/plain;charset=utf-8"}


def test_oracle_files_a_provider_note_with_empty_body_and_absolute_location(tmp_path):
    app = make(tmp_path, "oracle")
    client = app.test_client()
    auth = bearer(app, "user/DocumentReference.read user/DocumentReference.write")
    resp = post(client, auth, note(**ORACLE_NOTE), Prefer="return=representation")
    assert resp.status_code == 201 and resp.data == b""
    rid = resp.headers["Location"].rsplit("/", 1)[-1]
    assert resp.headers["Location"] == f"http://ehr.test/fhir/DocumentReference/{rid}"
    assert resp.headers["ETag"] == 'W/"1"'
    [kept] = stored_notes(app)
    # Silently ignored: meta.security, identifier, category, date.
    assert "identifier" not in kept and "security" not in kept.get("meta", {}) and "category" not in kept
    assert kept["context"]["period"] == {"start": "2026-01-05T09:30:00Z", "end": "2026-01-05T10:00:00Z"}
    assert kept["author"] == [{"reference": "Practitioner/prac-avery"}]


def test_oracle_provider_create_needs_user_scope(tmp_path):
    app = make(tmp_path, "oracle")
    resp = post(app.test_client(), bearer(app, "patient/DocumentReference.write"), note(**ORACLE_NOTE))
    assert resp.status_code == 403 and "user/DocumentReference.write" in resp.json["issue"][0]["diagnostics"]


@pytest.mark.parametrize("bad, needle", [
    ({"period": False}, "context"),
    ({"content_type": "text/plain"}, "contentType"),
    ({"content_type": "text/plain; charset=utf-8"}, "contentType"),
    ({"author": "Practitioner/prac-blair"}, "authorized provider"),
    ({"author": None}, "exactly one author"),
    ({"context": {"period": {"start": "2026-01-05", "end": "2026-01-05T10:00:00Z"}}}, "time component"),
    ({"type_code": ("http://snomed.info/sct", "371530004")}, "LOINC or a proprietary"),
])
def test_oracle_rejects_with_422(tmp_path, bad, needle):
    app = make(tmp_path, "oracle")
    resp = post(app.test_client(), bearer(app, "user/DocumentReference.write"), note(**{**ORACLE_NOTE, **bad}))
    assert resp.status_code == 422, resp.json
    assert needle in resp.json["issue"][0]["diagnostics"]


def test_oracle_has_no_servicerequest_questionnaireresponse_or_task_create(tmp_path):
    app = make(tmp_path, "oracle")
    client = app.test_client()
    auth = bearer(app, "user/ServiceRequest.write user/QuestionnaireResponse.write user/Task.write")
    for rtype, status in (("ServiceRequest", 405), ("QuestionnaireResponse", 405), ("Task", 404)):
        resp = post(client, auth, {"resourceType": rtype, "status": "active", "intent": "order",
                                   "subject": {"reference": "Patient/pat-alice"}})
        assert resp.status_code == status and resp.json["issue"][0]["code"] == "not-supported", rtype


def test_oracle_search_ignores_identifier_and_pages_by_ten(tmp_path):
    app = make(tmp_path, "oracle")
    client = app.test_client()
    auth = bearer(app, "user/DocumentReference.read user/DocumentReference.write")
    for _ in range(12):
        assert post(client, auth, note(**ORACLE_NOTE)).status_code == 201
    page = client.get("/fhir/DocumentReference?patient=pat-alice&identifier=urn:x|nothing", headers=auth).json
    matches = [e for e in page["entry"] if e["search"]["mode"] == "match"]
    assert page["total"] == 12 and len(matches) == 10  # identifier ignored, default _count 10
    assert "identifier" not in page["link"][0]["url"] and any(link["relation"] == "next" for link in page["link"])
    assert client.get("/fhir/DocumentReference?type=http://loinc.org|11506-3", headers=auth).status_code == 400


def test_oracle_grants_only_v1_scopes(tmp_path):
    from tests.sandbox.test_auth_server import exchange, get_code

    app = make(tmp_path, "oracle")
    client = app.test_client()
    code, verifier, _ = get_code(client, app, scope="launch patient/Patient.read patient/Encounter.rs")
    assert exchange(client, code, verifier).json["scope"] == "launch patient/Patient.read"


def test_ehr_page_shows_the_personality(tmp_path):
    for name, title in (("generic", "Generic FHIR R4"), ("epic", "Epic on FHIR"), ("oracle", "Oracle Health")):
        page = make(tmp_path, name).test_client().get("/ehr").get_data(as_text=True)
        assert f'data-personality="{name}"' in page and title in page
