"""Facts on the referral page: holidays, distance, no encounter, regional programs, "Call now"."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from referrals.closures import closure, holiday_name
from referrals.errors import DirectoryError
from referrals.geography import centroid, miles
from referrals.index import DirectoryIndex
from referrals.loaders import load_source
from referrals.ranking import RankingQuery, rank
from referrals.store import DEFAULT_DIRECTORY
from tests.conftest import default_context
from tests.referrals.test_ranking import encounter

for_launch = RankingQuery.for_launch  # the query of a launch context

NY = ZoneInfo("America/New_York")


def native_file(path, **fields):
    """A one-service directory in our YAML format with ``fields`` added to the service."""
    import yaml

    service = {"id": "svc", "program": "Test program", "name": {"en": "Test program"},
               "hours": {"weekly": [{"days": "MO-FR", "opens": "09:00", "closes": "17:00"}]},
               "phones": [{"number": "1-617-555-0100"}], **fields}
    path.write_text(yaml.safe_dump({"format": "ipv-directory/1", "services": [service]}))
    return path
TUE_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=NY)
TUE_7PM = datetime(2026, 11, 24, 19, 0, tzinfo=NY)
THANKSGIVING_10AM = datetime(2026, 11, 26, 10, 0, tzinfo=NY)


@pytest.fixture(scope="module")
def directory():
    return load_source(DEFAULT_DIRECTORY)


@pytest.fixture(scope="module")
def index(directory) -> DirectoryIndex:
    return DirectoryIndex(directory)


# -- holiday calendar ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "name"), [
    (date(2026, 11, 26), "Thanksgiving Day"),
    (date(2026, 4, 20), "Patriots' Day"),            # Massachusetts only
    (date(2026, 12, 25), "Christmas Day"),
    (date(2026, 7, 3), "Independence Day (observed)"),  # July 4 2026 is a Saturday: observed Friday
    (date(2027, 12, 24), "Christmas Day (observed)"),   # Dec 25 2027 is a Saturday
    (date(2027, 7, 5), "Independence Day (observed)"),  # July 4 2027 is a Sunday: observed Monday
])
def test_us_federal_and_massachusetts_holidays(day, name):
    assert holiday_name(day) == name


@pytest.mark.parametrize("day", [date(2026, 11, 24), date(2026, 11, 27), date(2026, 4, 21)])
def test_ordinary_days_are_not_holidays(day):
    assert holiday_name(day) is None


def test_patriots_day_is_massachusetts_not_federal():
    assert holiday_name(date(2026, 4, 20), ("US", None)) is None  # (a calendar the table does not hold)


def test_holiday_table_is_the_holidays_package_exactly():
    from referrals import closures

    assert closures.TABLE.read_text(encoding="utf-8") == closures.build_table(), \
        "holidays changed: run `python -m referrals.closures` to rebuild the table"
    for year in (2020, 2026, 2045):
        assert closures._calendar("US", "MA", year) == closures.package_calendar("US", "MA", year)
    assert closures._calendar("US", "MA", 2046) == closures.package_calendar("US", "MA", 2046)  # past the table


def test_holidays_package_is_not_loaded_for_the_default_calendar():
    import subprocess
    import sys

    code = ("import sys; from datetime import date; from referrals.closures import holiday_name; "
            "assert holiday_name(date(2026, 11, 26)) == 'Thanksgiving Day'; print('holidays' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_program_closures_from_the_directory_file_and_24_7_lines_never_close(directory):
    by = directory.by_id()
    passageway = replace(by["passageway"], closures={"2026-11-27": "Day after Thanksgiving"})
    assert closure(passageway, date(2026, 11, 27)) == "Day after Thanksgiving"
    assert closure(passageway, date(2026, 11, 26)) == "Thanksgiving Day"
    assert closure(passageway, date(2026, 11, 24)) is None
    assert closure(by["ma-safelink"], date(2026, 11, 26)) is None
    assert closure(replace(by["haven"], observes_holidays=False), date(2026, 11, 26)) is None


def test_closures_are_parsed_and_checked(tmp_path):
    d = load_source(native_file(tmp_path / "ok.yaml",
                                closures=[{"date": "2026-12-24", "note": "Christmas Eve"}, "2026-12-31"]))
    assert d.services[0].closures == {"2026-12-24": "Christmas Eve", "2026-12-31": ""}
    with pytest.raises(DirectoryError, match=r"closures\[0\].*not a date"):
        load_source(native_file(tmp_path / "bad.yaml", closures=["tomorrow"]))


@pytest.mark.parametrize(("now", "number", "state"), [
    (TUE_10AM, "1-617-732-8753", "open"),                  # weekday morning: the main line
    (TUE_7PM, "1-617-732-5520 ext. 31808", "after_hours"),  # weekday evening: the pager
    (THANKSGIVING_10AM, "1-617-732-5520 ext. 31808", "after_hours"),  # holiday morning: the pager
])
def test_call_now_is_the_site_programs_number_for_this_hour(index, now, number, state):
    r = rank(index, for_launch(context=default_context(encounter=encounter("bwh")), now=now))
    first = r.call_now[0]
    assert (first.service.id, first.phone.dial(), first.state) == ("passageway", number, state)
    assert r.call_now[1].service.id == "ma-safelink" and r.call_now[1].state == "always"
    assert len(r.call_now) == 2
    if now is THANKSGIVING_10AM:
        assert first.closure == "Thanksgiving Day" and r.holiday == "Thanksgiving Day"
        assert "Closed today (Thanksgiving Day)" in r.results[0].why
        assert "Open now" not in r.results[0].why


# -- distance ---------------------------------------------------------------------------------------------


def test_distance_is_from_the_zip_centroid_to_the_site_shown(index):
    """BWH (02115) for a patient who gave 02130: not 0.0 (the Faulkner site is in 02130)."""
    r = rank(index, for_launch(context=default_context(encounter=encounter("bwh")), safe_zip="02130", now=TUE_10AM))
    top = r.results[0]
    assert top.site.id == "passageway-bwh" and "02115" in top.address()
    expected = miles(centroid("02130"), (top.site.lat, top.site.lon))
    assert top.distance == pytest.approx(expected) and top.distance > 1.0
    assert f"{expected:.1f} miles from 02130" in top.why


def test_other_programs_distance_is_to_their_nearest_site(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("mgh")), safe_zip="02130", now=TUE_10AM))
    passageway = next(x for x in r.results if x.service.id == "passageway")
    assert passageway.site.id in ("passageway-faulkner", "passageway-sjphc", "passageway-brookside")
    assert passageway.distance == pytest.approx(miles(centroid("02130"), (passageway.site.lat, passageway.site.lon)))


@pytest.mark.parametrize(("key", "place"), [("bwh", "hospital"), ("bw-faulkner", "hospital"), ("mgh", "hospital"),
                                            ("sjphc", "health center"), ("mgh-chelsea", "health center")])
def test_on_site_says_hospital_or_health_center(index, key, place):
    r = rank(index, for_launch(context=default_context(encounter=encounter(key)), now=TUE_10AM))
    assert r.results[0].why[0] == f"On site at this {place}"
    others = [w for x in r.results[1:] for w in x.why if "miles from this" in w]
    assert others and all(w.endswith(f"miles from this {place}") for w in others)


# -- no encounter ------------------------------------------------------------------------------------------


def test_no_encounter_offers_the_default_programs_both_when_site_unknown(index):
    r = rank(index, for_launch(context=default_context(encounter=None), now=TUE_7PM,
                               default_programs=["passageway", "haven"]))
    assert not r.placed
    ids = [x.service.id for x in r.results]
    assert set(ids[:2]) == {"passageway", "haven"}
    for x in r.results[:2]:
        assert x.why[0] == "Program of this hospital system (the visit's site is not known)"
    pagers = {c.service.id: c.phone.dial() for c in r.call_now if c.state == "after_hours"}
    assert pagers == {"passageway": "1-617-732-5520 ext. 31808", "haven": "1-617-726-2241"}


def test_encounter_without_location_or_organization_counts_as_unknown(index):
    enc = encounter("bwh", with_location=False)
    enc["service_provider"] = {}
    r = rank(index, for_launch(context=default_context(encounter=enc), now=TUE_10AM,
                               default_programs=["passageway", "haven"]))
    assert {x.service.id for x in r.results[:2]} == {"passageway", "haven"}


def test_a_known_site_outside_the_network_gets_no_default_programs(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("baystate")), now=TUE_10AM,
                               default_programs=["passageway", "haven"]))
    assert r.placed and r.site_service is None
    assert not {"passageway", "haven"} & {x.service.id for x in r.results}


def test_without_default_programs_no_encounter_lists_hotlines_only(index):
    r = rank(index, for_launch(context=default_context(encounter=None), now=TUE_10AM))
    assert {x.service.id for x in r.results} <= {"ma-safelink", "national-dv-hotline", "barcc"}


# -- regional rules ----------------------------------------------------------------------------------------


def test_boston_rape_crisis_center_is_not_listed_for_springfield(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("baystate")), now=TUE_10AM,
                               needs=["sexual-assault"]))
    assert "barcc" not in {x.service.id for x in r.results}
    assert {"ma-safelink", "national-dv-hotline"} <= {x.service.id for x in rank(
        index, for_launch(context=default_context(encounter=encounter("baystate")), now=TUE_10AM)).results}


def test_boston_rape_crisis_center_is_listed_in_boston_and_for_a_boston_zip(index):
    r = rank(index, for_launch(context=default_context(encounter=encounter("bwh")), now=TUE_10AM,
                               needs=["sexual-assault"]))
    assert "barcc" in {x.service.id for x in r.results}
    far = rank(index, for_launch(context=default_context(encounter=encounter("bwh")), safe_zip="01103", now=TUE_10AM,
                                 needs=["sexual-assault"]))  # a Springfield ZIP the patient chose
    assert "barcc" not in {x.service.id for x in far.results}


def test_region_is_checked_when_loading(tmp_path):
    with pytest.raises(DirectoryError, match=r"region\.zip.*unknown ZIP"):
        load_source(native_file(tmp_path / "bad.yaml", region={"zip": "00000", "miles": 10}))
    with pytest.raises(DirectoryError, match=r"region\.miles"):
        load_source(native_file(tmp_path / "bad2.yaml", region={"zip": "02108"}))
