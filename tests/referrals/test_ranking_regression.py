"""The ranking's order and reasons, recorded: fixed cases over three directories (Boston; Boston with its own
closures and per-site hours; Boston plus a generated HSDS directory) whose expected results are stored in
``tests/referrals/data/ranking/cases.jsonl``, plus properties that hold for any query.

A change that moves a result, a reason, a score or a call fails here. When the change is meant (a weight a
clinical lead changed, say), record the cases again and read the diff before committing it:
``python -m tests.referrals.test_ranking_regression``."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referrals.index import DirectoryIndex
from referrals.loaders import load_source
from referrals.loaders.hsds import parse_hsds
from referrals.model import NEEDS, Hours, Interval
from referrals.ranking import Ranking, rank
from referrals.store import DEFAULT_DIRECTORY, merge
from tests.referrals import frozen_ranking
from tests.referrals.test_compact import service, visit
from tests.referrals.test_ranking import SITES, encounter

DATA = Path(__file__).resolve().parent / "data" / "ranking"
CASES = DATA / "cases.jsonl"
GENERATED = DATA / "generated-hsds.json"
NY = ZoneInfo("America/New_York")
# ZIPs around the Boston sites and farther out (Springfield, Lynn), an unknown one and malformed ones.
ZIPS = ["02115", "02130", "02120", "02114", "02150", "02151", "02108", "02474", "01902", "01103", "01199",
        "00000", "0213", "02130-1234", " 02130 ", "abcde"]
LANGUAGES = ["en", "en", "es", "es-MX", "pt", "ht", "zh", "vi", "fr", "ar", "", "EN"]
SITE_MAPS = [{"urn:ipv-sandbox:site|bwh": "passageway-faulkner"}, {"Location/loc-mgh": "haven-chelsea"},
             {"name:elsewhere clinic": "haven-revere"}, {"urn:ipv-sandbox:site|mgh": "no-such-site"}]
DEFAULT_PROGRAMS = [["passageway", "haven"], ["haven"], ["gen-3", "no-such-program"]]
# Days the calendar or a program's own closures make special: Patriots' Day, July 4th (a Saturday: observed on
# the 3rd), Thanksgiving and the day after, Christmas Eve and Day.
SPECIAL_DAYS = ["2026-04-20", "2026-07-03", "2026-07-04", "2026-11-26", "2026-11-27", "2026-12-24", "2026-12-25"]
STATES = [("MA", 42.36, -71.06), ("MA", 42.10, -72.59), ("MA", 42.47, -70.95), ("NH", 42.99, -71.46)]


# -- directories ------------------------------------------------------------------------------------------------
def generated_hsds(n: int = 160, seed: int = 3) -> list[dict[str, Any]]:
    """HSDS 3.0 services around Boston, Springfield, Lynn and Manchester NH: programs with one or two sites,
    statewide and national hotlines, pagers, unknown and overnight hours, several languages."""
    rng = random.Random(seed)
    terms = [("legal", "Legal advocacy (209A)"), ("shelter", "Emergency shelter"), ("counseling", "Counseling"),
             ("sexual-assault", "Sexual assault services"), ("support-group", "Support groups"),
             ("safety-planning", "Safety planning"), ("housing", "Housing"), ("court", "Court accompaniment")]
    schedules = [[{"description": "24/7"}], [],
                 [{"freq": "WEEKLY", "byday": "MO,TU,WE,TH,FR", "opens_at": "09:00", "closes_at": "17:00"}],
                 [{"freq": "WEEKLY", "byday": "SA,SU", "opens_at": "20:00", "closes_at": "02:00"}],
                 [{"freq": "WEEKLY", "byday": "MO,WE,FR", "opens_at": "08:30", "closes_at": "19:30"}]]
    out = []
    for i in range(n):
        svc: dict[str, Any] = {
            "id": f"gen-{i}", "name": f"Program {i}", "status": "active",
            "organization": {"id": f"org-{i // 4}", "name": f"Organization {i // 4}"},
            "languages": [{"code": c} for c in rng.sample(["en", "es", "pt", "ht", "zh", "vi"], rng.randint(0, 3))],
            "phones": [{"number": f"617-555-{i:04d}", "type": "voice"}],
            "schedules": rng.choice(schedules),
            "attributes": [{"taxonomy_term": {"code": c, "name": n}} for c, n in rng.sample(terms, rng.randint(0, 3))],
        }
        if rng.random() < 0.3:
            svc["phones"].append({"number": f"617-556-{i:04d}", "type": "pager", "description": "After hours pager"})
        if rng.random() < 0.15:
            svc["description"] = "Interpreters available for every language."
        kind = rng.random()
        if kind < 0.06:
            svc["service_areas"] = [{"name": "Massachusetts"}]
            svc["attributes"].append({"taxonomy_term": {"code": "hotline", "name": "Crisis hotline"}})
        elif kind < 0.09:
            svc["service_areas"] = [{"extent_type": "national", "name": "United States"}]
        else:
            sites = []
            for k in range(rng.choice([1, 1, 1, 2, 0])):
                _, lat, lon = rng.choice(STATES)
                loc: dict[str, Any] = {"id": f"loc-{i}-{k}", "name": f"Site {i}-{k}",
                                       "addresses": [{"address_1": f"{i} Main St", "city": "Somewhere",
                                                      "state_province": "MA", "postal_code": rng.choice(ZIPS[:11])}]}
                if rng.random() < 0.8:
                    loc["latitude"] = round(lat + rng.uniform(-0.25, 0.25), 5)
                    loc["longitude"] = round(lon + rng.uniform(-0.25, 0.25), 5)
                if rng.random() < 0.2:
                    loc["external_identifier"], loc["external_identifier_type"] = f"gen-site-{i}", "urn:gen"
                sites.append({"location": loc})
            svc["service_at_locations"] = sites
        out.append(svc)
    return out


def boston_with_closures():
    """Boston, with what its YAML does not exercise: a program's own closed days (one with an empty note), a
    program that keeps its hours on public holidays, a site with its own hours and a site whose hours are
    unknown."""
    directory = load_source(DEFAULT_DIRECTORY)
    by_id = directory.by_id()
    by_id["passageway"].closures = {"2026-11-27": "Day after Thanksgiving", "2026-12-24": ""}
    by_id["haven"].observes_holidays = False
    for program in (by_id["passageway"], by_id["haven"]):
        for site in program.sites:
            if site.id == "passageway-faulkner":
                site.hours = Hours(weekly=[Interval(("SA",), 10 * 60, 14 * 60)])
            elif site.id == "haven-revere":
                site.hours = Hours.unknown()
    return directory


@cache
def directories() -> dict[str, DirectoryIndex]:
    return {"boston": DirectoryIndex(load_source(DEFAULT_DIRECTORY)),
            "boston-closures": DirectoryIndex(boston_with_closures()),
            "boston+hsds": DirectoryIndex(merge([load_source(DEFAULT_DIRECTORY), load_source(GENERATED)]))}


# -- queries ----------------------------------------------------------------------------------------------------
def random_context(rng: random.Random) -> dict[str, Any] | None:
    choice = rng.randrange(12)
    key = rng.choice(list(SITES))
    if choice == 0:
        return None
    if choice == 1:
        return {"encounter": None}
    if choice == 2:
        return {"encounter": {"id": "e", "locations": [], "service_provider": None}}
    if choice == 3:  # a place the directory does not know
        return {"encounter": {"id": "e", "locations": [{"id": "x", "name": "Elsewhere Clinic", "identifiers": [],
                                                         "postalCode": rng.choice(ZIPS + [None])}],
                              "service_provider": None}}
    if choice == 4:  # a generated site, by name or by its external identifier
        i = rng.randrange(160)
        ident = [{"system": "urn:gen", "value": f"gen-site-{i}"}] if rng.random() < 0.5 else []
        return {"encounter": {"id": "e", "locations": [{"id": "g", "name": f"Site {i}-0", "identifiers": ident,
                                                         "postalCode": None}], "service_provider": None}}
    if choice == 5:  # an organization only, possibly a generated one
        name = rng.choice([f"Organization {rng.randrange(40)}", "Massachusetts General Hospital", "Nowhere Inc"])
        return {"encounter": {"id": "e", "locations": [], "service_provider": {"id": "o", "name": name,
                                                                                "identifiers": []}}}
    enc = encounter(key, with_identifier=choice != 6, with_location=choice != 7)
    if choice == 8:
        enc["locations"][0]["id"] = "some-real-ehr-id"
        enc["locations"][0]["postalCode"] = None
    return {"encounter": enc}


def random_query(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.3:
        day = datetime.fromisoformat(rng.choice(SPECIAL_DAYS))
        now = day + timedelta(minutes=rng.randrange(24 * 60))
    else:
        now = datetime(2026, 1, 1) + timedelta(minutes=rng.randrange(365 * 24 * 60))
    zone = rng.random()
    now = now.replace(tzinfo=NY) if zone < 0.7 else now.replace(tzinfo=UTC) if zone < 0.85 else now
    needs = rng.sample([*NEEDS, "legal", "shelter", "counselling", "sexual-assault", "bogus"], rng.randint(0, 3))
    if needs and rng.random() < 0.1:
        needs.append(needs[0])
    return {"context": random_context(rng), "safe_zip": rng.choice(ZIPS) if rng.random() < 0.6 else None,
            "needs": needs, "language": rng.choice(LANGUAGES), "now": now.isoformat(),
            "limit": rng.choice([3, 10, 20]), "site_map": rng.choice(SITE_MAPS) if rng.random() < 0.15 else None,
            "default_programs": rng.choice(DEFAULT_PROGRAMS) if rng.random() < 0.3 else []}


def run(index: DirectoryIndex, query: dict[str, Any]) -> Ranking:
    q = dict(query, now=datetime.fromisoformat(query["now"]))
    return rank(index, **q)


def outcome(r: Ranking) -> dict[str, Any]:
    """Everything a page or the handout reads of a ranking, as JSON."""
    return {"site": r.site.id if r.site else None, "site_service": r.site_service.id if r.site_service else None,
            "origin": r.origin, "zip_code": r.zip_code, "zip_unknown": r.zip_unknown, "placed": r.placed,
            "holiday": r.holiday, "emergency": [s.id for s in r.emergency],
            "results": [[x.service.id, x.site.id if x.site else None, x.on_site, x.open_now, x.distance, x.score,
                         x.call.dial() if x.call else None, x.address(),
                         [[reason.code, reason.params] for reason in x.reasons]] for x in r.results],
            "call_now": [[c.service.id, c.phone.dial(), c.state, c.closure] for c in r.call_now]}


def record(per_directory: int = 70, seed: int = 19) -> None:
    """Write the generated directory and the expected outcome of every case, from the ranking as it is now."""
    DATA.mkdir(parents=True, exist_ok=True)
    GENERATED.write_text(json.dumps(generated_hsds(), separators=(",", ":")) + "\n")
    directories.cache_clear()
    rng = random.Random(seed)
    lines = []
    for name, index in directories().items():
        for _ in range(per_directory):
            query = random_query(rng)
            case = {"directory": name, "query": query, "expected": outcome(run(index, query))}
            lines.append(json.dumps(case, separators=(",", ":"), ensure_ascii=False))
    CASES.write_text("\n".join(lines) + "\n", encoding="utf-8")


def stored_cases() -> list[dict[str, Any]]:
    if not CASES.exists():  # not recorded yet (``record`` imports this module first)
        return []
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines()]


# -- the recorded cases -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", stored_cases(), ids=lambda c: f"{c['directory']}-{c['query']['now']}")
def test_recorded_case_ranks_as_recorded(case):
    assert outcome(run(directories()[case["directory"]], case["query"])) == case["expected"]


def test_recorded_cases_cover_what_the_ranking_distinguishes():
    # The recording is only a guard if its cases reach every reason, origin and call state.
    cases = stored_cases()
    seen = {code for c in cases for x in c["expected"]["results"] for code, _ in x[8]}
    assert seen == {"on_site", "on_site_health_center", "serves_site", "default_program", "holiday", "always",
                    "open_now", "after_hours", "closed", "speaks", "interpreters", "needs", "distance_zip",
                    "distance_site", "distance_site_health_center"}
    assert {c["expected"]["origin"] for c in cases} == {"zip", "site", "none"}
    assert {state for c in cases for _, _, state, _ in c["expected"]["call_now"]} >= {"open", "after_hours",
                                                                                       "always"}
    assert any(c["expected"]["zip_unknown"] for c in cases) and any(c["expected"]["holiday"] for c in cases)
    assert any(closed for c in cases for *_, closed in c["expected"]["call_now"])


# -- against the ranking as it was (while it is being split up) -------------------------------------------------
@cache
def frozen_directories() -> dict[str, frozen_ranking.DirectoryIndex]:
    return {name: frozen_ranking.DirectoryIndex(index.directory) for name, index in directories().items()}


def frozen_run(index: frozen_ranking.DirectoryIndex, query: dict[str, Any]) -> Any:
    return frozen_ranking.rank(index, **dict(query, now=datetime.fromisoformat(query["now"])))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["boston", "boston-closures", "boston+hsds"]), st.randoms(use_true_random=False))
def test_ranks_as_the_frozen_ranking(name, rng):
    query = random_query(rng)
    assert outcome(run(directories()[name], query)) == outcome(frozen_run(frozen_directories()[name], query))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(*[service(i) for i in range(n)])),
       st.lists(visit(), min_size=1, max_size=6), st.sampled_from([None, *SITE_MAPS]),
       st.sampled_from([[], *DEFAULT_PROGRAMS, ["svc-0", "svc-1"]]))
def test_generated_directory_ranks_as_the_frozen_ranking(items, visits, site_map, default_programs):
    directory = parse_hsds(list(items), "t.json", "America/New_York", "$")
    new, old = DirectoryIndex(directory), frozen_ranking.DirectoryIndex(directory)
    for v in visits:
        query = dict(v, now=v["now"].isoformat(), site_map=site_map, default_programs=default_programs)
        assert outcome(run(new, query)) == outcome(frozen_run(old, query))


if __name__ == "__main__":
    record()
    print(f"wrote {CASES} ({len(stored_cases())} cases) and {GENERATED}")
