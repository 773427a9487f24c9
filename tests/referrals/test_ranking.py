"""Ranking for each seed site, after hours, language, needs, ZIP and missing encounter data."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from referrals.index import DirectoryIndex
from referrals.loaders import load_source
from referrals.ranking import RankingQuery, rank
from referrals.store import DEFAULT_DIRECTORY, merge
from tests.conftest import default_context
from tests.referrals import samples

for_launch = RankingQuery.for_launch  # the query of a launch context

NY = ZoneInfo("America/New_York")
WED_10AM = datetime(2026, 11, 25, 10, 0, tzinfo=NY)
WED_8PM = datetime(2026, 11, 25, 20, 0, tzinfo=NY)
SAT_NOON = datetime(2026, 11, 28, 12, 0, tzinfo=NY)

SITES = {  # sandbox key -> (Location name, org id, org name, ZIP)
    "bwh": ("Brigham and Women's Hospital", "org-bwh", "Brigham and Women's Hospital", "02115"),
    "bw-faulkner": ("Brigham and Women's Faulkner Hospital", "org-bwfh", "Brigham and Women's Faulkner Hospital",
                    "02130"),
    "sjphc": ("Southern Jamaica Plain Health Center", "org-sjphc", "Southern Jamaica Plain Health Center", "02130"),
    "brookside": ("Brookside Community Health Center", "org-brookside", "Brookside Community Health Center", "02130"),
    "whittier": ("Whittier Street Health Center", "org-whittier", "Whittier Street Health Center", "02120"),
    "mgh": ("Massachusetts General Hospital", "org-mgh", "Massachusetts General Hospital", "02114"),
    "mgh-chelsea": ("MGH Chelsea HealthCare Center", "org-mgh", "Massachusetts General Hospital", "02150"),
    "mgh-revere": ("MGH Revere HealthCare Center", "org-mgh", "Massachusetts General Hospital", "02151"),
    "baystate": ("Baystate Medical Center", "org-baystate", "Baystate Medical Center", "01199"),
}
EXPECTED = {"bwh": "passageway-bwh", "bw-faulkner": "passageway-faulkner", "sjphc": "passageway-sjphc",
            "brookside": "passageway-brookside", "whittier": "passageway-whittier", "mgh": "haven-mgh",
            "mgh-chelsea": "haven-chelsea", "mgh-revere": "haven-revere", "baystate": None}


HEALTH_CENTERS = {"sjphc", "brookside", "whittier", "mgh-chelsea", "mgh-revere"}


@pytest.fixture(scope="module")
def index() -> DirectoryIndex:
    return DirectoryIndex(load_source(DEFAULT_DIRECTORY))


def encounter(key: str, *, with_identifier: bool = True, with_location: bool = True) -> dict:
    loc_name, org_id, org_name, zip_code = SITES[key]
    loc = {"id": f"loc-{key}", "name": loc_name, "postalCode": zip_code,
           "identifiers": [{"system": "urn:ipv-sandbox:site", "value": key}] if with_identifier else []}
    return {"id": f"enc-{key}", "class": "AMB", "locations": [loc] if with_location else [],
            "service_provider": {"id": org_id, "name": org_name, "identifiers": []}}


@pytest.mark.parametrize("key", list(SITES))
def test_site_program_first_for_each_seed_site(index, key):
    r = rank(index, for_launch(context=default_context(encounter=encounter(key)), now=WED_10AM))
    expected = EXPECTED[key]
    if expected is None:
        assert r.site is None and r.site_service is None
        assert {x.service.id for x in r.results} >= {"ma-safelink", "national-dv-hotline"}
        assert all(x.service.id not in ("passageway", "haven") for x in r.results)  # 80+ miles away
    else:
        top = r.results[0]
        assert top.site.id == expected
        place = "health center" if key in HEALTH_CENTERS else "hospital"
        assert top.why[0] == f"On site at this {place}"
        assert "Open now" in top.why


@pytest.mark.parametrize("key", ["bw-faulkner", "mgh-chelsea", "whittier"])
def test_site_matched_by_location_name_alone(index, key):
    enc = encounter(key, with_identifier=False)
    enc["locations"][0]["id"] = "some-real-ehr-id"
    enc["service_provider"] = None
    r = rank(index, for_launch(context=default_context(encounter=enc), now=WED_10AM))
    assert r.results[0].site.id == EXPECTED[key]


def test_organization_only_match_says_serves_this_hospital(index):
    enc = encounter("mgh", with_location=False)
    r = rank(index, for_launch(context=default_context(encounter=enc), now=WED_10AM))
    assert r.site.id == "haven-mgh"  # org-mgh's name matches the MGH site
    # Only the organization id is known to the directory: the program, not a particular site.
    enc["service_provider"] = {"id": "org-bwh", "name": "Parent Corp", "identifiers": []}
    r = rank(index, for_launch(context=default_context(encounter=enc), now=WED_10AM))
    assert r.site is None
    assert r.results[0].service.id == "passageway" and r.results[0].why[0] == "Serves this hospital"


def test_deployment_site_map(index):
    enc = {"id": "e", "locations": [{"id": "e4W3x", "name": "Clinic 7", "identifiers": []}], "service_provider": None}
    r = rank(index, for_launch(context=default_context(encounter=enc), now=WED_10AM,
                               site_map={"Location/e4W3x": "passageway-whittier"}))
    assert r.results[0].site.id == "passageway-whittier"


def test_chelsea_after_hours_gives_haven_pager_and_24_7_hotlines(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("mgh-chelsea")), now=WED_8PM))
    top = r.results[0]
    assert top.service.id == "haven"
    assert "After hours: call the pager 1-617-726-2241" in top.why
    assert top.call.dial() == "1-617-726-2241"
    safelink = next(x for x in r.results if x.service.id == "ma-safelink")
    assert "24/7" in safelink.why and safelink.call.number == "1-877-785-2020"


def test_faulkner_weekend_pages_passageway_advocate(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("bw-faulkner")), now=SAT_NOON))
    top = r.results[0]
    assert top.site.id == "passageway-faulkner"
    assert top.call.dial() == "1-617-732-5520 ext. 31808"
    assert top.as_data()["phone"] == "1-617-732-5520 ext. 31808"


def test_hours_follow_new_york_time_not_utc(index):
    # 14:00 UTC on a Wednesday in November is 9:00 in Boston: open. 23:00 UTC is 18:00: closed.
    from datetime import UTC
    ctx = default_context(encounter=encounter("mgh"))
    at_9am = rank(index, for_launch(context=ctx, now=datetime(2026, 11, 25, 14, 0, tzinfo=UTC)))
    at_6pm = rank(index, for_launch(context=ctx, now=datetime(2026, 11, 25, 23, 0, tzinfo=UTC)))
    assert "Open now" in at_9am.results[0].why
    assert "Open now" not in at_6pm.results[0].why


def test_spanish_speaker_sees_passageway_speaks_spanish(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("mgh-chelsea")), language="es",
                               safe_zip="02150", now=WED_10AM))
    assert r.results[0].service.id == "haven"  # the site program stays first
    assert "Interpreters available" in r.results[0].why
    pw = next(x for x in r.results if x.service.id == "passageway")
    assert "Speaks Spanish" in pw.why
    # Among the non-site results, the Spanish-speaking program ranks above the hotlines.
    assert r.results[1].service.id == "passageway"


def test_safe_zip_distance_reason(index):
    r = rank(index, for_launch(context=default_context(encounter=None), safe_zip="02151", needs=["counselling"],
                               now=WED_10AM))
    haven = next(x for x in r.results if x.service.id == "haven")
    assert haven.site.id == "haven-revere"
    assert any(w.endswith("miles from 02151") for w in haven.why)
    assert r.origin == "zip"


def test_unknown_zip_is_reported_and_ignored(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("mgh-chelsea")), safe_zip="00000",
                               now=WED_10AM))
    assert r.zip_unknown and r.zip_code is None
    assert r.results[0].service.id == "haven"
    assert not any("miles from 00000" in w for x in r.results for w in x.why)


def test_no_encounter_and_no_zip_still_lists_hotlines(index):
    r = rank(index, for_launch(context=default_context(encounter=None), now=WED_8PM))
    assert r.site is None and r.origin == "none"
    ids = [x.service.id for x in r.results]
    assert "ma-safelink" in ids and "national-dv-hotline" in ids
    assert "emergency-911" not in ids and [s.id for s in r.emergency] == ["emergency-911"]


def test_encounter_without_location_or_provider(index):
    enc = {"id": "e", "class": "AMB", "locations": [], "service_provider": None}
    r = rank(index, for_launch(context=default_context(encounter=enc), now=WED_10AM))
    assert r.site is None and r.results


def test_needs_filter(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("bw-faulkner")), needs=["sexual-assault"],
                               now=WED_10AM))
    ids = [x.service.id for x in r.results]
    assert ids[0] == "passageway"  # the site program always stays
    assert "barcc" in ids and "Helps with sexual assault" in r.results[ids.index("barcc")].why
    assert "national-dv-hotline" not in ids
    r = rank(index, for_launch(context=default_context(encounter=None), needs=["legal"], now=WED_10AM))
    assert "Helps with legal help and protective orders (209A)" in r.results[0].why


def test_shelters_never_show_a_street_address(tmp_path):
    hsds = load_source(samples.write_hsds_json(tmp_path / "h.json"))
    idx = DirectoryIndex(merge([load_source(DEFAULT_DIRECTORY), hsds]))
    r = rank(idx, for_launch(context=default_context(encounter=encounter("mgh-chelsea")), safe_zip="01902",
                             needs=["shelter"], now=WED_10AM))
    shelter = next(x for x in r.results if x.service.id == "svc-safe-house")
    assert shelter.address() is None
    assert "Hidden Lane" not in repr(shelter.as_data())
    counsel = next(x for x in rank(idx, for_launch(safe_zip="02150", needs=["counselling"], now=WED_10AM)).results
                                                   if x.service.id == "svc-chelsea-counsel")
    assert counsel.address() == "1 Broadway, Chelsea, MA 02150"


def test_results_explain_themselves_and_store_without_phi(index):
    r = rank(index, for_launch(context=default_context(), safe_zip="02150", now=WED_10AM))
    for x in r.results:
        data = x.as_data()
        assert set(data) >= {"service_id", "program", "name", "phone", "why"}
        assert "Rosa" not in repr(data) and "pat-test" not in repr(data)


def test_local_service_without_coordinates_is_still_listed(tmp_path):
    services = samples.hsds_services()[:1]
    loc = services[0]["service_at_locations"][0]["location"]
    del loc["latitude"], loc["longitude"]
    loc["addresses"][0]["postal_code"] = "not-a-zip"
    idx = DirectoryIndex(load_source(samples.write_hsds_json(tmp_path / "d.json", services)))
    r = rank(idx, for_launch(safe_zip="02150", needs=["counselling"], now=WED_10AM))
    assert [x.service.id for x in r.results] == ["svc-chelsea-counsel"]
    assert r.results[0].distance is None


def test_grid_search_finds_the_same_nearest_services_as_brute_force():
    import math
    import random

    from referrals.index import NEED_BIT
    from referrals.model import Directory, Hours, Phone, Service, Site

    rng = random.Random(5)
    services = []
    for i in range(1500):
        lat, lon = 42.0 + rng.random() * 1.0, -72.0 + rng.random() * 1.5
        services.append(Service(id=f"s{i}", program=f"P{i}", name={"en": f"P{i}"},
                                needs={rng.choice(["legal", "shelter"])}, phones=[Phone("617-555-0000")],
                                hours=Hours(always=True), sites=[Site(id=f"t{i}", name={"en": "x"}, lat=lat, lon=lon)]))
    idx = DirectoryIndex(Directory(services=services))

    def dist(s: Service, origin: tuple[float, float]) -> float:
        t = s.sites[0]
        cos0 = math.cos(math.radians(origin[0]))
        return math.hypot((t.lat - origin[0]) * 69.05, (t.lon - origin[1]) * 69.05 * cos0)

    for _ in range(30):
        origin = (42.0 + rng.random(), -72.0 + rng.random() * 1.5)
        for need in (None, "legal"):
            pool = [s for s in services if not need or need in s.needs]
            want = sorted(d for s in pool if (d := dist(s, origin)) <= 50)[:20]
            got = sorted(d for d, _ in idx.nearby(origin, NEED_BIT[need] if need else 0, 20).values())
            assert got == pytest.approx(want)
