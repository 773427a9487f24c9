"""Coverage read from the EHR at launch: a social worker's PractitionerRole names a HealthcareService; its
location and providedBy become the places the queue covers (fhir/context.py + smart_app/worklist/scope.py)."""

from __future__ import annotations

import pytest

from config.settings import load_settings
from fhir import context as ctxmod
from fhir.client import FhirClient
from fhir.context import read_launch_context
from smart_app.worklist.scope import scope_for
from tests.launch.fakes import FakeAdapter

pytestmark = pytest.mark.worklist

BASE = "https://ehr.example/fhir"
PRAC = {"resourceType": "Practitioner", "id": "sw9", "name": [{"given": ["Sky"], "family": "Worker"}]}
ROLE = {"resourceType": "PractitionerRole", "id": "r9", "practitioner": {"reference": "Practitioner/sw9"},
        "code": [{"text": "Medical social worker"}],
        "healthcareService": [{"reference": "HealthcareService/hs-dv"}]}
OTHER_ROLE = {"resourceType": "PractitionerRole", "id": "r10", "practitioner": {"reference": "Practitioner/sw9"},
              "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "309343006"}]}],
              "organization": {"reference": "Organization/org-elsewhere"}}  # a physician role: no coverage
SERVICE = {"resourceType": "HealthcareService", "id": "hs-dv", "name": "DV advocacy, Chelsea",
           "location": [{"reference": "Location/loc-mgh-chelsea"}], "providedBy": {"reference": "Organization/org-mgh"}}


class _Launch:
    def __init__(self, context):
        self.context, self.iss = context, BASE


@pytest.fixture(autouse=True)
def _forget_batch_refusals():
    ctxmod._no_batch.clear()
    yield
    ctxmod._no_batch.clear()



def deployment(name: str):
    return load_settings({"IPV_DEPLOYMENT": name})

def _fake(service_status: int = 200) -> FakeAdapter:
    fake = FakeAdapter()
    fake.add("POST", BASE + "/", (404, {"resourceType": "OperationOutcome", "issue": [{"code": "not-supported"}]}))
    fake.add("GET", f"{BASE}/Practitioner/sw9", (200, PRAC))
    fake.add("GET", f"{BASE}/PractitionerRole", (200, {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": ROLE}, {"resource": OTHER_ROLE}]}))
    fake.add("GET", f"{BASE}/HealthcareService/hs-dv", (service_status, SERVICE if service_status == 200 else
                                                         {"resourceType": "OperationOutcome", "issue": []}))
    return fake


def test_healthcare_service_location_and_provider_become_coverage():
    client = FhirClient(BASE, "tok", session=_fake().session())
    ctx = read_launch_context(client, {"scope": "openid fhirUser"}, fhir_user=f"{BASE}/Practitioner/sw9")
    scope = scope_for(_Launch(ctx.to_dict()), deployment("oracle-health"))  # maps the text "Medical social worker"
    assert scope.roles == ["social_worker"] and scope.source == "ehr"
    assert scope.keys == {"Location/loc-mgh-chelsea", "Organization/org-mgh"}  # not the physician role's org


def test_an_unreadable_service_never_fails_the_launch():
    client = FhirClient(BASE, "tok", session=_fake(service_status=403).session())
    ctx = read_launch_context(client, {"scope": "openid fhirUser"}, fhir_user=f"{BASE}/Practitioner/sw9")
    scope = scope_for(_Launch(ctx.to_dict()), deployment("oracle-health"))
    assert scope.roles == ["social_worker"] and scope.keys == frozenset() and scope.source == "none"
