"""The site's ancestors: Location.partOf and Organization.partOf walked at launch, a few levels at most, one batch
of reads per level, so a hospital-wide social worker's coverage matches a department clinic's referral."""

from __future__ import annotations

import json

import pytest

from fhir import context as ctxmod
from fhir.client import FhirClient
from fhir.context import PART_OF_LEVELS, read_launch_context
from fhir.launch_context import LaunchContext
from smart_app.worklist.scope import referral_site_keys
from tests.launch.fakes import FakeAdapter

pytestmark = pytest.mark.routing

BASE = "https://ehr.example/fhir"
SITE = "urn:ipv-sandbox:site"


def _loc(id_, parent=None, site=None):
    return {"resourceType": "Location", "id": id_, "name": id_,
            **({"partOf": {"reference": f"Location/{parent}"}} if parent else {}),
            **({"identifier": [{"system": SITE, "value": site}]} if site else {})}


def _org(id_, parent=None):
    return {"resourceType": "Organization", "id": id_, "name": id_,
            **({"partOf": {"reference": f"{BASE}/Organization/{parent}"}} if parent else {})}  # absolute: relativised


RESOURCES = {
    "Patient/p1": {"resourceType": "Patient", "id": "p1"},
    "Encounter/e1": {"resourceType": "Encounter", "id": "e1", "class": {"code": "EMER"},
                     "location": [{"location": {"reference": "Location/loc-ed-obs"}}],
                     "serviceProvider": {"reference": "Organization/org-emergency"}},
    "Location/loc-ed-obs": _loc("loc-ed-obs", "loc-ed"), "Location/loc-ed": _loc("loc-ed", "loc-bwh"),
    "Location/loc-bwh": _loc("loc-bwh", "loc-system", site="bwh"), "Location/loc-system": _loc("loc-system", "loc-top"),
    "Location/loc-top": _loc("loc-top"),
    "Organization/org-emergency": _org("org-emergency", "org-bwh"), "Organization/org-bwh": _org("org-bwh"),
}


@pytest.fixture(autouse=True)
def _forget_batch_refusals():
    ctxmod._no_batch.clear()
    yield
    ctxmod._no_batch.clear()


def _server(resources) -> FakeAdapter:
    fake = FakeAdapter()

    def batch(request):
        entries = []
        for e in json.loads(request.body)["entry"]:
            url = e["request"]["url"]
            res = resources.get(url) if "?" not in url else {"resourceType": "Bundle", "type": "searchset",
                                                              "entry": [{"resource": resources["Encounter/e1"],
                                                                         "search": {"mode": "match"}}]}
            entries.append({"resource": res, "response": {"status": "200 OK"}} if res
                           else {"response": {"status": "404 Not Found"}})
        return 200, {"resourceType": "Bundle", "type": "batch-response", "entry": entries}

    fake.add("POST", BASE + "/", batch)
    for ref, res in resources.items():  # a round of one read is a plain GET
        fake.add("GET", f"{BASE}/{ref}", (200, res))
    return fake


def _read(resources):
    fake = _server(resources)
    client = FhirClient(BASE, "tok", session=fake.session())
    ctx = read_launch_context(client, {"patient": "p1", "encounter": "e1", "scope": "patient/Encounter.rs"})
    return ctx, fake


def test_a_department_encounter_names_its_hospital_and_the_hospital_keys_reach_the_referral():
    ctx, fake = _read(RESOURCES)
    enc = ctx.encounter
    assert [loc.id for loc in enc.parent_locations] == ["loc-ed", "loc-bwh", "loc-system"][:PART_OF_LEVELS]
    assert [org.id for org in enc.parent_organizations] == ["org-bwh"]
    # Bounded: the walk stops after PART_OF_LEVELS, however high the tree goes.
    assert "loc-top" not in {loc.id for loc in enc.parent_locations}
    # Round 1 and 2 as before, then one batch per level walked (3 levels: ED, BWH, system).
    assert len(fake.calls) == 2 + PART_OF_LEVELS
    again = LaunchContext.from_dict(json.loads(json.dumps(ctx.to_dict())))
    assert again.encounter == enc  # stored with the launch and read back unchanged
    keys = referral_site_keys(ctx.to_dict(), None)
    assert {"Location/loc-ed-obs", "Location/loc-bwh", f"{SITE}|bwh", "Organization/org-emergency",
            "Organization/org-bwh"} <= set(keys)


def test_an_unreadable_parent_keeps_what_was_read_and_never_fails_the_launch():
    resources = {k: v for k, v in RESOURCES.items() if k != "Location/loc-bwh"}
    ctx, _fake = _read(resources)
    assert [loc.id for loc in ctx.encounter.parent_locations] == ["loc-ed"]
    assert [org.id for org in ctx.encounter.parent_organizations] == ["org-bwh"]


def test_a_partof_cycle_ends_the_walk():
    resources = {**RESOURCES, "Location/loc-bwh": _loc("loc-bwh", "loc-ed-obs")}
    ctx, _fake = _read(resources)
    assert [loc.id for loc in ctx.encounter.parent_locations] == ["loc-ed", "loc-bwh"]
