"""M1: the social-worker role comes only from the signed-in user's own PractitionerRole."""

from __future__ import annotations

import pytest

from tests.launch.fakes import FakeEhr
from tests.security.conftest import context_of, launch

pytestmark = pytest.mark.security

SW = {"coding": [{"system": "http://snomed.info/sct", "code": "106328005", "display": "Social worker"}]}
DOCTOR = {"coding": [{"system": "http://snomed.info/sct", "code": "158965000", "display": "Medical practitioner"}]}


def _role(rid: str, practitioner: str, code: dict) -> dict:
    return {"resourceType": "PractitionerRole", "id": rid, "active": True,
            "practitioner": {"reference": practitioner}, "code": [code]}


def _lenient_search(fake: FakeEhr, roles: list[dict]) -> None:
    """The EHR ignores ``practitioner=``: every search returns every role (lenient search is FHIR's default)."""
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": r, "search": {"mode": "match"}} for r in roles]}
    fake.adapter.add("GET", FakeEhr.ISS + "/PractitionerRole", lambda _r: (200, bundle))


def test_another_users_social_worker_role_is_not_mine(app, client, fake):
    """M1: a lenient EHR returns a social worker's role for someone else; the signed-in doctor stays a clinician."""
    _lenient_search(fake, [_role("r-sw", "Practitioner/sw1", SW), _role("r-d1", "Practitioner/d1", DOCTOR)])
    lid = launch(client, fake)
    assert context_of(app, lid)["user"]["roles"] == ["clinician"]
    if "worklist" in app.blueprints:
        assert client.get(f"/l/{lid}/worklist").status_code == 403


def test_my_own_social_worker_role_counts(app, client, fake):
    """M1 control: the same search with the signed-in user's own social-work role (absolute reference too)."""
    _lenient_search(fake, [_role("r-d1", FakeEhr.ISS + "/Practitioner/d1", SW), _role("r-x", "Practitioner/x", DOCTOR)])
    lid = launch(client, fake)
    assert context_of(app, lid)["user"]["roles"] == ["social_worker"]


def test_fhir_user_that_is_a_practitioner_role(app, client, fake):
    """M1: when fhirUser is itself a PractitionerRole, that role (and only it) decides."""
    fake.id_token_claims["fhirUser"] = FakeEhr.ISS + "/PractitionerRole/r-sw"
    fake.adapter.add("GET", FakeEhr.ISS + "/PractitionerRole/r-sw", (200, _role("r-sw", "Practitioner/d1", SW)))
    lid = launch(client, fake)
    user = context_of(app, lid)["user"]
    assert user["roles"] == ["social_worker"] and user["name"] == "Dee Doctor"


def test_a_role_resource_with_another_id_is_not_trusted(app, client, fake):
    """M1: the EHR answers the read of PractitionerRole/r-mine with a different role resource."""
    fake.id_token_claims["fhirUser"] = FakeEhr.ISS + "/PractitionerRole/r-mine"
    fake.adapter.add("GET", FakeEhr.ISS + "/PractitionerRole/r-mine", (200, _role("r-sw", "Practitioner/sw1", SW)))
    lid = launch(client, fake)
    assert context_of(app, lid)["user"]["roles"] == ["clinician"]
