"""Program report: the measures (screens, positives, consented referrals, warm hand-offs, first contact within the
due time and its median, per site and team, with rates) over HTTP for seeded events and referrals; suppression that
no combination of shown numbers, in any view, undoes (an exact solver as the attacker, and a hypothesis property over
generated counts); only closed periods; 200 synthetic journeys against an independent tally; role-gated."""

from __future__ import annotations

import csv
import dataclasses
import io
import random
import re
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from config.current import replace_settings
from smart_app.report import measures as ms
from smart_app.report import periods as pd
from smart_app.report import suppress as sp
from smart_app.report import tables as rpt
from smart_app.report.events import month_of
from smart_app.store.models import OutboxItem, ReferralDims, ReferralEvent, ReferralRecord, ReportEvent
from tests.conftest import default_context, store_launch
from tests.report.support import Published, recovered

pytestmark = [pytest.mark.report, pytest.mark.handoff]

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # December is open: November and earlier are closed
TEAMS = {"routing": {"teams": [{"id": "passageway-bwh", "name": "Passageway's social work team at BWH",
                                "sites": ["urn:ipv-sandbox:site|bwh"]},
                               {"id": "on-call", "name": "the social-work team on call", "fallback": True}]},
         "report": {"site_names": {"mgh": "Massachusetts General Hospital"}}}


# ---------------------------------------------------------------------------- the attacker, on the engine


def truth_of(grid: sp.Grid, counts: sp.Counts) -> dict[tuple, int]:
    """Every published cell's true value, added up here without the report's code."""
    out = {}
    for measure in grid.measures:
        for row in grid.rows(measure):
            for period in grid.periods:
                out[(measure.name, row, period.id)] = sum(
                    n for (site, team), by_month in counts.get(measure.name, {}).items()
                    if row == sp.ALL or (site == row[1] and (row[0] == "site" or team == row[2]))
                    for month, n in by_month.items() if period.holds(month))
    return out


def published(grid: sp.Grid, result: sp.Result) -> Published:
    pub = Published(periods={p.id: p for p in grid.periods}, teams={s: set(t) for s, t in grid.teams.items()})
    for measure in grid.measures:
        for row in grid.rows(measure):
            for period in grid.periods:
                pub.cells[(measure.name, row, period.id)] = result.shown(measure.name, row, period.id)
    return pub


def run(teams: dict[str, tuple[str, ...]], counts: sp.Counts, now: datetime = NOW) -> tuple[sp.Grid, sp.Result]:
    first = min(m for per in counts.values() for by in per.values() for m in by)
    grid = sp.Grid(ms.MEASURES, teams, tuple(pd.offered(first, now)))
    return grid, sp.suppress(grid, counts, ms.DERIVED)


def month(key: str) -> int:
    return pd.month_number(key)


def test_primary_suppression_hides_1_to_10_and_shows_0_and_11():
    counts = {ms.SCREENS: {("bwh", ""): {month("2026-11"): 11}, ("mgh", ""): {month("2026-11"): 40}},
              ms.POSITIVES: {("bwh", ""): {month("2026-11"): 0}, ("mgh", ""): {month("2026-11"): 29}}}
    grid, result = run({"bwh": (), "mgh": ()}, counts)
    assert result.shown(ms.SCREENS, ("site", "bwh"), "month:2026-11") == 11
    assert result.shown(ms.POSITIVES, ("site", "bwh"), "month:2026-11") == 0
    # mgh: 40 screens, 29 positive, so 11 negative: shown; bwh's 11 negatives too
    assert result.shown(ms.POSITIVES, ("site", "mgh"), "month:2026-11") == 29
    assert recovered(published(grid, result), truth_of(grid, counts)) == []


def test_a_difference_of_two_shown_columns_is_suppressed_like_a_cell():
    # 30 hand-offs offered, 24 completed: 6 offered and not completed, which the two columns would give away.
    leaf = ("bwh", "passageway-bwh")
    counts = {ms.REFERRALS: {leaf: {month("2026-11"): 60}}, ms.HANDOFF_OFFERED: {leaf: {month("2026-11"): 30}},
              ms.HANDOFF_COMPLETED: {leaf: {month("2026-11"): 24}}}
    grid, result = run({"bwh": ("passageway-bwh",)}, counts)
    row = ("team", "bwh", "passageway-bwh")
    offered = result.shown(ms.HANDOFF_OFFERED, row, "month:2026-11")
    completed = result.shown(ms.HANDOFF_COMPLETED, row, "month:2026-11")
    assert offered is None or completed is None
    assert result.shown(ms.REFERRALS, row, "month:2026-11") == 60
    assert recovered(published(grid, result), truth_of(grid, counts)) == []


def test_a_month_cannot_be_recovered_from_its_quarter_or_12_months():
    # July 20, August 20, September 5: the quarter minus two shown months would give September.
    leaf = ("bwh", "")
    counts = {ms.SCREENS: {leaf: {month("2026-07"): 20, month("2026-08"): 20, month("2026-09"): 5}}}
    grid, result = run({"bwh": ()}, counts)
    assert result.shown(ms.SCREENS, ("site", "bwh"), "month:2026-09") is None
    shown = [result.shown(ms.SCREENS, ("site", "bwh"), k) for k in ("month:2026-07", "month:2026-08",
                                                                   "quarter:2026-Q3")]
    assert None in shown
    # The 12 months to September and to October hold the same three months.
    assert recovered(published(grid, result), truth_of(grid, counts)) == []


def test_the_attacker_finds_what_primary_suppression_alone_leaves():
    """The check has teeth: hiding only the cells of 1 to 10 leaves September recoverable by subtraction."""
    leaf = ("bwh", "")
    counts = {ms.SCREENS: {leaf: {month("2026-07"): 20, month("2026-08"): 20, month("2026-09"): 5}}}
    grid, result = run({"bwh": ()}, counts)
    primary = sp.Result(result.values, {c for c, v in result.values.items() if sp.sensitive(v)})
    found = recovered(published(grid, primary), truth_of(grid, counts))
    assert ("recovered", ms.SCREENS, ("site", "bwh"), "month:2026-09", 5) in found


def test_rolling_windows_cannot_be_differenced():
    # Each month of a small team (4 referrals) is hidden; consecutive 12-month windows differ by one month in and
    # one out, and the windows at the start hold fewer months: neither may give a month back.
    counts = {ms.REFERRALS: {("bwh", "t"): {m: 4 for m in range(month("2025-01"), month("2026-12"))},
                             ("bwh", "u"): {m: 30 for m in range(month("2025-01"), month("2026-12"))}}}
    grid, result = run({"bwh": ("t", "u")}, counts)
    assert result.shown(ms.REFERRALS, ("team", "bwh", "t"), "rolling:2026-11") == 48  # the year is shown
    assert recovered(published(grid, result), truth_of(grid, counts)) == []


SITES_ST = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)


@st.composite
def generated(draw) -> tuple[dict[str, tuple[str, ...]], sp.Counts, datetime]:
    sites = draw(SITES_ST)
    teams = {s: tuple(sorted(draw(st.sets(st.sampled_from(["t1", "t2"]), min_size=1, max_size=2)))) for s in sites}
    now = draw(st.sampled_from([NOW, datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 2, 15, tzinfo=UTC)]))
    span = draw(st.integers(min_value=1, max_value=15))
    last = pd.current_month(now)
    value = st.one_of(st.just(0), st.integers(min_value=1, max_value=10), st.integers(min_value=11, max_value=60))
    counts: sp.Counts = {}
    for measure in ms.MEASURES:
        for site in sites:
            for team in (teams[site] if measure.by_team else ("",)):
                start = last - span + draw(st.integers(min_value=0, max_value=span))  # sites and teams come later
                for m in range(start, last + 1):  # the open month too: it is never shown
                    n = draw(value)
                    if n:
                        counts.setdefault(measure.name, {}).setdefault((site, team), {})[m] = n
    if not counts:
        counts = {ms.SCREENS: {(sites[0], ""): {last - 1: 3}}}
    return teams, counts, now


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated())
def test_no_suppressed_count_is_recovered_from_any_combination_of_views(case):
    """Months, quarters and 12-month windows, every site and team, all at once: no count of 1 to 10 (a cell or a
    difference of two columns) is determined by the numbers shown, and every shown number is true."""
    teams, counts, now = case
    if not any(m < pd.current_month(now) for per in counts.values() for by in per.values() for m in by):
        return  # only the open month has data: nothing is offered
    grid, result = run(teams, counts, now)
    assert recovered(published(grid, result), truth_of(grid, counts)) == []


def snapshot(teams: dict[str, tuple[str, ...]], counts: sp.Counts, closed: int) -> tuple[sp.Grid, sp.Result] | None:
    """The report as it was read when month ``closed`` had just closed: what was counted by then, the sites and
    teams it had rows for."""
    past = {m: {leaf: {mo: n for mo, n in by.items() if mo <= closed + 1} for leaf, by in per.items()}
            for m, per in counts.items()}
    seen = {leaf for per in past.values() for leaf, by in per.items() if any(n for mo, n in by.items() if mo <= closed)}
    if not seen:
        return None
    sites = {site for site, _team in seen}
    now = datetime((closed + 1) // 12, (closed + 1) % 12 + 1, 1, tzinfo=UTC)
    return run({s: tuple(t for t in teams[s] if (s, t) in seen) for s in sites}, past, now)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated())
def test_a_number_once_shown_stays_shown_and_a_hidden_one_stays_hidden_as_months_close(case):
    """Copies of the report kept from earlier months add nothing: while the counts of closed months do not change,
    every cell of an earlier month's report reads the same in the latest one."""
    teams, counts, now = case
    last = pd.current_month(now) - 1
    months = [m for per in counts.values() for by in per.values() for m in by if m <= last]
    if not months:
        return
    _grid, latest = run(teams, counts, now)
    for closed in range(min(months), last):
        earlier = snapshot(teams, counts, closed)
        if earlier is None:
            continue
        grid, result = earlier
        for measure in grid.measures:
            for row in grid.rows(measure):
                for period in grid.periods:
                    assert result.shown(measure.name, row, period.id) == latest.shown(measure.name, row, period.id), (
                        pd.month_key(closed), measure.name, row, period.id)


def decided(result: sp.Result) -> tuple:
    """Everything a decision says: values, hidden cells and every witness as it ended."""
    return (result.values, result.hidden, [(w.measure, w.leaves, w.months, w.rows, w.periods, w.yearly)
                                           for w in result.witnesses])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated(), st.data())
def test_a_decision_resumed_from_the_first_month_that_changed_is_the_one_made_afresh(case, data):
    """Late changes to closed months' counts (a count up, down, to zero or from zero, one month or several):
    the replay resumed from the earlier decision decides what a replay from the first month decides (also when the
    first month with data moves: then it starts over), and again when resumed from that one."""
    teams, counts, now = case
    last = pd.current_month(now) - 1
    months = sorted({m for per in counts.values() for by in per.values() for m in by if m <= last})
    if not months:
        return
    grid, _result = run(teams, counts, now)
    result, replay = sp.suppress_from(grid, counts, ms.DERIVED, None)
    assert decided(result) == decided(sp.suppress(grid, counts, ms.DERIVED))
    for _step in range(2):
        changed = {m: {leaf: dict(by) for leaf, by in per.items()} for m, per in counts.items()}
        for _change in range(data.draw(st.integers(min_value=1, max_value=3))):
            name = data.draw(st.sampled_from(sorted(changed)))
            leaf = data.draw(st.sampled_from(sorted(changed[name])))
            month_changed = data.draw(st.sampled_from(months))
            changed[name][leaf][month_changed] = data.draw(st.sampled_from([0, 1, 5, 10, 11, 40]))
        new_grid, _result = run(teams, changed, now) if any(
            n for per in changed.values() for by in per.values() for m, n in by.items() if m <= last) else (None, None)
        if new_grid is None:
            return
        result, replay = sp.suppress_from(new_grid, changed, ms.DERIVED, replay)
        assert decided(result) == decided(sp.suppress(new_grid, changed, ms.DERIVED))
        counts, grid = changed, new_grid


# ---------------------------------------------------------------------------- seeded store, over HTTP

SITES = ("bwh", "mgh", "mgh-chelsea")


def context_for(site: str, lang: str, roles: list[str] | None = None) -> dict[str, Any]:
    ctx = default_context()
    ctx["patient"] = dict(ctx["patient"], id="pat-" + secrets.token_hex(6), language=lang, languages=[lang])
    ctx["encounter"] = dict(ctx["encounter"], locations=[{
        "id": f"loc-{site}", "name": site, "identifiers": [{"system": "urn:ipv-sandbox:site", "value": site}]}])
    if roles:
        ctx["user"] = dict(ctx["user"], roles=roles)
    return ctx


def client_with_launch(app, context: dict[str, Any]):
    client = app.test_client()
    # Each journey is another workstation: the per-address rate limit (RATELIMIT_ACTIONS) is per clinician.
    client.environ_base["REMOTE_ADDR"] = "10.{}.{}.{}".format(*secrets.token_bytes(3))
    bid = secrets.token_urlsafe(24)
    lid = store_launch(app, bid=bid, context=context, iss="http://127.0.0.1:9/fhir")
    with client.session_transaction() as sess:
        sess["bid"] = bid
    return client, lid


@pytest.fixture
def report_app(app):
    replace_settings(app, **TEAMS)
    app.config["REPORT_CLOCK"] = lambda: NOW
    return app


def pm_client(app):
    return client_with_launch(app, context_for("bwh", "en", roles=["program_manager"]))


def seed_events(app, month_key: str, site: str, kind: str, n: int) -> None:
    with app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        db.add_all([ReportEvent(month=month_key, site=site, kind=kind, instrument="hits", language="en")
                    for _ in range(n)])
        db.commit()


@dataclasses.dataclass
class Seed:
    site: str
    site_name: str | None
    team: str | None
    route_kind: str
    created: datetime
    urgent: bool = False
    handoff: str | None = None
    contact_after_hours: float | None = None
    closing: str | None = None
    due_after_hours: float | None = None


def seed_referrals(app, seeds: list[Seed]) -> None:
    with app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        for s in seeds:
            rid = secrets.token_hex(8)
            contact = s.created + timedelta(hours=s.contact_after_hours) if s.contact_after_hours is not None else None
            due = s.created + timedelta(hours=s.due_after_hours) if s.due_after_hours is not None else None
            db.add(ReferralRecord(id=rid, iss="http://127.0.0.1:9/fhir", profile="sandbox", site=s.site,
                                  site_name=s.site_name, urgent=s.urgent, handoff=s.handoff,
                                  status="completed" if s.closing else "requested", closing_outcome=s.closing,
                                  created_at=s.created, first_contact_at=contact, due_at=due,
                                  route_kind=s.route_kind, route_team=s.team))
            db.flush()
            db.add(ReferralDims(referral_id=rid, month=month_of(s.created), site=s.site, instrument="hits",
                                language="en"))
        db.commit()


def csv_rows(client, lid: str, view: str, period: str) -> dict[str, dict[str, str]]:
    resp = client.get(f"/l/{lid}/report.csv?view={view}&period={period}")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    return {":".join(filter(None, (r["level"], r["site"], r["team"]))): r
            for r in csv.DictReader(io.StringIO(resp.get_data(as_text=True)))}


def october_bwh() -> list[Seed]:
    """bwh in October 2026: 40 referrals to Passageway's team; 24 hand-offs offered, 12 completed; 25 routine
    referrals contacted after 1..25 hours (in time), 10 urgent ones after 30..39 hours (late: urgent is 24 h),
    5 never contacted; 15 closed reached and supported, 12 reached and declined, 13 still open."""
    start = datetime(2026, 10, 5, 10, tzinfo=UTC)
    seeds = []
    for i in range(40):
        handoff = "spoke_now" if i < 12 else "left_message" if i < 18 else "offered" if i < 24 else None
        hours = float(i + 1) if i < 25 else float(i + 5) if i < 35 else None
        closing = "reached_supported" if i < 15 else "reached_declined" if i < 27 else None
        seeds.append(Seed("bwh", "Brigham and Women's Hospital", "passageway-bwh", "coverage",
                          start + timedelta(hours=i), urgent=25 <= i < 35, handoff=handoff, contact_after_hours=hours,
                          closing=closing))
    return seeds


def test_measures_rates_and_names_for_seeded_events_and_referrals(report_app):
    app = report_app
    seed_events(app, "2026-10", "bwh", "completed", 120)
    seed_events(app, "2026-10", "bwh", "positive", 55)
    seed_events(app, "2026-10", "mgh", "completed", 60)
    seed_events(app, "2026-10", "mgh", "positive", 22)
    seed_events(app, "2026-10", "mgh", "card_shown", 30)
    seed_events(app, "2026-10", "mgh", "card_accepted", 12)
    seed_referrals(app, october_bwh())
    client, lid = pm_client(app)
    rows = csv_rows(client, lid, "month", "2026-10")
    bwh, team, mgh, total = rows["site:bwh"], rows["team:bwh:passageway-bwh"], rows["site:mgh"], rows["all"]
    assert (bwh["screens"], bwh["positives"], bwh["referrals"]) == ("120", "55", "40")
    assert (bwh["handoff_offered"], bwh["handoff_completed"], bwh["contacted_in_time"]) == ("24", "12", "25")
    assert team["referrals"] == "40" and team["screens"] == ""  # screens are counted per site only
    assert (bwh["positive_rate"], bwh["referral_rate"], bwh["handoff_rate"], bwh["in_time_share"]) == (
        "0.458", "0.727", "0.500", "0.625")
    assert bwh["median_hours_to_first_contact"] == "18.0"  # 35 contacted: 1..25 and 30..39 hours
    assert (bwh["closed_reached_supported"], bwh["closed_reached_declined"], bwh["closed_unreachable"]) == (
        "15", "12", "0")
    assert (mgh["screens"], mgh["positives"], mgh["referrals"]) == ("60", "22", "0")
    assert (mgh["cards_shown"], mgh["cards_accepted"]) == ("30", "12")
    assert (total["screens"], total["positives"], total["referrals"]) == ("180", "77", "40")
    html = client.get(f"/l/{lid}/report?view=month&period=2026-10").get_data(as_text=True)
    assert "Brigham and Women&#39;s Hospital" in html and "Massachusetts General Hospital" in html
    assert "Passageway&#39;s social work team at BWH" in html
    assert ">bwh<" not in html and "pat-" not in html
    assert "46%" in html and "73%" in html  # positive rate, referral rate
    # The same October in the 12 months to November and in the month of November (nothing happened).
    rolling = csv_rows(client, lid, "rolling", "2026-11")
    assert rolling["site:bwh"]["referrals"] == "40" and rolling["site:bwh"]["median_hours_to_first_contact"] == "18.0"
    assert csv_rows(client, lid, "month", "2026-11")["site:bwh"]["referrals"] == "0"
    cli = app.test_cli_runner().invoke(args=["report", "--view", "month", "--period", "2026-10"])
    assert cli.exit_code == 0, cli.output
    assert cli.output == client.get(f"/l/{lid}/report.csv?view=month&period=2026-10").get_data(as_text=True)


def test_a_referrals_own_due_time_decides_whether_it_was_contacted_in_time(report_app):
    """Urgent referrals first contacted after 30 hours: late against the deployment's 24 urgent hours when made
    before due times; in time when their stored due time (counted in the program's hours) was 48 hours on."""
    when = datetime(2026, 11, 2, 9, tzinfo=UTC)
    seed_referrals(report_app, [Seed("bwh", "BWH", "passageway-bwh", "coverage", when, urgent=True,
                                     contact_after_hours=30.0, due_after_hours=48.0) for _ in range(12)]
                   + [Seed("mgh", "MGH", "on-call", "fallback", when, urgent=True, contact_after_hours=30.0)
                      for _ in range(12)])
    client, lid = pm_client(report_app)
    rows = csv_rows(client, lid, "month", "2026-11")
    assert rows["site:bwh"]["contacted_in_time"] == "12" and rows["site:bwh"]["in_time_share"] == "1.000"
    assert rows["site:mgh"]["contacted_in_time"] == "0" and rows["site:mgh"]["in_time_share"] == "0.000"
    assert rows["site:mgh"]["median_hours_to_first_contact"] == "30.0"


def test_referrals_routed_to_no_named_team_are_counted_under_what_their_route_was(report_app):
    app = report_app
    when = datetime(2026, 9, 3, 12, tzinfo=UTC)
    seed_referrals(app, [Seed("mgh", None, None, "unrouted", when + timedelta(minutes=i)) for i in range(12)]
                   + [Seed("mgh", None, "on-call", "fallback", when) for _ in range(15)])
    client, lid = pm_client(app)
    rows = csv_rows(client, lid, "quarter", "2026-Q3")
    assert rows["team:mgh:~unrouted"]["referrals"] == "12" and rows["team:mgh:on-call"]["referrals"] == "15"
    html = client.get(f"/l/{lid}/report?view=quarter&period=2026-Q3").get_data(as_text=True)
    assert "Unrouted queue" in html and "the social-work team on call" in html


def small_sites_over_a_year(app) -> dict[tuple, int]:
    """Eleven months of three sites: bwh busy, mgh middling, chelsea small (a few a month); the truth of every
    cell the report offers, added up here."""
    rng = random.Random(11)
    seeds: list[Seed] = []
    events: Counter = Counter()
    for m in range(month("2026-01"), month("2026-12")):
        key = pd.month_key(m)
        for site, team, scale in (("bwh", "passageway-bwh", 30), ("mgh", "on-call", 12), ("chelsea", "on-call", 3)):
            screens = scale * 3 + rng.randint(0, 4)
            positives = scale + rng.randint(0, 3)
            events[(key, site, "completed")] += screens
            events[(key, site, "positive")] += positives
            events[(key, site, "card_shown")] += scale * 2
            events[(key, site, "card_accepted")] += scale + rng.randint(0, 2)
            created = datetime(m // 12, m % 12 + 1, 10, tzinfo=UTC)
            for i in range(positives // 2 + rng.randint(0, 2)):  # about half consent to a referral
                seeds.append(Seed(site, site.upper(), team, "coverage", created + timedelta(hours=i),
                                  urgent=rng.random() < 0.3,
                                  handoff=rng.choice([None, None, "offered", "spoke_now", "spoke_now", "spoke_now"]),
                                  contact_after_hours=rng.choice([None, 5.0, 30.0, 100.0]),
                                  closing=rng.choice([None, "reached_supported", "reached_supported", "unreachable"])))
    for (key, site, kind), n in events.items():
        seed_events(app, key, site, kind, n)
    seed_referrals(app, seeds)
    counts: sp.Counts = {}
    for (key, site, kind), n in events.items():
        counts.setdefault(ms.EVENT_KINDS[kind], {}).setdefault((site, ""), {})[month(key)] = n
    due = ms.DueRule(24.0, ms.DEFAULT_ROUTINE_HOURS)
    for s in seeds:
        leaf, m = (s.site, s.team), month(month_of(s.created))
        kinds = [ms.REFERRALS] + ([ms.HANDOFF_OFFERED] if s.handoff else []) + (
            [ms.HANDOFF_COMPLETED] if s.handoff == "spoke_now" else []) + (
            [ms.CONTACTED_IN_TIME] if s.contact_after_hours is not None
            and s.contact_after_hours <= (due.urgent_hours if s.urgent else due.routine_hours) else []) + (
            [ms.CLOSED[s.closing]] if s.closing else [])
        for kind in kinds:
            by_month = counts.setdefault(kind, {}).setdefault(leaf, {})
            by_month[m] = by_month.get(m, 0) + 1
    return counts


def test_no_view_set_against_another_gives_back_a_suppressed_count_over_http(report_app):
    """Every period offered (11 months, 3 quarters, 11 windows of 12 months) read as CSV through the app; the
    attacker solves all of it at once."""
    app = report_app
    counts = small_sites_over_a_year(app)
    client, lid = pm_client(app)
    pub = Published()
    periods = pd.offered(month("2026-01"), NOW)
    for period in periods:
        resp = client.get(f"/l/{lid}/report.csv?view={period.kind}&period={period.key}")
        assert resp.status_code == 200
        pub.add_csv(resp.get_data(as_text=True))
        for row in csv.DictReader(io.StringIO(resp.get_data(as_text=True))):
            for key, numerator, denominator, _label in rpt.RATES:
                if "suppressed" in (row[numerator], row[denominator]):  # a rate would give the hidden one back
                    assert row[key] == "", (row, key)
                elif row[numerator] and row[denominator] not in ("", "0"):
                    assert abs(float(row[key]) - int(row[numerator]) / int(row[denominator])) < 0.001
    teams = {"bwh": ("passageway-bwh",), "mgh": ("on-call",), "chelsea": ("on-call",)}
    grid = sp.Grid(ms.MEASURES, teams, tuple(periods))
    truth = truth_of(grid, counts)
    assert set(pub.cells) == set(truth)  # every row in every period: a missing row would say "zero"
    assert recovered(pub, truth) == []
    # Suppression happened, and what no small count depends on is still there: the busy site's screens and
    # positives, and the screens of all sites, in every period.
    assert any(v is None for v in pub.cells.values())
    for (measure, row, pid), value in pub.cells.items():
        if (measure, row) in ((ms.SCREENS, ("site", "bwh")), (ms.SCREENS, sp.ALL), (ms.POSITIVES, ("site", "bwh"))):
            assert value == truth[(measure, row, pid)], (measure, row, pid)
    # chelsea's referrals (a few a month) are hidden month by month; its 12 months of screens are shown.
    assert 0 < truth[(ms.REFERRALS, ("site", "chelsea"), "month:2026-05")] < sp.THRESHOLD
    assert pub.cells[(ms.REFERRALS, ("site", "chelsea"), "month:2026-05")] is None
    assert pub.cells[(ms.SCREENS, ("site", "chelsea"), "rolling:2026-11")] == truth[
        (ms.SCREENS, ("site", "chelsea"), "rolling:2026-11")]


# ---------------------------------------------------------------------------- only closed periods


def test_a_late_change_decided_from_the_month_it_changed_shows_what_a_decision_afresh_shows(report_app):
    """Late closing outcomes in September: suppression is replayed from September on (the decision kept from the
    earlier counts), and every period offered reads as when decided afresh in a new process."""
    app = report_app
    small_sites_over_a_year(app)
    client, lid = pm_client(app)
    views = [("month", pd.month_key(m)) for m in range(month("2026-01"), month("2026-12"))] + [
        ("quarter", "2026-Q3"), ("rolling", "2026-11"), ("rolling", "2026-09")]
    before = {v: csv_rows(client, lid, *v) for v in views}
    with app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        late = db.execute(select(ReferralRecord).where(
            ReferralRecord.site == "mgh", ReferralRecord.closing_outcome.is_(None),
            ReferralRecord.created_at >= datetime(2026, 9, 1, tzinfo=UTC),
            ReferralRecord.created_at < datetime(2026, 10, 1, tzinfo=UTC)).limit(2)).scalars().all()
        assert late
        for record in late:
            record.closing_outcome = "unreachable"
        db.commit()
    resumed = []
    real = sp.Suppressor.run

    def run(self):
        resumed.append(self.start)
        return real(self)

    sp.Suppressor.run = run
    try:
        after = {v: csv_rows(client, lid, *v) for v in views}
    finally:
        sp.Suppressor.run = real
    assert resumed == [month("2026-09")] and after != before
    rpt.forget_decisions(app)
    assert {v: csv_rows(client, lid, *v) for v in views} == after


def test_the_current_period_is_shown_only_once_it_has_closed(report_app):
    app = report_app
    seed_events(app, "2026-11", "bwh", "completed", 30)
    seed_events(app, "2026-10", "bwh", "completed", 20)
    clock = {"now": datetime(2026, 11, 20, 15, tzinfo=UTC)}
    app.config["REPORT_CLOCK"] = lambda: clock["now"]
    client, lid = pm_client(app)
    assert client.get(f"/l/{lid}/report?view=month&period=2026-11").status_code == 404
    assert client.get(f"/l/{lid}/report.csv?view=quarter&period=2026-Q4").status_code == 404
    assert client.get(f"/l/{lid}/report.csv?view=rolling&period=2026-11").status_code == 404
    # The latest closed month opens by default, and November's events are in no view yet.
    html = client.get(f"/l/{lid}/report").get_data(as_text=True)
    assert "2026-10" in html and ">30<" not in html
    assert csv_rows(client, lid, "rolling", "2026-10")["site:bwh"]["screens"] == "20"
    clock["now"] = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    assert csv_rows(client, lid, "month", "2026-11")["site:bwh"]["screens"] == "30"
    assert csv_rows(client, lid, "rolling", "2026-11")["site:bwh"]["screens"] == "50"
    assert client.get(f"/l/{lid}/report.csv?view=quarter&period=2026-Q4").status_code == 404  # until January
    clock["now"] = datetime(2027, 1, 1, tzinfo=UTC)
    assert csv_rows(client, lid, "quarter", "2026-Q4")["site:bwh"]["screens"] == "50"


# ---------------------------------------------------------------------------- 200 journeys over HTTP


def journey(app, rng: random.Random, expected: Counter) -> None:
    site, lang, inst = rng.choice(SITES), rng.choice(["en", "es"]), rng.choice(["hits", "hark"])
    client, lid = client_with_launch(app, context_for(site, lang))
    if rng.random() < 0.1:
        assert client.post(f"/l/{lid}/gate", data={"action": "not_now"}).status_code == 302
        return
    assert client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes"}).status_code == 302
    assert client.get(f"/l/{lid}/screen?instrument={inst}").status_code == 200
    outcome = rng.choices(["declined", "negative", "positive", "urgent"], [15, 45, 28, 12])[0]
    items = ("hurt", "insult", "threaten", "scream") if inst == "hits" else ("humiliation", "afraid", "rape", "kick")
    form: dict[str, str] = {"instrument": inst}
    if outcome == "declined":
        form["action"] = "decline"
    else:
        answer = {"hits": ("LA6270-8", "LA6482-9"), "hark": ("LA32-8", "LA33-6")}[inst][outcome != "negative"]
        form.update({f"q-{i}": answer for i in items})
    resp = client.post(f"/l/{lid}/screen", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    if outcome == "declined":
        return
    expected[(site, ms.SCREENS)] += 1
    if outcome == "negative":
        return
    expected[(site, ms.POSITIVES)] += 1
    danger = {i: "LA32-8" for i in ("escalation", "weapon", "strangulation", "jealousy", "fear-for-life")}
    if outcome == "urgent":
        danger["weapon"] = "LA33-6"
    assert client.post(f"/l/{lid}/more", data={f"q-{k}": v for k, v in danger.items()}).status_code == 302
    client.post(f"/l/{lid}/more", data={f"q-{k}": v for k, v in danger.items()})  # double submit: counted once
    if rng.random() < 0.3:
        return  # no consent to a referral
    from tests.writeback.support import consent

    assert consent(client, lid, channel="none").status_code == 302
    consent(client, lid, channel="none")  # double submit: one referral
    expected[(site, ms.REFERRALS)] += 1


def test_report_equals_an_independent_tally_of_200_journeys_and_screens_survive_the_purge(report_app):
    app = report_app
    rng = random.Random(2026)
    expected: Counter = Counter()
    for _ in range(200):
        journey(app, rng, expected)
    this_month = month_of()
    app.config["REPORT_CLOCK"] = lambda: datetime.now(UTC) + timedelta(days=32)  # this month has closed
    client, lid = pm_client(app)
    rows = csv_rows(client, lid, "month", this_month)
    with app.app_context():
        from smart_app.store.db import get_session

        collected = ms.collect(get_session(), ms.DueRule(24, 72), pd.month_number(this_month) + 1)
    for site in SITES:
        for measure in (ms.SCREENS, ms.POSITIVES, ms.REFERRALS):
            raw = sum(by.get(pd.month_number(this_month), 0) for (s, _t), by in collected.counts[measure].items()
                      if s == site)
            assert raw == expected[(site, measure)], (site, measure)
            assert rows[f"site:{site}"][measure] in ("suppressed", str(expected[(site, measure)]))
    assert sum(expected.values()) > 150 and expected[("bwh", ms.REFERRALS)] >= 1
    html = client.get(f"/l/{lid}/report?view=month&period={this_month}").get_data(as_text=True)
    assert "<svg" in html and "pat-" not in html and "Rosa" not in html
    for cell in re.findall(r'<td data-measure="[a-z_]+">(\d+)</td>', html):
        assert int(cell) == 0 or int(cell) >= sp.THRESHOLD
    before = rows["site:bwh"][ms.SCREENS], rows["all"][ms.POSITIVES]

    # Purging referrals (and launches) leaves the screens and positives of past reports unchanged.
    with app.app_context():
        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        db = get_session()
        db.execute(delete(OutboxItem))
        db.execute(delete(ReferralEvent))
        db.execute(delete(ReferralDims))
        db.execute(delete(ReferralRecord))
        db.execute(delete(LaunchRecord))
        db.commit()
    client, lid = pm_client(app)
    after = csv_rows(client, lid, "month", this_month)
    assert (after["site:bwh"][ms.SCREENS], after["all"][ms.POSITIVES]) == before


def test_event_rows_hold_nothing_about_a_patient(report_app):
    client, lid = client_with_launch(report_app, context_for("mgh", "es"))
    client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes"})
    client.get(f"/l/{lid}/screen?instrument=hits")
    client.post(f"/l/{lid}/screen", data={"instrument": "hits", **{f"q-{i}": "LA6482-9" for i in
                                                                 ("hurt", "insult", "threaten", "scream")}})
    with report_app.app_context():
        from smart_app.store.db import get_session

        rows = get_session().scalars(select(ReportEvent)).all()
    assert {(r.kind, r.site, r.instrument, r.language, r.month) for r in rows} == {
        (k, "mgh", "hits", "es", month_of()) for k in ("offered", "completed", "positive")}
    # The EHR identity (config/ehrs.py) names an EHR, never a patient, launch or user.
    assert set(ReportEvent.__table__.columns.keys()) == {"id", "month", "site", "kind", "instrument", "language",
                                                         "ehr"}


def test_report_is_for_program_managers_only(report_app):
    client, lid = client_with_launch(report_app, context_for("bwh", "en"))  # a clinician
    assert client.get(f"/l/{lid}/report").status_code == 403
    assert client.get(f"/l/{lid}/report.csv").status_code == 403
    pm, pm_lid = pm_client(report_app)
    assert pm.get(f"/l/{pm_lid}/report?view=month&period=2026-13").status_code == 400
    assert pm.get(f"/l/{pm_lid}/report?view=quarter&period=2026-Q5").status_code == 400
    # Switching the view keeps the place: the quarter of a month, the last month of a quarter.
    assert "Program report, quarter: 2026 Q3" in pm.get(
        f"/l/{pm_lid}/report?view=quarter&period=2026-08").get_data(as_text=True)
    assert "Program report, 12 months: 2025-10 to 2026-09" in pm.get(
        f"/l/{pm_lid}/report?view=rolling&period=2026-Q3").get_data(as_text=True)
    assert pm.get(f"/l/{pm_lid}/report?view=weekly").status_code == 400
    assert pm.get(f"/l/{pm_lid}/report?month=2026-11").status_code == 200
    assert report_app.test_cli_runner().invoke(args=["report", "--period", "nov"]).exit_code != 0


def test_a_program_manager_lands_on_the_report(report_app):
    from smart_app.launch.state import Launch
    from smart_app.launch.views import _landing
    from smart_app.store.models import LaunchRecord

    with report_app.test_request_context():
        for roles, patient, intent, want in ((["program_manager"], None, None, "/report"),
                                             (["clinician"], {"id": "p"}, "report", "/report"),
                                             # standalone with a patient: the queue, which offers that
                                             # patient's referrals (a queue role never lands on a screening)
                                             (["program_manager"], {"id": "p"}, None, "/worklist")):
            record = LaunchRecord(id="x", state="s", browser_id="b", iss="i", kind="standalone", status="active")
            launch = Launch(record)
            launch._context = {"user": {"roles": roles}, "patient": patient, "intent": intent}
            assert _landing(launch).endswith(want), (roles, patient, intent)


def test_report_on_postgresql_equals_the_tally(postgres_url):
    from smart_app import create_app
    from tests.conftest import app_config

    app = create_app(app_config(postgres_url))
    try:
        app.config["REPORT_CLOCK"] = lambda: NOW
        counts = small_sites_over_a_year(app)
        client, lid = pm_client(app)
        rows = csv_rows(client, lid, "rolling", "2026-11")
        for site in ("bwh", "mgh", "chelsea"):
            for measure in (ms.SCREENS, ms.REFERRALS):
                want = sum(n for (s, _t), by in counts[measure].items() if s == site for n in by.values())
                assert rows[f"site:{site}"][measure] in ("suppressed", str(want))
        assert rows["site:bwh"][ms.REFERRALS] != "suppressed"
    finally:
        app.extensions["db_engine"].dispose()
