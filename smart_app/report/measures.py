"""What the program report counts, per site (and, for referrals, per team) and month, read from the store.

- Screens, positive screens, check-in cards shown and accepted, positive self-screens and those with a response
  recorded, check-ins started and those where universal education was offered: the de-identified events
  (``report_event``, smart_app/report/events.py), per site.
- Consented referrals, warm hand-offs offered and completed, first contact within the due time and the time to it,
  closing outcomes:
  the referrals themselves (``referral`` with its report dimensions ``referral_dims``), per site and per team that
  works them (the route given when the referral was made: a deployment team, the covering social workers, the
  unrouted queue). Closed referrals are kept ``closed_retention_days`` after closing (365 by default), so every
  referral of the last 12 closed months is still counted.

Nothing here is PHI: site and team keys, months, hand-off codes, hours to first contact.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.orm import Session

from smart_app.report import memo
from smart_app.report.events import UNSPECIFIED
from smart_app.report.periods import month_key, month_number
from smart_app.report.suppress import ALL, Counts, Derived, Leaf, Measure, Row
from smart_app.store import closing
from smart_app.store import handoff as handoff_codes
from smart_app.store.models import ReferralDims, ReferralRecord, ReportEvent

SCREENS, POSITIVES, REFERRALS = "screens", "positives", "referrals"
HANDOFF_OFFERED, HANDOFF_COMPLETED, CONTACTED_IN_TIME = "handoff_offered", "handoff_completed", "contacted_in_time"
CARDS_SHOWN, CARDS_ACCEPTED = "cards_shown", "cards_accepted"  # the CDS Hooks check-in card (smart_app/cds/)
# Positive self-administered screens and those with a clinician's response recorded (smart_app/followup/items.py);
# check-ins started and those where universal education was offered (smart_app/screening/education.py).
SELF_POSITIVES, SELF_RESPONDED = "self_positives", "self_responded"
CHECKINS, EDUCATION_OFFERED = "checkins", "education_offered"
# Referrals closed with each outcome (smart_app/store/closing.py), one measure per outcome.
CLOSED = {code: f"closed_{code}" for code in closing.OUTCOMES}
MEASURES = (Measure(SCREENS, False), Measure(POSITIVES, False), Measure(REFERRALS, True),
            Measure(HANDOFF_OFFERED, True), Measure(HANDOFF_COMPLETED, True), Measure(CONTACTED_IN_TIME, True),
            *(Measure(name, True) for name in CLOSED.values()),
            Measure(CARDS_SHOWN, False), Measure(CARDS_ACCEPTED, False),
            Measure(SELF_POSITIVES, False), Measure(SELF_RESPONDED, False),
            Measure(CHECKINS, False), Measure(EDUCATION_OFFERED, False))
# Counts the shown ones imply (a total minus its parts): suppressed as if shown. Screens not positive, positives
# not referred, referrals without a hand-off offered, hand-offs offered and not completed, referrals not contacted
# in time, referrals still open, cards not accepted, positive self-screens with no response, check-ins without
# universal education.
DERIVED = (Derived(SCREENS, (POSITIVES,)), Derived(POSITIVES, (REFERRALS,)), Derived(REFERRALS, (HANDOFF_OFFERED,)),
           Derived(HANDOFF_OFFERED, (HANDOFF_COMPLETED,)), Derived(REFERRALS, (CONTACTED_IN_TIME,)),
           Derived(REFERRALS, tuple(CLOSED.values())), Derived(CARDS_SHOWN, (CARDS_ACCEPTED,)),
           Derived(SELF_POSITIVES, (SELF_RESPONDED,)), Derived(CHECKINS, (EDUCATION_OFFERED,)))
EVENT_KINDS = {"completed": SCREENS, "positive": POSITIVES, "card_shown": CARDS_SHOWN, "card_accepted": CARDS_ACCEPTED,
               "self_positive": SELF_POSITIVES, "self_responded": SELF_RESPONDED, "checkin": CHECKINS,
               "education_offered": EDUCATION_OFFERED}
# Team keys for referrals not worked by a named deployment team.
COVERAGE_TEAM, UNROUTED_TEAM, NO_ROUTE = "~coverage", "~unrouted", "~none"
DEFAULT_ROUTINE_HOURS = 72.0  # a routine referral's due time when the deployment names none (three days)
SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class DueRule:
    """When a referral is due its first contact: its own ``due_at`` (set when it is made, in the program's hours)
    when it has one, else, for one made before due times, its urgency's contact hours from ``created_at``."""

    urgent_hours: float
    routine_hours: float

    @classmethod
    def from_config(cls, config: Any) -> DueRule:
        return cls(float(config.get("WORKLIST_URGENT_CONTACT_HOURS") or 24),
                   float(config.get("WORKLIST_ROUTINE_CONTACT_HOURS") or DEFAULT_ROUTINE_HOURS))

    def hours(self, row: Any) -> float:
        due_at = _aware(getattr(row, "due_at", None))
        if due_at is not None:
            return (due_at - _aware(row.created_at)).total_seconds() / 3600
        return self.urgent_hours if row.urgent else self.routine_hours


HoursByLeaf = dict[Leaf, dict[int, list[float]]]
# One month as counted and kept (smart_app/report/memo.py): its counts ({"events": [[site, kind, n]], "referrals":
# [[site, team, site name, outcome, hand-off, n, in time]]}) and its hours to first contact ([[site, team, [hours]]]).
MonthCounts = tuple[dict[str, list[list[Any]]], list[list[Any]]]


@dataclass
class Collected:
    """Monthly counts per measure and leaf, display names and, on SQLite only (where ``collect`` counts first
    contacts in Python), the hours to first contact per leaf and month; with the months kept (PostgreSQL), how to
    read a period's hours from them."""

    counts: Counts
    contact_hours: HoursByLeaf
    site_names: dict[str, str]
    teams: dict[str, set[str]] = field(default_factory=dict)
    hours_of: Callable[[range], HoursByLeaf] | None = None

    @property
    def first_month(self) -> int | None:
        months = [m for per_leaf in self.counts.values() for by_month in per_leaf.values() for m in by_month]
        return min(months, default=None)


def _aware(when: datetime | None) -> datetime | None:
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def team_key(route_kind: str | None, route_team: str | None) -> str:
    if route_team:
        return route_team
    return {"coverage": COVERAGE_TEAM, "unrouted": UNROUTED_TEAM}.get(route_kind or "", NO_ROUTE)


@dataclass(frozen=True)
class EhrFilter:
    """One EHR's rows (config/ehrs.py): its id, and the exact iss values a referral made before routing (no ``ehr``)
    is known by. Events counted before the identity was kept (no ``ehr``) were the whole deployment's, as the report
    was: every EHR's report keeps them."""

    id: str
    iss: frozenset[str] = frozenset()

    def events(self) -> ColumnElement[bool]:
        return or_(ReportEvent.ehr == self.id, ReportEvent.ehr.is_(None))

    def referrals(self, r: Any = None) -> ColumnElement[bool]:
        """The condition on referral columns ``r`` (the table's by default)."""
        r = ReferralRecord.__table__.c if r is None else r
        values = sorted(self.iss)
        return or_(r.ehr == self.id, and_(r.ehr.is_(None), r.iss.in_(values + [v + "/" for v in values])))


def _hours_between(start: Any, end: Any) -> ColumnElement[float]:
    """Hours from ``start`` to ``end`` on PostgreSQL, rounded as ``timedelta.total_seconds() / 3600`` is: the exact
    seconds (``extract`` gives a numeric) to the nearest double, then divided."""
    return cast(extract("epoch", end - start), Float) / SECONDS_PER_HOUR


# The referral's columns the report reads (a month counted again reads them one referral at a time).
_READ = ("id", "ehr", "iss", "site", "route_kind", "route_team", "site_name", "closing_outcome", "handoff",
         "created_at", "first_contact_at", "due_at", "urgent")


def _row_columns(r: Any, d: Any, due: DueRule, postgres: bool) -> list[Any]:
    """What one referral (columns ``r``, its report dimensions ``d``) is counted as: see ``_referral_rows``."""
    made = (func.to_char(func.timezone("UTC", r.created_at), "YYYY-MM") if postgres
            else func.strftime("%Y-%m", r.created_at))
    team = case((func.coalesce(r.route_team, "") != "", r.route_team),
                (r.route_kind == "coverage", COVERAGE_TEAM), (r.route_kind == "unrouted", UNROUTED_TEAM),
                else_=NO_ROUTE)
    columns = [func.coalesce(func.nullif(d.month, ""), made).label("month"),
               func.coalesce(func.nullif(d.site, ""), func.nullif(r.site, ""), UNSPECIFIED).label("site"),
               team.label("team"), r.site_name, r.closing_outcome, r.handoff, r.created_at, r.first_contact_at,
               r.due_at, r.urgent]
    if postgres:
        waited = _hours_between(r.created_at, r.first_contact_at)
        hours = case((waited < 0, 0.0), else_=waited)
        allowed = case((r.due_at.isnot(None), _hours_between(r.created_at, r.due_at)),
                       (r.urgent, literal(due.urgent_hours, Float)), else_=literal(due.routine_hours, Float))
        columns += [hours.label("hours"), and_(r.first_contact_at.isnot(None), hours <= allowed).label("in_time")]
    return columns


def _referral_rows(db: Session, due: DueRule, ehr: EhrFilter | None, months: Sequence[int] | None = None) -> Any:
    """The referrals as the report reads them, one row each: the month and site they are counted in (their report
    dimensions, else when and where they were made), the team that works them, and the columns counted. On
    PostgreSQL also the hours to first contact and whether it was within the due time, computed as Python computes
    them (seconds as a double, then hours), so the counts and medians made in the database are the same numbers.

    With ``months`` (PostgreSQL), only the referrals counted in them: those with report dimensions through the
    dimensions' month (``ix_referral_dims_month``), the others through the month they were made in
    (``ix_referral_created``, less those the months' dimensions count, then those with no dimensions' month
    kept). Each is then read by its key, in a
    ``LATERAL`` subquery the planner may not merge into a join (``OFFSET 0``): a month is a twelfth of the
    referrals, and a join would scan (and hash) the whole table."""
    postgres = db.get_bind().dialect.name == "postgresql"
    rt, dt = ReferralRecord.__table__, ReferralDims.__table__
    if months is None:
        q = select(*_row_columns(rt.c, dt.c, due, postgres)).select_from(
            rt.outerjoin(dt, dt.c.referral_id == rt.c.id))
        return (q.where(ehr.referrals()) if ehr is not None else q).subquery("counted")

    def one_referral(key: Any) -> Any:
        q = select(*(rt.c[name] for name in _READ)).where(rt.c.id == key)
        q = q.where(ehr.referrals()) if ehr is not None else q
        return q.offset(literal_column("0")).lateral("r")

    keys = [month_key(m) for m in months]
    made_in = or_(*(and_(rt.c.created_at >= _month_start(m), rt.c.created_at < _month_start(m + 1)) for m in months))
    of_months = dt.c.month.in_(keys)
    # Made in the months and counted in them by their dimensions (most): a join of the two months' sets.
    rows = select(*(rt.c[name] for name in _READ)).where(made_in)
    rows = (rows.where(ehr.referrals()) if ehr is not None else rows).subquery("made")
    made_dims = (select(*_row_columns(rows.c, dt.c, due, postgres))
                 .select_from(rows.join(dt, and_(dt.c.referral_id == rows.c.id, of_months))))
    # Counted in the months by dimensions, made in another month: the months' dimensions less those made in them
    # (a hash of the months' keys), the few left read by key.
    made_ids = select(rt.c.id).where(made_in, rt.c.id == dt.c.referral_id)
    moved = select(dt).where(of_months, ~made_ids.exists()).offset(literal_column("0")).subquery("moved")
    moved_ref = one_referral(moved.c.referral_id)
    by_dims = (select(*_row_columns(moved_ref.c, moved.c, due, postgres))
               .select_from(moved.join(moved_ref, true())))
    # Made in the months, with no dimensions' month: those made in them less those the months' dimensions count;
    # the few left looked up (their dimensions in another month, or none).
    counted_by_dims = select(literal_column("1")).where(dt.c.referral_id == rt.c.id, of_months)
    others = (select(rt.c.id).where(made_in, ~counted_by_dims.exists()).offset(literal_column("0"))
              .subquery("others"))
    own = select(dt.c.month).where(dt.c.referral_id == others.c.id).offset(literal_column("0")).lateral("own")
    made = (select(others.c.id).select_from(others.outerjoin(own, true()))
            .where(func.coalesce(own.c.month, "") == "").subquery("made_alone"))
    by_made_ref = one_referral(made.c.id)
    by_made = (select(*_row_columns(by_made_ref.c, dt.c, due, postgres))
               .select_from(made.join(by_made_ref, true()).outerjoin(dt, dt.c.referral_id == by_made_ref.c.id)))
    return union_all(made_dims, by_dims, by_made).subquery("counted")


def _month_start(month: int) -> datetime:
    return datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC)


def collect(db: Session, due: DueRule, before_month: int, ehr: EhrFilter | None = None) -> Collected:
    """Everything counted in months before ``before_month`` (the open month is never read); with ``ehr``, that EHR's
    only (a program manager's report), else the whole deployment's (the CLI).

    Counted in the database: a year of a health system is millions of events and a million referrals, and a few
    thousand cells. On SQLite (the demo) the first contacts are counted here, row by row, as it has no exact
    arithmetic on times. On PostgreSQL with the kept report (smart_app/report/memo.py) the months are kept as
    counted, and only those a change touched since are counted again."""
    if memo.active(db):
        return _collect_kept(db, due, before_month, ehr)
    counts: Counts = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    teams: dict[str, set[str]] = defaultdict(set)
    for month_text, site, kind, n in db.execute(_events_query(ehr, None)):
        month = month_number(month_text)
        if month < before_month:
            _add_events(counts, teams, month, site, kind, n)
    hours: HoursByLeaf = defaultdict(lambda: defaultdict(list))
    names: dict[str, Counter] = defaultdict(Counter)
    src = _referral_rows(db, due, ehr)
    in_db = "in_time" in src.c
    for month_text, *group in db.execute(_referrals_query(src)):
        month = month_number(month_text)
        if month < before_month:
            _add_referrals(counts, teams, names, month, *group)
    if not in_db:
        contacted = select(src.c.month, src.c.site, src.c.team, src.c.created_at, src.c.first_contact_at,
                           src.c.due_at, src.c.urgent).where(src.c.first_contact_at.isnot(None))
        for row in db.execute(contacted):
            month = month_number(row.month)
            if month < before_month:
                _count_contact(counts, hours, (row.site, row.team), month, row, due)
    return Collected(counts, hours, {s: _most_common(c) for s, c in names.items()}, teams)


def _events_query(ehr: EhrFilter | None, months: Sequence[int] | None) -> Any:
    q = (select(ReportEvent.month, ReportEvent.site, ReportEvent.kind, func.count())
         .where(ReportEvent.kind.in_(EVENT_KINDS)).group_by(ReportEvent.month, ReportEvent.site, ReportEvent.kind))
    q = q.where(ehr.events()) if ehr is not None else q
    return q if months is None else q.where(ReportEvent.month.in_([month_key(m) for m in months]))


def _referrals_query(src: Any) -> Any:
    keys = (src.c.month, src.c.site, src.c.team, src.c.site_name, src.c.closing_outcome, src.c.handoff)
    in_time = func.count().filter(src.c.in_time) if "in_time" in src.c else literal(0)
    return select(*keys, func.count(), in_time).group_by(*keys)


def _add_events(counts: Counts, teams: dict[str, set[str]], month: int, site: str, kind: str, n: int) -> None:
    counts[EVENT_KINDS[kind]][(site, "")][month] += n
    teams.setdefault(site, set())


def _add_referrals(counts: Counts, teams: dict[str, set[str]], names: dict[str, Counter], month: int, site: str,
                   team: str, site_name: str | None, outcome: str | None, handoff: str | None, n: int,
                   in_time: int) -> None:
    leaf = (site, team)
    teams[site].add(team)
    if site_name:
        names[site][site_name] += n
    _count_referrals(counts, leaf, month, outcome, handoff, n)
    if in_time:
        counts[CONTACTED_IN_TIME][leaf][month] += in_time


def count_months(db: Session, due: DueRule, ehr: EhrFilter | None,
                 months: Sequence[int] | None) -> dict[int, MonthCounts]:
    """PostgreSQL: ``months`` (None: every month) counted as kept (smart_app/report/memo.py), those with data. The
    referrals' counts and their hours to first contact in one statement (one read of the month's referrals). A few
    months are a short read: JIT compiling would cost more than it saves."""
    if months is not None:
        db.execute(text("SET LOCAL jit = off"))
    out: dict[int, MonthCounts] = defaultdict(lambda: ({"events": [], "referrals": []}, []))
    for month_text, site, kind, n in db.execute(_events_query(ehr, months)):
        out[month_number(month_text)][0]["events"].append([site, kind, n])
    src = _referral_rows(db, due, ehr, months)
    hours = func.array_agg(src.c.hours).filter(src.c.first_contact_at.isnot(None))
    by_leaf: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for month_text, *group, found in db.execute(_referrals_query(src).add_columns(hours)):
        month = month_number(month_text)
        out[month][0]["referrals"].append(group)
        if found:
            by_leaf[(month, group[0], group[1])].extend(found)
    for (month, site, team), found in by_leaf.items():
        out[month][1].append([site, team, found])
    return dict(out)


def _collect_kept(db: Session, due: DueRule, before_month: int, ehr: EhrFilter | None) -> Collected:
    """``collect`` from the months kept, counting again only those changed since they were kept (all of them when
    none are kept, or a change to any month was noted), and the months closed since."""
    key = memo.months_key(ehr, due)
    taken = memo.snapshot(db)  # before anything is read: a change it does not see is counted again next time
    kept = memo.kept_months(db, key)
    closed = range(0, before_month)
    recount: set[int] | None = None
    if kept is not None and kept.changed is not None and kept.through <= before_month:
        recount = {m for m in kept.changed if m < before_month} | set(range(kept.through, before_month))
    counted = {m: c for m, c in count_months(db, due, ehr, None if recount is None else sorted(recount)).items()
               if m < before_month} if recount is None or recount else {}
    bodies = {} if recount is None else {m: c for m, c in memo.read_months(db, key, closed).items()
                                         if m not in recount}
    bodies.update({m: c for m, (c, _hours) in counted.items()})
    memo.write_months(db, key, taken, before_month, recount, counted)
    counts: Counts = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    teams: dict[str, set[str]] = defaultdict(set)
    names: dict[str, Counter] = defaultdict(Counter)
    for month in sorted(bodies):
        for site, kind, n in bodies[month]["events"]:
            _add_events(counts, teams, month, site, kind, n)
    for month in sorted(bodies):
        for group in bodies[month]["referrals"]:
            _add_referrals(counts, teams, names, month, *group)

    def hours_of(months: range) -> HoursByLeaf:
        found = {} if recount is None else {m: h for m, h in memo.read_hours(db, key, months).items()
                                            if m not in recount}
        found.update({m: h for m, (_c, h) in counted.items() if m in months})
        out: HoursByLeaf = defaultdict(lambda: defaultdict(list))
        for month, rows in found.items():
            for site, team, hours in rows:
                out[(site, team)][month].extend(hours)
        return out

    return Collected(counts, {}, {s: _most_common(c) for s, c in names.items()}, teams, hours_of)


def _most_common(names: Counter) -> str:
    """The name a site's referrals give most often (the first in order among equals, so it does not depend on the
    order rows arrive in)."""
    return min(names.items(), key=lambda item: (-item[1], item[0]))[0]


def _count_referrals(counts: Counts, leaf: Leaf, month: int, outcome: str | None, handoff: str | None,
                     n: int) -> None:
    counts[REFERRALS][leaf][month] += n
    if outcome in CLOSED:
        counts[CLOSED[outcome]][leaf][month] += n
    if handoff:
        counts[HANDOFF_OFFERED][leaf][month] += n
    if handoff == handoff_codes.COMPLETED:
        counts[HANDOFF_COMPLETED][leaf][month] += n


def _count_contact(counts: Counts, hours: HoursByLeaf, leaf: Leaf, month: int,
                   record: Any, due: DueRule) -> None:
    contact = _aware(record.first_contact_at)
    waited = max(0.0, (contact - _aware(record.created_at)).total_seconds() / 3600)
    hours[leaf][month].append(waited)
    if waited <= due.hours(record):
        counts[CONTACTED_IN_TIME][leaf][month] += 1


def contact_medians(db: Session, collected: Collected, due: DueRule, months: range,
                    ehr: EhrFilter | None = None) -> dict[Row, tuple[int, float]]:
    """The referrals contacted and the median hours to first contact, per row (all sites, each site, each team),
    over ``months`` (closed months: the report's period). On PostgreSQL in the database (the middle values as
    ``percentile_disc``, averaged as ``statistics.median`` does), on SQLite from the hours ``collect`` kept, with
    the months kept from their hours (the same numbers: the hours are the database's)."""
    if collected.hours_of is not None:
        return _medians_of(collected.hours_of(months), months)
    if db.get_bind().dialect.name != "postgresql":
        return _medians_of(collected.contact_hours, months)
    src = _referral_rows(db, due, ehr)
    keys = [month_key(m) for m in months]
    q = (select(src.c.site, src.c.team, func.count(src.c.hours),
                func.percentile_disc(0.5).within_group(src.c.hours),
                func.percentile_disc(0.5).within_group(src.c.hours.desc()))
         .where(src.c.first_contact_at.isnot(None), src.c.month.in_(keys))
         .group_by(func.rollup(src.c.site, src.c.team)))
    out: dict[Row, tuple[int, float]] = {}
    for site, team, n, low, high in db.execute(q):
        row: Row = ALL if site is None else ("site", site) if team is None else ("team", site, team)
        out[row] = (n, low if n % 2 else (low + high) / 2)
    return out


def _medians_of(hours: HoursByLeaf, months: range) -> dict[Row, tuple[int, float]]:
    by_row: dict[Row, list[float]] = defaultdict(list)
    for (site, team), by_month in hours.items():
        values = [h for month, found in by_month.items() if month in months for h in found]
        if values:
            for row in (ALL, ("site", site), ("team", site, team)):
                by_row[row].extend(values)
    return {row: (len(values), statistics.median(values)) for row, values in by_row.items()}
