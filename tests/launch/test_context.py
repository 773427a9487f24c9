"""Launch context reader: batch first, single reads as fallback, roles from PractitionerRole."""

from __future__ import annotations

import json

import pytest

from fhir import context as ctxmod
from fhir.client import FhirClient
from fhir.context import ContextError, read_launch_context, role_names
from fhir.launch_context import Coding, Identifier, LocationSummary, PatientSummary
from tests.launch.fakes import FakeAdapter

BASE = "https://ehr.example/fhir"
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"use": "official", "given": ["Ana"], "family": "Lopez"}],
           "birthDate": "1988-02-03", "gender": "female",
           "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-MX"}]},
                              "preferred": True}],
           "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN-9"}]}
ENCOUNTER = {"resourceType": "Encounter", "id": "e1", "class": {"code": "AMB"},
             "location": [{"location": {"reference": "Location/loc-bwh"}}],
             "serviceProvider": {"reference": "Organization/org-bwh"}}
LOCATION = {"resourceType": "Location", "id": "loc-bwh", "name": "Brigham and Women's Hospital",
            "identifier": [{"system": "urn:ipv-sandbox:site", "value": "bwh"}], "address": {"postalCode": "02115"}}
ORG = {"resourceType": "Organization", "id": "org-bwh", "name": "Brigham and Women's Hospital"}
PRAC = {"resourceType": "Practitioner", "id": "sw1", "name": [{"prefix": ["Ms."], "given": ["Devon"],
                                                               "family": "Social"}]}
SW_ROLE = {"resourceType": "PractitionerRole", "id": "r1", "practitioner": {"reference": "Practitioner/sw1"},
           "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "106328005"}]}]}
MD_ROLE = {"resourceType": "PractitionerRole", "id": "r2", "practitioner": {"reference": "Practitioner/md1"},
           "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "309343006"}]}]}
ENCOUNTER_SEARCH = "Encounter?_id=e1&_include=Encounter:location&_include=Encounter:service-provider"
RESOURCES = {"Patient/p1": PATIENT, "Encounter/e1": ENCOUNTER, "Location/loc-bwh": LOCATION,
             "Organization/org-bwh": ORG, "Practitioner/sw1": PRAC,
             "PractitionerRole?practitioner=Practitioner/sw1": {"resourceType": "Bundle", "type": "searchset",
                                                                 "entry": [{"resource": SW_ROLE}]}}


@pytest.fixture(autouse=True)
def _forget_batch_refusals():
    ctxmod._no_batch.clear()
    yield
    ctxmod._no_batch.clear()


def _encounter_search(include: bool) -> dict:
    """The Encounter search bundle: with its Location and Organization when the server honours _include."""
    entry = [{"resource": ENCOUNTER, "search": {"mode": "match"}}]
    if include:
        entry += [{"resource": LOCATION, "search": {"mode": "include"}},
                  {"resource": ORG, "search": {"mode": "include"}}]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entry}


def _server(batch: bool, include: bool = True) -> FakeAdapter:
    fake = FakeAdapter()
    resources = {**RESOURCES, ENCOUNTER_SEARCH: _encounter_search(include)}

    def batch_handler(request):
        if not batch:
            return 404, {"resourceType": "OperationOutcome", "issue": [{"code": "not-supported"}]}
        entries = []
        for e in json.loads(request.body)["entry"]:
            res = resources.get(e["request"]["url"])
            entries.append({"resource": res, "response": {"status": "200 OK"}} if res
                           else {"response": {"status": "404 Not Found"}})
        return 200, {"resourceType": "Bundle", "type": "batch-response", "entry": entries}

    fake.add("POST", BASE + "/", batch_handler)
    for ref, res in RESOURCES.items():
        if "?" not in ref:
            fake.add("GET", f"{BASE}/{ref}", (200, res))
    fake.add("GET", f"{BASE}/PractitionerRole", lambda r: (200, RESOURCES[
        "PractitionerRole?practitioner=Practitioner/sw1"]))
    fake.add("GET", f"{BASE}/Encounter", lambda r: (200, _encounter_search(include)))
    return fake


TOKEN = {"patient": "p1", "encounter": "e1", "need_patient_banner": False, "smart_style_url": "https://ehr/s.json",
         "intent": "screening", "fhirContext": [{"reference": "Encounter/e1"}],
         "scope": "launch openid patient/Encounter.rs"}


@pytest.mark.parametrize("batch,include", [(True, True), (True, False), (False, True)],
                         ids=["batch", "batch-without-include", "single-reads"])
def test_context_reads_patient_visit_site_and_user(batch, include):
    fake = _server(batch, include)
    client = FhirClient(BASE, "tok", session=fake.session())
    ctx = read_launch_context(client, TOKEN, fhir_user=f"{BASE}/Practitioner/sw1")
    assert ctx.patient == PatientSummary(id="p1", name="Ana Lopez", birth_date="1988-02-03", gender="female",
                                         language="es", languages=("es",), mrn="MRN-9", interpreter_needed=None)
    assert ctx.encounter.id == "e1" and ctx.encounter.class_code == "AMB"
    assert ctx.encounter.locations == (LocationSummary(
        id="loc-bwh", name="Brigham and Women's Hospital",
        identifiers=(Identifier(system="urn:ipv-sandbox:site", value="bwh"),), postal_code="02115"),)
    assert ctx.encounter.service_provider.id == "org-bwh"
    assert [r.codings[0] for r in ctx.user.practitioner_roles] == [Coding("http://snomed.info/sct", "106328005")]
    assert (ctx.user.reference, ctx.user.name, ctx.user.roles) == ("Practitioner/sw1", "Ms. Devon Social",
                                                                   ("social_worker",))
    assert ctx.need_patient_banner is False and ctx.intent == "screening"
    assert ctx.smart_style_url == "https://ehr/s.json" and ctx.fhir_context == ({"reference": "Encounter/e1"},)
    posts = [c for c in fake.calls if c.method == "POST"]
    if batch and include:
        assert len(posts) == 1 and all(c.method == "POST" for c in fake.calls)  # one round: _include did the rest
    elif batch:
        assert len(posts) == 2 and all(c.method == "POST" for c in fake.calls)  # a 2nd round for what is missing
    else:
        assert len(posts) == 1  # refused once, then remembered: single reads only
        client2 = FhirClient(BASE, "tok", session=fake.session())
        before = len(fake.calls)
        read_launch_context(client2, TOKEN, fhir_user=f"{BASE}/Practitioner/sw1")
        assert all(c.method == "GET" for c in fake.calls[before:])


def test_encounter_taken_from_fhir_context_when_token_has_none():
    fake = _server(batch=True)
    ctx = read_launch_context(FhirClient(BASE, "t", session=fake.session()),
                              {"patient": "p1", "fhirContext": [{"reference": "Encounter/e1"}]})
    assert ctx.encounter.id == "e1"
    assert ctx.need_patient_banner is True  # absent means show it


def test_patient_id_that_is_not_a_fhir_id_is_never_sent():
    fake = _server(batch=True)
    with pytest.raises(ContextError):
        read_launch_context(FhirClient(BASE, "t", session=fake.session()), {"patient": "../Patient?_count=100"})
    assert fake.calls == []


def test_user_on_another_server_gets_no_request_with_our_token():
    fake = _server(batch=True)
    ctx = read_launch_context(FhirClient(BASE, "t", session=fake.session()), {"patient": "p1"},
                              fhir_user="https://evil.example/fhir/Practitioner/sw1")
    assert all(c.url.startswith(BASE) for c in fake.calls)
    assert ctx.user.name is None


def test_missing_patient_is_a_clear_error():
    fake = _server(batch=True)
    with pytest.raises(ContextError, match="patient"):
        read_launch_context(FhirClient(BASE, "t", session=fake.session()), {"patient": "nobody"})


def test_role_names():
    assert role_names([SW_ROLE, MD_ROLE]) == ["social_worker", "clinician"]
    nucc = {"code": [{"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "1041C0700X"}]}]}
    assert role_names([nucc]) == ["social_worker"]
    assert role_names([]) == []


def test_read_only_encounter_scope_reads_the_encounter_and_its_site_in_two_rounds():
    """Without search on Encounter in the granted scope the app never asks for one: a plain read, then the site."""
    fake = _server(batch=True)
    token = {**TOKEN, "scope": "launch openid patient/Encounter.r"}
    ctx = read_launch_context(FhirClient(BASE, "t", session=fake.session()), token)
    assert ctx.encounter.locations[0].id == "loc-bwh"
    assert ctx.encounter.service_provider.id == "org-bwh"
    urls = [e["request"]["url"] for c in fake.calls for e in json.loads(c.body)["entry"]]
    assert "Encounter/e1" in urls and not any(u.startswith("Encounter?") for u in urls)
    assert len(fake.calls) == 2


@pytest.mark.parametrize("scope,allowed", [
    ("patient/Encounter.rs", True), ("patient/Encounter.r", False), ("patient/Encounter.read", True),
    ("user/*.rs", True), ("patient/*.read", True), ("patient/Encounter.s?status=finished", True),
    ("patient/Patient.rs", False), ("launch openid", False), (None, False)])
def test_search_permission_from_the_granted_scope(scope, allowed):
    assert ctxmod._may_search(scope, "Encounter") is allowed
