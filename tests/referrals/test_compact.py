"""The compact directory (issue 14: tuples, shared phones, texts and match rules; an index that keeps only the
first service per match key and flat coordinate runs) ranks exactly as the directory did before compaction.

Each example is one HSDS directory with much to share (few organizations, phone numbers, place names and
schedules), loaded twice: as the loader builds it, service by service without compaction (the representation
before), and as the app loads it. Both are indexed and ranked for the same visits; every result, reason, call and
distance must be equal. Site matching is also checked against a scan of the directory in order (the meaning
of the match tables the index had before: lists of every service with a key, the first one used)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referrals.errors import Collector
from referrals.index import DirectoryIndex
from referrals.loaders.common import place_sites
from referrals.loaders.hsds import parse_hsds, parse_service
from referrals.model import Directory, MatchRules, Service, Site, norm_name
from referrals.ranking import Ranking, RankingQuery, rank
from referrals.visit import Visit

for_launch = RankingQuery.for_launch  # the query of a launch context

PLACES = ["Chelsea Family Center", "Revere Clinic", "Main Office", "Lynn Shelter", "Boston Medical"]
ORGS = ["Chelsea Family Center", "North Shore Services", "Greater Boston Legal"]
PHONES = ["617-555-0100", "617-555-0199", "978-555-0123"]
ZIPS = ["02150", "02151", "01902", "02115", "02130", "99999"]
TERMS = [("counseling", "Counseling"), ("legal", "Legal advocacy"), ("shelter", "Emergency shelter"),
         ("hotline", "Crisis hotline"), ("sexual-assault", "Sexual assault"), ("housing", "Housing")]
SCHEDULES = [[{"description": "24/7"}], [], [{"freq": "WEEKLY", "byday": "MO,TU,WE,TH,FR", "opens_at": "09:00",
                                              "closes_at": "17:00"}],
             [{"freq": "WEEKLY", "byday": "SA,SU", "opens_at": "20:00", "closes_at": "02:00"}]]
NY = ZoneInfo("America/New_York")


@st.composite
def location(draw: Any, k: int) -> dict[str, Any]:
    loc: dict[str, Any] = {"id": f"loc-{draw(st.integers(0, 4))}", "name": draw(st.sampled_from(PLACES))}
    if draw(st.booleans()):  # coordinates given; otherwise the ZIP centroid (or nowhere, for an unknown ZIP)
        loc["latitude"] = round(42.2 + draw(st.integers(0, 40)) / 100, 4)
        loc["longitude"] = round(-71.2 + draw(st.integers(0, 40)) / 100, 4)
    loc["addresses"] = [{"address_1": f"{k} Main St", "city": "Chelsea", "state_province": "MA",
                         "postal_code": draw(st.sampled_from(ZIPS))}]
    if draw(st.booleans()):
        loc["external_identifier"] = draw(st.sampled_from(["rcs", "cfc", "main"]))
        loc["external_identifier_type"] = draw(st.sampled_from(["urn:ipv-sandbox:site", "urn:other"]))
    return {"location": loc}


@st.composite
def service(draw: Any, i: int) -> dict[str, Any]:
    phones = [{"number": n, "type": t} for n, t in draw(st.lists(
        st.tuples(st.sampled_from(PHONES), st.sampled_from(["voice", "pager", "text"])), min_size=1, max_size=2))]
    svc: dict[str, Any] = {
        "id": f"svc-{i}", "name": draw(st.sampled_from(PLACES + ORGS)),
        "organization": {"name": draw(st.sampled_from(ORGS))},
        "languages": [{"code": c} for c in draw(st.lists(st.sampled_from(["en", "es", "pt"]), max_size=2))],
        "phones": phones, "schedules": draw(st.sampled_from(SCHEDULES)),
        "attributes": [{"taxonomy_term": {"code": c, "name": n}}
                       for c, n in draw(st.lists(st.sampled_from(TERMS), max_size=2))],
        "service_at_locations": [draw(location(k)) for k in range(draw(st.integers(0, 2)))],
    }
    if draw(st.integers(0, 5)) == 0:
        svc["service_areas"] = [{"name": "Massachusetts"}]
    return svc


@st.composite
def visit(draw: Any) -> dict[str, Any]:
    locations = [{"id": draw(st.sampled_from(["loc-1", "x"])), "name": draw(st.sampled_from(PLACES + ["Elsewhere"])),
                  "identifiers": [{"system": draw(st.sampled_from(["urn:ipv-sandbox:site", "urn:other"])),
                                   "value": draw(st.sampled_from(["rcs", "cfc", "main"]))}],
                  "postalCode": draw(st.sampled_from(ZIPS))}
                 for _ in range(draw(st.integers(0, 1)))]
    org = {"id": "org", "name": draw(st.sampled_from(ORGS + ["Elsewhere"]))} if draw(st.booleans()) else None
    return {"context": {"encounter": {"id": "e", "locations": locations, "service_provider": org}},
            "safe_zip": draw(st.sampled_from([None, *ZIPS])),
            "needs": draw(st.lists(st.sampled_from(["legal", "shelter", "counselling", "sexual-assault"]),
                                   max_size=2)),
            "language": draw(st.sampled_from(["en", "es", "pt"])),
            "now": datetime(2026, 11, 23, tzinfo=NY) + timedelta(minutes=draw(st.integers(0, 7 * 24 * 60 - 1))),
            "limit": draw(st.sampled_from([3, 10]))}


def uncompacted(items: list[dict[str, Any]]) -> Directory:
    """The directory as the loader builds it before compaction: lists, sets, nothing shared."""
    c = Collector("t.json")
    services = [s for i, x in enumerate(items) if (s := parse_service(c, x, f"$[{i}]"))]
    for s in services:
        place_sites(s)
    assert not c.issues
    return Directory(services=services)


def outcome(r: Ranking) -> Any:
    return (r.site.id if r.site else None, r.site_service.id if r.site_service else None, r.origin, r.zip_code,
            r.zip_unknown, r.placed, r.holiday, [e.id for e in r.emergency],
            [(x.as_data(), x.reasons, x.on_site, x.open_now, x.distance, x.score, x.address(),
              x.site.id if x.site else None) for x in r.results],
            [(c.service.id, c.phone.dial(), c.state, c.closure) for c in r.call_now])


def scan_match(directory: Directory, context: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    """Site matching by scanning every service in order (what the old match tables meant)."""
    def site_has(site: Site, key: str) -> bool:
        return key in site.match.identifiers or (key.startswith("name:") and key[5:] in site.match.names)

    def serves(rules: MatchRules, key: str) -> bool:
        keys = {x if ("|" in x or "/" in x) else "name:" + x for x in (*rules.identifiers, *rules.organizations)}
        return key in keys | {"name:" + n for n in rules.names}

    listed: list[Service] = [s for s in directory.services if s.kind != "emergency"]
    visit = Visit.from_context(context)
    loc_keys, org_keys = visit.location_keys(), visit.organization_keys()
    for keys in (loc_keys, org_keys):
        for key in keys:
            for s in listed:
                for site in s.sites:
                    if site_has(site, key):
                        return site.id, s.id, True
        for key in keys:
            for s in listed:
                if serves(s.serves, key):
                    return None, s.id, False
    return None, None, False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(*[service(i) for i in range(n)])),
       st.lists(visit(), min_size=1, max_size=8))
def test_compact_directory_ranks_as_before(items, visits):
    items = list(items)
    before = uncompacted(items)
    compact = parse_hsds(items, "t.json", "America/New_York", "$")
    assert all(isinstance(s.phones, tuple) and isinstance(s.sites, tuple) for s in compact.services)
    old, new = DirectoryIndex(before), DirectoryIndex(compact)
    for v in visits:
        assert outcome(rank(new, for_launch(**v))) == outcome(rank(old, for_launch(**v)))
        site, svc, on_site = new.match_site(Visit.from_context(v["context"]))
        assert (site.id if site else None, svc.id if svc else None, on_site) == scan_match(compact, v["context"])


def test_equal_parts_are_shared_once_loaded():
    items = [{"id": f"s{i}", "name": f"Program {i}", "organization": {"name": "Org"},
              "phones": [{"number": "617-555-0100"}, {"number": "617-555-0199", "type": "pager"}],
              "schedules": [{"description": "24/7"}],
              "service_at_locations": [{"location": {"id": "l", "name": "Main Office", "latitude": 42.4,
                                                     "longitude": -71.0}}]} for i in range(3)]
    a, b, _ = parse_hsds(items, "t.json", "America/New_York", "$").services
    assert a.phones is b.phones and a.hours is b.hours and a.serves is b.serves and a.program is b.program
    assert a.sites[0].match is b.sites[0].match and a.source is b.source
    assert a.offers == () and a.sites[0] is not b.sites[0]  # sites stay each service's own (ids differ)


def norm_name_by_characters(name: str) -> str:
    """norm_name as it was written first, one character at a time."""
    out: list[str] = []
    for ch in name.lower().replace("’", "'"):
        if ch.isalnum():
            out.append(ch)
        elif out and out[-1] != " ":
            out.append(" ")
    return "".join(out).strip()


@settings(max_examples=300, deadline=None)
@given(st.text() | st.text(alphabet=st.sampled_from(list("aZ9 _-'’.İßﬁ١²Ⅻ\t\u0301"))))
def test_norm_name_keeps_its_meaning(name):
    # Names are match keys: a loaded directory and a launch must normalise them as they always did.
    assert norm_name(name) == norm_name_by_characters(name)
