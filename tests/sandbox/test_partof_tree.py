"""The seed's hospital -> department tree: Location.partOf and Organization.partOf, a hospital-wide social
worker, a department social worker and encounters at department Locations, read through the FHIR API."""

from __future__ import annotations

import pytest

SITE = "urn:ipv-sandbox:site"
SOCIAL_WORKER = "http://snomed.info/sct|106328005"
# Ids other tests rely on: the tree was added beside them, nothing renamed or moved.
EXISTING_ENCOUNTERS = {
    "enc-alice-bwh": "loc-bwh", "enc-carmen-sjphc": "loc-sjphc", "enc-joana-chelsea": "loc-mgh-chelsea",
    "enc-dana-faulkner": "loc-bw-faulkner", "enc-ellen-brookside": "loc-brookside",
    "enc-fatima-whittier": "loc-whittier", "enc-grace-mgh": "loc-mgh", "enc-marisol-revere": "loc-mgh-revere",
    "enc-hana-baystate": "loc-baystate", "enc-june-bwh": "loc-bwh", "enc-lucia-mgh": "loc-mgh",
    "enc-lucia-bwh": "loc-bwh", "enc-river-sjphc": "loc-sjphc",
}
DEPARTMENT_ENCOUNTERS = {"enc-nora-bwh-ed": "loc-bwh-ed", "enc-omar-bwh-primary-care": "loc-bwh-primary-care",
                         "enc-priya-bwh-ed-obs": "loc-bwh-ed-obs"}


def ids(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def read(fhir, auth, ref: str) -> dict:
    r = fhir.get(f"/fhir/{ref}", headers=auth)
    assert r.status_code == 200, ref
    return r.json


def ancestors(fhir, auth, ref: str) -> list[str]:
    """``ref`` and every resource above it along ``partOf``, nearest first."""
    chain = [ref]
    while (parent := (read(fhir, auth, chain[-1]).get("partOf") or {}).get("reference")) is not None:
        assert parent not in chain, "partOf cycle"
        chain.append(parent)
    return chain


def site_keys(resource: dict) -> list[str]:
    return [i["value"] for i in resource.get("identifier", []) if i.get("system") == SITE]


def test_department_locations_walk_up_to_the_hospital(fhir, auth):
    assert ancestors(fhir, auth, "Location/loc-bwh-ed") == ["Location/loc-bwh-ed", "Location/loc-bwh"]
    assert ancestors(fhir, auth, "Location/loc-bwh-primary-care") == ["Location/loc-bwh-primary-care",
                                                                      "Location/loc-bwh"]
    assert ancestors(fhir, auth, "Location/loc-bwh-ed-obs") == ["Location/loc-bwh-ed-obs", "Location/loc-bwh-ed",
                                                                "Location/loc-bwh"]
    # Departments carry no site key of their own: only the walk up the tree finds the site (bwh).
    for loc in ("loc-bwh-ed", "loc-bwh-ed-obs", "loc-bwh-primary-care"):
        assert site_keys(read(fhir, auth, f"Location/{loc}")) == []
    assert site_keys(read(fhir, auth, "Location/loc-bwh")) == ["bwh"]


def test_partof_search_lists_a_hospitals_departments(fhir, auth):
    assert ids(fhir.get("/fhir/Location?partof=Location/loc-bwh", headers=auth).json) == \
        {"loc-bwh-ed", "loc-bwh-primary-care"}
    assert ids(fhir.get("/fhir/Location?partof=Location/loc-bwh-ed", headers=auth).json) == {"loc-bwh-ed-obs"}
    assert ids(fhir.get("/fhir/Organization?partof=Organization/org-bwh", headers=auth).json) == \
        {"org-bwh-socialwork", "org-bwh-emergency", "org-bwh-medicine"}
    found = fhir.get("/fhir/Location?_id=loc-bwh-ed-obs&_include=Location:partof", headers=auth).json
    included = {e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "include"}
    assert included == {"loc-bwh-ed"}


def test_social_work_department_is_part_of_the_hospital_organization(fhir, auth):
    dept = read(fhir, auth, "Organization/org-bwh-socialwork")
    assert dept["partOf"]["reference"] == "Organization/org-bwh"
    assert site_keys(dept) == []
    assert ancestors(fhir, auth, "Organization/org-bwh-socialwork") == ["Organization/org-bwh-socialwork",
                                                                        "Organization/org-bwh"]


def test_hospital_wide_and_department_social_workers(fhir, auth):
    roles = fhir.get(f"/fhir/PractitionerRole?role={SOCIAL_WORKER}", headers=auth).json
    by_practitioner = {e["resource"]["practitioner"]["reference"]: e["resource"] for e in roles["entry"]}
    # The existing social workers are unchanged beside the new ones.
    assert set(by_practitioner) == {"Practitioner/prac-devon", "Practitioner/prac-emery",
                                    "Practitioner/prac-harper", "Practitioner/prac-jules"}
    harper = by_practitioner["Practitioner/prac-harper"]  # hospital-wide: the hospital's Location
    assert [x["reference"] for x in harper["location"]] == ["Location/loc-bwh"]
    assert harper["organization"]["reference"] == "Organization/org-bwh-socialwork"
    jules = by_practitioner["Practitioner/prac-jules"]  # one department
    assert [x["reference"] for x in jules["location"]] == ["Location/loc-bwh-ed"]
    assert jules["organization"]["reference"] == "Organization/org-bwh-socialwork"
    devon = by_practitioner["Practitioner/prac-devon"]
    assert devon["organization"]["reference"] == "Organization/org-bwh"


@pytest.mark.parametrize("encounter, location", sorted({**EXISTING_ENCOUNTERS, **DEPARTMENT_ENCOUNTERS}.items()))
def test_encounter_ids_and_locations(fhir, auth, encounter, location):
    enc = read(fhir, auth, f"Encounter/{encounter}")
    assert [x["location"]["reference"] for x in enc["location"]] == [f"Location/{location}"]


def test_department_encounters_reach_the_hospital_through_partof(fhir, auth):
    for encounter, location in DEPARTMENT_ENCOUNTERS.items():
        enc = read(fhir, auth, f"Encounter/{encounter}")
        assert enc["serviceProvider"]["reference"] == "Organization/org-bwh"
        assert ancestors(fhir, auth, f"Location/{location}")[-1] == "Location/loc-bwh"
    assert read(fhir, auth, "Encounter/enc-marcus-mgh").get("location") is None  # still serviceProvider only


def test_a_patient_token_reads_the_tree(fhir, token):
    """Locations and Organizations are shared resources: a patient-scoped launch can walk the tree."""
    patient = token("launch patient/*.rs", patient="pat-nora", encounter="enc-nora-bwh-ed")
    assert ancestors(fhir, patient, "Location/loc-bwh-ed-obs")[-1] == "Location/loc-bwh"
    assert ancestors(fhir, patient, "Organization/org-bwh-emergency")[-1] == "Organization/org-bwh"
