"""The program report's counts made in the database (smart_app/report/measures.py) are the counts the report made
row by row in Python before, medians included, on a generated year (benchmarks/year_of_data.py at 20,000
referrals) in PostgreSQL and the same rows copied into SQLite. A few rows are bent first so every branch counts:
no report dimensions (counted in the month and site they were made), no due time (the urgency's hours), a first
contact before the referral was made, a blank site and team, made in one month and counted in another, a blank
month. The months the kept report counts again one at a time (``measures.count_months``, PostgreSQL) are the months
counted all at once."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.orm import Session

from benchmarks.year_of_data import EHR1, Sizes, app_keys, fill
from config.current import settings_of
from sandbox_ehr.harness.launches import app_config
from smart_app import create_app
from smart_app.report import measures as ms
from smart_app.report import periods as pd
from smart_app.report.events import UNSPECIFIED
from smart_app.report.suppress import ALL
from smart_app.report.views import ehr_filter
from smart_app.store import closing, migrate
from smart_app.store import handoff as handoff_codes
from smart_app.store.models import Base, ReferralDims, ReferralRecord, ReportEvent
from tests.support import tools

# One xdist worker runs the module, so its module fixture is built once (`--dist loadgroup`, Makefile).
pytestmark = [pytest.mark.scale, pytest.mark.postgres, pytest.mark.xdist_group("report_counts")]

SIZES = Sizes(20_000)
DUE = ms.DueRule(24.0, 72.0)
COPIED = (ReferralRecord.id, ReferralRecord.iss, ReferralRecord.profile, ReferralRecord.site,
          ReferralRecord.urgent, ReferralRecord.status, ReferralRecord.created_at, ReferralRecord.site_name,
          ReferralRecord.first_contact_at, ReferralRecord.closed_at, ReferralRecord.handoff, ReferralRecord.ehr,
          ReferralRecord.route_kind, ReferralRecord.route_team, ReferralRecord.due_at,
          ReferralRecord.closing_outcome)
BENT = [
    # no report dimensions: counted in the month and site the referral was made
    "DELETE FROM referral_dims WHERE referral_id IN (SELECT id FROM referral WHERE id LIKE '%17')",
    # made before due times: the urgency's hours decide
    "UPDATE referral SET due_at = NULL WHERE id LIKE '%3'",
    # contacted just at, and just after, the due time
    "UPDATE referral SET first_contact_at = due_at WHERE id LIKE '%41'",
    "UPDATE referral SET first_contact_at = due_at + interval '1 microsecond' WHERE id LIKE '%42'",
    "UPDATE referral SET first_contact_at = created_at - interval '2 hours' WHERE id LIKE '%59'",
    "UPDATE referral SET route_team = '' WHERE id LIKE '%61'",
    "UPDATE referral_dims SET site = '' WHERE referral_id LIKE '%71'",
    # made in one month, counted in another by their dimensions (a launch begun before the month turned), or
    # with a blank dimensions' month (counted in the month made)
    "UPDATE referral SET created_at = created_at - interval '20 days' WHERE id LIKE '%29'",
    "UPDATE referral_dims SET month = '' WHERE referral_id LIKE '%83'",
    # counted outcomes and hand-offs of the app's own codes (the generator's are partly others)
    f"UPDATE referral SET closing_outcome = '{closing.REACHED_SUPPORTED}' WHERE id LIKE '%5' AND closed_at IS NOT NULL",
    f"UPDATE referral SET handoff = '{handoff_codes.COMPLETED}' WHERE id LIKE '%8'",
]


def python_counts(db: Session, before_month: int, ehr: ms.EhrFilter | None) -> ms.Collected:
    """The report's counting as it was: every referral's columns read into Python and counted one by one."""
    counts: ms.Counts = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    teams: dict[str, set[str]] = defaultdict(set)
    q = select(ReportEvent.month, ReportEvent.site, ReportEvent.kind).where(ReportEvent.kind.in_(ms.EVENT_KINDS))
    for month_text, site, kind in db.execute(q.where(ehr.events()) if ehr is not None else q):
        month = pd.month_number(month_text)
        if month < before_month:
            counts[ms.EVENT_KINDS[kind]][(site, "")][month] += 1
            teams.setdefault(site, set())
    hours: dict[Any, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    names: dict[str, Counter] = defaultdict(Counter)
    q = (select(ReferralRecord, ReferralDims.site.label("dims_site"), ReferralDims.month.label("dims_month"))
         .outerjoin(ReferralDims, ReferralDims.referral_id == ReferralRecord.id))
    for record, dims_site, dims_month in db.execute(q.where(ehr.referrals()) if ehr is not None else q):
        created = aware(record.created_at)
        month = pd.month_number(dims_month) if dims_month else created.year * 12 + created.month - 1
        if month >= before_month:
            continue
        site = dims_site or record.site or UNSPECIFIED
        leaf = (site, ms.team_key(record.route_kind, record.route_team))
        teams[site].add(leaf[1])
        if record.site_name:
            names[site][record.site_name] += 1
        counts[ms.REFERRALS][leaf][month] += 1
        if record.closing_outcome in ms.CLOSED:
            counts[ms.CLOSED[record.closing_outcome]][leaf][month] += 1
        if record.handoff:
            counts[ms.HANDOFF_OFFERED][leaf][month] += 1
        if record.handoff == handoff_codes.COMPLETED:
            counts[ms.HANDOFF_COMPLETED][leaf][month] += 1
        if record.first_contact_at is not None:
            waited = max(0.0, (aware(record.first_contact_at) - created).total_seconds() / 3600)
            hours[leaf][month].append(waited)
            due = aware(record.due_at)
            allowed = ((due - created).total_seconds() / 3600 if due is not None
                       else DUE.urgent_hours if record.urgent else DUE.routine_hours)
            if waited <= allowed:
                counts[ms.CONTACTED_IN_TIME][leaf][month] += 1
    return ms.Collected(counts, hours, {s: c.most_common(1)[0][0] for s, c in names.items()}, teams)


def python_medians(collected: ms.Collected, months: range) -> dict[Any, tuple[int, float]]:
    by_row: dict[Any, list[float]] = defaultdict(list)
    for (site, team), by_month in collected.contact_hours.items():
        for month, values in by_month.items():
            if month in months:
                for row in (ALL, ("site", site), ("team", site, team)):
                    by_row[row] += values
    return {row: (len(values), statistics.median(values)) for row, values in by_row.items() if values}


def aware(when: datetime | None) -> datetime | None:
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def plain(counts: ms.Counts) -> dict:
    return {(m, leaf, month): n for m, per_leaf in counts.items() for leaf, by_month in per_leaf.items()
            for month, n in by_month.items() if n}


@pytest.fixture(scope="module")
def year(tmp_path_factory) -> Iterator[tuple[Any, Engine, Engine]]:
    """The year in a PostgreSQL schema of its own (bent as above), and its counted rows copied into SQLite."""
    with tools.postgres_schema(tools.postgres_base_url(), "t_report") as url:
        engine = create_engine(url)
        lite = create_engine(f"sqlite:///{tmp_path_factory.mktemp('report') / 'year.db'}")
        try:
            migrate.upgrade(engine)
            keys = app_keys()
            app = create_app(app_config(url, **keys))
            fill(engine, app, SIZES, keys, say=lambda _line: None)
            with engine.begin() as conn:
                for sql in BENT:
                    conn.execute(text(sql))
            Base.metadata.create_all(lite, tables=[t.__table__ for t in (ReferralRecord, ReferralDims, ReportEvent)])
            with engine.connect() as source, lite.begin() as target:
                for model, columns in ((ReferralRecord, COPIED), (ReferralDims, (ReferralDims.__table__.c,)),
                                       (ReportEvent, (ReportEvent.__table__.c,))):
                    rows = [dict(r._mapping) for r in source.execute(select(*columns))]
                    target.execute(insert(model.__table__), rows)
            yield app, engine, lite
            app.extensions["db_engine"].dispose()
        finally:
            engine.dispose()
            lite.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
@pytest.mark.parametrize("whose", ["deployment", "ehr"])
def test_counts_and_medians_made_in_the_database_are_the_ones_counted_row_by_row(year, dialect, whose):
    app, engine, lite = year
    now = datetime.now(UTC)
    before = pd.current_month(now)
    ehr = ehr_filter(EHR1, settings_of(app)) if whose == "ehr" else None
    with Session(engine) as db:
        want = python_counts(db, before, ehr)
    with Session(engine if dialect == "postgresql" else lite) as db:
        assert db.get_bind().dialect.name == dialect
        got = ms.collect(db, DUE, before, ehr)
        periods = pd.offered(got.first_month, now)
        assert len(periods) > 12
        medians = {p.id: ms.contact_medians(db, got, DUE, p.months, ehr) for p in periods}
    assert plain(got.counts) == plain(want.counts)
    assert sum(plain(got.counts).values()) > SIZES.referrals
    assert {k: v for k, v in plain(got.counts).items() if k[0] == ms.CONTACTED_IN_TIME}
    assert {s: set(t) for s, t in got.teams.items()} == {s: set(t) for s, t in want.teams.items()}
    assert got.site_names == want.site_names
    for p in periods:
        assert medians[p.id] == python_medians(want, p.months), p.id
    assert medians[periods[-1].id][ALL][0] > 1000


def month_rows(counted: dict[int, ms.MonthCounts]) -> dict[int, tuple]:
    """Months as counted, in an order that does not depend on the order rows arrive in."""
    return {month: (sorted(map(tuple, counts["events"])), sorted(map(tuple, counts["referrals"]), key=repr),
                    sorted((site, team, sorted(hours)) for site, team, hours in leaves))
            for month, (counts, leaves) in counted.items()}


@pytest.mark.parametrize("whose", ["deployment", "ehr"])
def test_months_counted_one_or_a_few_at_a_time_are_the_months_counted_at_once(year, whose):
    app, engine, _lite = year
    ehr = ehr_filter(EHR1, settings_of(app)) if whose == "ehr" else None
    with Session(engine) as db:
        every = month_rows(ms.count_months(db, DUE, ehr, None))
        months = sorted(every)
        alone: dict[int, tuple] = {}
        for month in months:
            alone.update(month_rows(ms.count_months(db, DUE, ehr, [month])))
        some = months[1::3] + months[2::3]  # several months, not next to each other, in one statement
        together = month_rows(ms.count_months(db, DUE, ehr, some))
        moved = db.execute(text("SELECT count(*) FROM referral r JOIN referral_dims d ON d.referral_id = r.id "
                                "WHERE d.month <> '' AND d.month <> to_char(r.created_at AT TIME ZONE 'UTC', "
                                "'YYYY-MM')")).scalar()
    assert alone == every
    assert together == {m: every[m] for m in some}
    assert moved > 100 and len(months) > 12
