"""The queue's tallies summed in SQL (smart_app/worklist/queue.py ``Queue.tallies``) are exactly what tallying the
grouped count's cells in Python gives (the way the queue counted before, kept here as the reference): every filter
value's count, the number shown and in all, the values present, the EHR profiles, the sorts' tier sizes and the
pinned referrals in each tier (as the grouped query the page sent for them before). Over
referrals spread over a year and over the last days, at clock moments before, after and inside the age filter's
borders, for every filter alone and in combinations (overdue as urgent, older status words, "Site not recorded",
program names shared by two programs, unknown values), on PostgreSQL (the kept cells and the live count) and SQLite.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import case, create_engine, func, literal, select, text

from sandbox_ehr.harness.bulk import IN_SCOPE_SITES, PROGRAMS, insert_referrals
from smart_app import create_app
from smart_app.store.task_status import LEGACY, STATUSES
from smart_app.worklist import queue as queue_module
from smart_app.worklist.due import DueRule, parse_span
from smart_app.worklist.queue import (
    AGE_BUCKETS,
    ASSIGNEE_VALUES,
    FACETS,
    OVERDUE_ROUTINE,
    PROGRAM,
    Clock,
    Queue,
    QueueQuery,
    facet_names,
    pinned,
    site_not_recorded,
)
from smart_app.worklist.scope import Scope
from smart_app.worklist.search import Search
from tests.conftest import app_config
from tests.worklist.support import EHR1

pytestmark = pytest.mark.worklist

ME = "Practitioner/me"
MOMENTS_H = (0, 3.5, 9, 12.25, 17, 23.9, 30, 61.5)  # the borders (a day, a week ago) before, after, inside days
LIVE_MOMENTS_H = (0, 12.25, 61.5)  # the live count (PostgreSQL without the kept cells) at these
SHARED_NAME = "DV Legal Clinic"  # two programs' name
FILTERS: list[dict[str, str]] = [
    {"status": "open"}, {"status": "all"}, {"status": "closed", "assignee": "mine"},
    {"status": "open", "urgency": "urgent"}, {"status": "open", "urgency": "overdue"},
    {"status": "all", "urgency": "routine", "age": "1_to_7_days"},
    {"status": "in-progress"}, {"status": "completed", "site": site_not_recorded()},  # older words read as these
    {"status": "requested", "age": "under_1_day", "assignee": "unassigned"},
    {"status": "all", "site": "Massachusetts General Hospital", "assignee": "others", "age": "over_7_days"},
    {"status": "open", PROGRAM: SHARED_NAME}, {"status": "all", PROGRAM: "Casa Myrna", "urgency": "overdue"},
    {"status": "closed", PROGRAM: "No such program"}, {"status": "no-such-status", "age": "no-such-age"},
    {"status": "all", "site": "No such site", "urgency": "urgent", PROGRAM: SHARED_NAME},
]
SORTS = ("triage", "program", "oldest", "newest")


def _reference(cells: list[Any], chosen: dict[str, str]) -> tuple[dict[str, Counter[str]], int, list[Any]]:
    """The Python tally the queue used before (each facet's counts keep the other filters), over the cells."""
    names = facet_names()
    of_facet = {f.name: f.values_of for f in FACETS}

    def values_of(name: str, value: Any) -> tuple[str, ...]:
        return of_facet[name](value) if name in of_facet else value  # program: its names

    tested = [(name, want) for name in names if (want := chosen[name])]
    tallies: dict[str, Counter[str]] = {name: Counter() for name in names}
    shown, passing = 0, []
    for cell in cells:
        failing = [name for name, want in tested if want not in values_of(name, cell.values[name])]
        if not failing:
            shown += cell.n
            passing.append(cell)
        for name in names:
            if not failing or failing == [name]:
                for shown_as in values_of(name, cell.values[name]):
                    tallies[name][shown_as] += cell.n
    return tallies, shown, passing


def _nonzero(counts: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {name: {v: n for v, n in c.items() if n} for name, c in counts.items()}


def _agree(make: Any, filters: dict[str, str], sort: str) -> None:
    query = QueueQuery(filters=filters, sort=sort)
    old, new = make(query), make(query)
    cells = old.cells()
    counts, shown, passing = _reference(cells, {name: filters.get(name) or "" for name in facet_names()})
    got = new.tallies()
    assert _nonzero(got.counts) == _nonzero(counts)
    assert (got.shown, got.total) == (shown, sum(c.n for c in cells))
    for facet in FACETS:
        assert got.present[facet.name] == {c.values[facet.name] for c in cells}, facet.name
    assert got.profiles == {c.profile for c in cells}
    assert new.programs.key_sets == old.programs.key_sets and new.programs.names == old.programs.names
    by_keys: Counter[Any] = Counter()
    triage: Counter[Any] = Counter()
    pinned_keys: Counter[Any] = Counter()
    pinned_triage: Counter[Any] = Counter()
    for cell in passing:
        by_keys[cell.keys] += cell.n
        triage[(cell.values["urgency"], cell.values["status"])] += cell.n
        if cell.pinned:
            pinned_keys[cell.keys] += cell.n
            pinned_triage[(cell.values["urgency"], cell.values["status"])] += cell.n
    assert got.by_keys == by_keys and got.triage == triage
    assert got.pinned_keys == pinned_keys and got.pinned_triage == pinned_triage
    tiers = new.tiers(got)
    if None not in new.programs.key_sets and tiers:
        # The pinned referrals per tier, as the page once counted them: one grouped query over the tiers' conditions.
        tier = case(*[(where, i) for i, (where, _n, _p) in enumerate(tiers)], else_=-1)
        rows = new.db.execute(select(tier, func.count()).where(*new.conditions(), pinned()).group_by(tier)).all()
        assert {int(i): int(n) for i, n in rows} == {i: p for i, (_w, _n, p) in enumerate(tiers) if p}
    # What the page shows of them: the counts beside every option, as the queue's view builds them.
    view = make(query).view(50)
    assert view.shown == shown
    for name in facet_names():
        for value, _text in view.options[name]:
            assert view.counts[name][value] == counts[name][value], (name, value)


def _fill(app: Any, now: datetime, *, unindexed: bool) -> str:
    """A year of referrals and the last twelve days more densely; some the user's, unrouted (pinned while open and
    nobody's), routed to a team, in no site (NULL and ""), outside the scope, and (``unindexed``) some with their
    programs not indexed yet (the page is then one query: no tiers). Returns the EHR's id."""
    insert_referrals(app, 500, iss=EHR1, now=now, seed=21, max_days=365)
    insert_referrals(app, 500, iss=EHR1, now=now, seed=22, max_days=12)
    insert_referrals(app, 100, iss=EHR1, now=now, seed=23, max_days=12, site=("Elsewhere", "Organization/x"))
    engine = app.extensions["db_engine"]
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM referral ORDER BY id"))]

        def some(sql: str, chosen: list[str], **params: Any) -> None:
            for rid in chosen:
                conn.execute(text(sql + " WHERE id = :id"), {"id": rid, **params})

        some("UPDATE referral SET assignee = :me", ids[::7], me=ME)
        some("UPDATE referral SET assignee = 'Practitioner/colleague'", ids[5::9])
        some("UPDATE referral SET route_kind = 'unrouted'", ids[::11])
        some("UPDATE referral SET route_kind = 'fallback', route_team = 't1'", ids[3::13])
        some("UPDATE referral SET site_name = ''", ids[4::17])
        if unindexed:
            some("UPDATE referral SET program_keys = NULL", ids[6::97])
        return conn.execute(text("SELECT ehr FROM referral LIMIT 1")).scalar()


def _run(app: Any, now: datetime, *, live_too: bool, unindexed: bool) -> None:
    ehr = _fill(app, now, unindexed=unindexed)
    rule = DueRule(urgent=parse_span("u", "24 hours"), routine=parse_span("r", "2 days"))
    scope = Scope(iss=EHR1, user_reference=ME, roles=["social_worker"], source="ehr", ehr=ehr,
                  keys=frozenset({"Organization/org-bwh", "Organization/org-mgh"}), teams=frozenset({"t1"}))
    warm: dict[str, dict[str, Any]] = {}
    with app.app_context(), app.extensions["db_sessionmaker"]() as db:
        for hours in MOMENTS_H:
            clock = Clock.at(now + timedelta(hours=hours), rule, ME)
            for i, filters in enumerate(FILTERS):
                sort = SORTS[i % len(SORTS)]
                # A cold program cache (the chosen program's keys learnt from the count) and a warm one.
                _agree(partial(_queue, db, scope, clock), filters, sort)
                if filters.get(PROGRAM):
                    _agree(partial(_queue, db, scope, clock, cache=warm), filters, sort)
                if live_too and hours in LIVE_MOMENTS_H:
                    _agree(partial(_queue, db, scope, clock, live=True), filters, sort)


def _queue(db: Any, scope: Scope, clock: Clock, query: QueueQuery, *, cache: dict[str, Any] | None = None,
           live: bool = False) -> Queue:
    queue = Queue(db, scope, clock, query, {}, {} if cache is None else cache)
    if live:
        queue.kept = False  # PostgreSQL counting every referral live, as without the kept cells
    return queue


@pytest.mark.postgres
def test_tallies_in_sql_are_the_python_tallies_on_postgresql(postgres_url):
    app = create_app(app_config(postgres_url))
    try:
        _run(app, datetime.now(UTC), live_too=True, unindexed=False)
    finally:
        app.extensions["db_engine"].dispose()


def test_tallies_in_sql_are_the_python_tallies_on_sqlite(tmp_path):
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}"))
    try:
        _run(app, datetime.now(UTC), live_too=False, unindexed=True)
    finally:
        app.extensions["db_engine"].dispose()


def test_the_tallies_statement_is_built_once_per_shape_and_a_search_never_kept(tmp_path):
    """Requests of one scope and filters at different moments share one statement (the moments are its
    parameters, so ``_run`` above checks the counts of a kept statement at every moment but the first); other
    filters are another statement; a search's (a patient's record number) is built each time and not kept."""
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}"))
    now = datetime.now(UTC)
    insert_referrals(app, 50, iss=EHR1, now=now, seed=31, max_days=12)
    rule = DueRule(urgent=parse_span("u", "24 hours"), routine=parse_span("r", "2 days"))
    scope = Scope(iss=EHR1, user_reference=ME, roles=["social_worker"], source="ehr",
                  keys=frozenset({"Organization/org-bwh"}))
    chosen = {name: "" for name in facet_names()} | {"status": "open"}
    try:
        with app.app_context(), app.extensions["db_sessionmaker"]() as db:
            def statement(hours: float, query: QueueQuery, filters: dict[str, str]) -> Any:
                clock = Clock.at(now + timedelta(hours=hours), rule, ME)
                queue = Queue(db, scope, clock, query, {})
                built, params = queue._kept_tallies(filters, set())
                assert queue.tallies().shown == _reference(queue.cells(), filters)[1]
                return built, params

            first, at_first = statement(0, QueueQuery(filters={"status": "open"}), chosen)
            again, at_again = statement(30, QueueQuery(filters={"status": "open"}), chosen)
            assert again is first and at_again["clock_now"] == at_first["clock_now"] + timedelta(hours=30)
            assert statement(0, QueueQuery(filters={"status": "all"}), {**chosen, "status": "all"})[0] is not first
            kept = list(queue_module._TALLY_STATEMENTS.kept.values())
            search = QueueQuery(filters={"status": "all"}, search=Search(mrn_key="k" * 20))
            searched = [statement(0, search, {**chosen, "status": "all"})[0] for _ in range(2)]
            assert searched[0] is not searched[1]
            assert list(queue_module._TALLY_STATEMENTS.kept.values()) == kept
    finally:
        app.extensions["db_engine"].dispose()


def test_each_facets_sql_test_is_its_filter_values(tmp_path):
    """Each facet's ``shows`` (SQL) holds exactly where ``values_of`` (Python) names the chosen value, for every
    dimension value the queue stores or derives, unknown ones too."""
    statuses = [*STATUSES, *LEGACY, "closed", "open", "all", "weird"]
    dimension_values = {  # assignee, urgency and age are CASEs over these values only
        "assignee": list(ASSIGNEE_VALUES), "urgency": ["overdue", OVERDUE_ROUTINE, "urgent", "routine"],
        "status": statuses, "site": ["", *(s for s, _k in IN_SCOPE_SITES if s), site_not_recorded(), "weird"],
        "age": list(AGE_BUCKETS)}
    chosen_values = {name: [v for v in [*values, "Any", "open", "closed", "all", "weird", "nothing"] if v]
                     for name, values in dimension_values.items()}  # "" is no filter: nothing tested
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        for facet in FACETS:
            for chosen in chosen_values[facet.name]:
                for value in dimension_values[facet.name]:
                    got = conn.execute(select(facet.shows(literal(value), chosen))).scalar()
                    assert bool(got) == (chosen in facet.values_of(value)), (facet.name, chosen, value)
    assert [name for name, _n in PROGRAMS].count(SHARED_NAME) == 0
    assert [n for _p, n in PROGRAMS].count(SHARED_NAME) == 2
