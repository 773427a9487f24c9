"""Every sandbox encounter, summarised the way fhir/context.py does at launch, gets the right program
(and the sandbox's own Location/Organization data agrees with the directory's added addresses)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fhir.context import location_summary, organization_summary
from referrals.index import DirectoryIndex
from referrals.loaders import load_source
from referrals.ranking import RankingQuery, rank
from referrals.store import DEFAULT_DIRECTORY

for_launch = RankingQuery.for_launch  # the query of a launch context

DATA = Path(__file__).resolve().parents[2] / "sandbox_ehr" / "data"
WED_10AM = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("America/New_York"))
PROGRAM_FOR_SITE = {"bwh": "passageway", "bw-faulkner": "passageway", "sjphc": "passageway",
                    "brookside": "passageway", "whittier": "passageway", "mgh": "haven", "mgh-chelsea": "haven",
                    "mgh-revere": "haven", "baystate": None}


def resources(name: str) -> dict[str, dict]:
    data = json.loads((DATA / name).read_text())
    items = [e["resource"] for e in data["entry"]] if isinstance(data, dict) else data
    return {r["id"]: r for r in items}


LOCATIONS = resources("02-locations.json")
ORGS = resources("01-organizations.json")
ENCOUNTERS = resources("05-encounters.json")


def context_for(enc: dict) -> dict:
    locs = [location_summary(LOCATIONS[x["location"]["reference"].split("/")[1]]).to_dict()
            for x in enc.get("location", [])]
    org_ref = (enc.get("serviceProvider") or {}).get("reference")
    org = organization_summary(ORGS[org_ref.split("/")[1]]).to_dict() if org_ref else None
    return {"encounter": {"id": enc["id"], "locations": locs, "service_provider": org}}


@pytest.fixture(scope="module")
def index() -> DirectoryIndex:
    return DirectoryIndex(load_source(DEFAULT_DIRECTORY))


@pytest.mark.parametrize("enc_id", sorted(ENCOUNTERS))
def test_each_sandbox_encounter_gets_its_program(index, enc_id):
    enc = ENCOUNTERS[enc_id]
    ctx = context_for(enc)
    keys = [i["value"] for loc in ctx["encounter"]["locations"] for i in loc["identifiers"]
            if i["system"] == "urn:ipv-sandbox:site"]
    if not keys:  # no Location on the encounter: the serviceProvider decides
        keys = [i["value"] for i in ctx["encounter"]["service_provider"]["identifiers"]
                if i["system"] == "urn:ipv-sandbox:site"]
    expected = PROGRAM_FOR_SITE[keys[0]]
    r = rank(index, for_launch(context=ctx, now=WED_10AM))
    if expected is None:
        assert r.site_service is None
    else:
        assert r.results[0].service.id == expected
        assert r.results[0].why[0] in ("On site at this hospital", "On site at this health center",
                                       "Serves this hospital")


def test_added_addresses_match_the_sandbox_locations():
    d = load_source(DEFAULT_DIRECTORY).by_id()
    for service_id in ("passageway", "haven"):
        for site in d[service_id].sites:
            key = next((i.split("|")[1] for i in site.match.identifiers if i.startswith("urn:ipv-sandbox:site|")),
                       None)
            if key is None:
                continue  # Mission Hill Community: named by the seed, not in the sandbox
            loc = LOCATIONS[f"loc-{key}"]
            assert site.address.line == loc["address"]["line"][0]
            assert site.address.postal_code == loc["address"]["postalCode"]
            assert site.address.confirm
