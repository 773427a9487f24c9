"""The ranking's order and reasons, recorded: fixed cases over three directories (Boston; Boston with its own
closures and per-site hours; Boston plus a generated HSDS directory) whose expected results are stored in
``tests/referrals/data/ranking/cases.jsonl``, plus properties that hold for any query on them: the order, the
points each reason earns (``RankingWeights``), the needs filter, and the number to call.

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

from referrals.index import MAX_MILES, NEED_BIT, DirectoryIndex
from referrals.loaders import load_source
from referrals.loaders.hsds import parse_hsds
from referrals.model import NEEDS, Hours, Interval
from referrals.ranking import NEED_SYNONYMS, WEIGHTS, Ranking, RankingQuery, RankingWeights, rank
from referrals.store import DEFAULT_DIRECTORY, merge
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


def ranking_query(query: dict[str, Any], **changes: Any) -> RankingQuery:
    """The RankingQuery of a stored or generated case (JSON: ``now`` in ISO form)."""
    return RankingQuery.for_launch(**{**query, "now": datetime.fromisoformat(query["now"]), **changes})


def run(index: DirectoryIndex, query: dict[str, Any], weights: RankingWeights = WEIGHTS) -> Ranking:
    return rank(index, ranking_query(query), weights=weights)


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


# -- properties of any ranking ----------------------------------------------------------------------------------
NAMES = ["boston", "boston-closures", "boston+hsds"]
POINTS = {"default_program": "default_program", "always": "open_now", "open_now": "open_now",
          "after_hours": "after_hours_pager", "speaks": "speaks_language", "interpreters": "interpreters"}


def needs_met(service_needs: Any, wanted: list[str]) -> int:
    """How many stated needs the service meets (an offer meets a need when it is one of the need's synonyms)."""
    wanted = [n for n in dict.fromkeys(wanted) if n in NEED_BIT]
    return sum(1 for n in wanted if any(x in service_needs for x in NEED_SYNONYMS.get(n, (n,))))


def points(result: Any, query: RankingQuery, weights: RankingWeights) -> float:
    """A result's score as the weights table reads: the points of each reason, the needs met, the miles off."""
    total = sum(getattr(weights, POINTS[r.code]) for r in result.reasons if r.code in POINTS)
    total += weights.per_need_met * needs_met(result.service.needs, list(query.needs))
    if result.distance is not None:
        total -= min(result.distance, MAX_MILES) * weights.per_mile
    s = result.service
    if s.kind == "hotline" or s.scope != "local" or not any(t.lat is not None for t in s.sites):
        total += weights.reachable_anywhere
    return total


def assert_ordered_scored_and_filtered(r: Ranking, query: RankingQuery) -> None:
    assert len(r.results) <= query.limit
    others = r.results[1:] if r.results and r.results[0].service is r.site_service else r.results
    assert all(x.service is not r.site_service for x in others)  # the visit's program, if listed, comes first
    keys = [(-x.score, x.distance or 0.0, x.service.id) for x in others]
    assert keys == sorted(keys)
    for x in r.results:
        assert x.score == pytest.approx(points(x, query, WEIGHTS))
        if x.service is not r.site_service and any(n in NEED_BIT for n in query.needs):
            assert needs_met(x.service.needs, list(query.needs)) > 0  # meets a stated need
        codes = [reason.code for reason in x.reasons]
        assert ("after_hours" in codes) == (x.call is not None and x.call.after_hours and x.open_now is False)
        assert any(c.startswith("distance_zip") for c in codes) <= (r.origin == "zip")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NAMES), st.randoms(use_true_random=False))
def test_every_ranking_is_ordered_scored_and_filtered_as_the_weights_say(name, rng):
    query = ranking_query(random_query(rng))
    assert_ordered_scored_and_filtered(rank(directories()[name], query), query)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(*[service(i) for i in range(n)])),
       st.lists(visit(), min_size=1, max_size=6), st.sampled_from([None, *SITE_MAPS]),
       st.sampled_from([[], *DEFAULT_PROGRAMS, ["svc-0", "svc-1"]]))
def test_a_generated_directory_ranks_as_the_weights_say(items, visits, site_map, default_programs):
    index = DirectoryIndex(parse_hsds(list(items), "t.json", "America/New_York", "$"))
    for v in visits:
        query = RankingQuery.for_launch(**v, site_map=site_map, default_programs=default_programs)
        assert_ordered_scored_and_filtered(rank(index, query), query)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(NAMES), st.randoms(use_true_random=False))
def test_a_heavier_weight_moves_what_earns_it_up(name, rng):
    query = ranking_query(random_query(rng), language=rng.choice(["es", "pt", "ht"]))
    index = directories()[name]
    heavy = rank(index, query, weights=RankingWeights(speaks_language=1000))
    others = [x for x in heavy.results if x.service is not heavy.site_service]
    speaks = ["speaks" in {reason.code for reason in x.reasons} for x in others]
    assert speaks == sorted(speaks, reverse=True)  # every program that speaks the language before any other


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(NAMES), st.randoms(use_true_random=False))
def test_a_time_without_zone_is_utc(name, rng):
    query = random_query(rng)
    naive = datetime.fromisoformat(query["now"]).replace(tzinfo=None)
    index = directories()[name]
    assert outcome(rank(index, ranking_query(query, now=naive))) == outcome(
        rank(index, ranking_query(query, now=naive.replace(tzinfo=UTC))))


if __name__ == "__main__":
    record()
    print(f"wrote {CASES} ({len(stored_cases())} cases) and {GENERATED}")
