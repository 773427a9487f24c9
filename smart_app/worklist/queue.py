"""The social-work queue in SQL: filters, counts, sort and paging over every referral in scope, with no cap.

Everything the queue filters, counts or sorts by is a plain column (status, urgency, site name, times) or a keyed
HMAC (the ``referral_program`` keys, ``mrn_key``); encrypted summaries are read only for the page shown, and an
encrypted program name once per program (then kept in memory: a program's key names it for good).

Counts: each filter (a ``Facet``) shows how many referrals each of its values would show with the *other*
filters kept. One grouped query returns, for every combination of facet values present (urgency, status, site,
age, the EHR profile and the set of program keys), how many referrals have it: thousands of cells at a year's
volume. Every facet's counts, the number shown and the total are sums over those cells, summed in the same
statement (``_tally_statement``: one row per facet value, key set and triage tier, a few hundred), so the cells
never leave the database. The program filter is the one facet with several values per referral (a referral can
name two programs, two programs can share a name): its cell value is the referral's set of program keys
(``referral.program_keys``), so a referral is counted once under each name it has. The page itself is a second
query: the same conditions, the chosen order, LIMIT and OFFSET.

A new filter is one more ``Facet`` in ``FACETS`` (``column_facet`` for a plain column): its values group, count,
filter and link like the others'.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from threading import Lock
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    DateTime,
    Select,
    String,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import CTE

from config.deployment import Site
from smart_app.ops.i18n import gettext as _
from smart_app.store.crypto import Undecryptable, decrypt_json
from smart_app.store.models import CLOSED_STORED, OPEN_STORED, ReferralCell, ReferralProgram, ReferralRecord
from smart_app.store.queue_cells import NO_PROGRAM_INDEX
from smart_app.store.task_status import CLOSED, LEGACY, OPEN, REQUESTED, STATUSES, label
from smart_app.worklist.due import DueRule, due_rule
from smart_app.worklist.routing import UNROUTED
from smart_app.worklist.scope import NO_PROGRAM, Scope, keysets_of, of_ehr, scoped_query, unrouted_untaken
from smart_app.worklist.search import Search

AGE_BUCKETS = ("under_1_day", "1_to_7_days", "over_7_days")
URGENCY_VALUES = ("urgent", "routine", "overdue")
OVERDUE_ROUTINE = "overdue-routine"  # a dimension value: routine and overdue (the filter values show it under both)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Clock:
    """The moments the queue's time-based filters compare with, fixed once per request. A referral with a stored
    ``due_at`` is overdue after it; one without (made before due times) after its urgency's due time counted from
    ``created_at`` around the clock: made before ``urgent_before`` (urgent) or ``routine_before`` (routine)."""

    now: datetime
    urgent_before: datetime
    routine_before: datetime
    me: str | None = None  # the user's fhirUser reference: whom the "mine" filter means (fixed with the request)

    @classmethod
    def at(cls, now: datetime, rule: DueRule, me: str | None = None) -> Clock:
        return cls(now=now, urgent_before=now - rule.urgent.around_the_clock,
                   routine_before=now - rule.routine.around_the_clock, me=me)

    @property
    def day_ago(self) -> datetime:
        return self.now - DAY

    @property
    def week_ago(self) -> datetime:
        return self.now - WEEK

    @property
    def me_key(self) -> str:
        """Whom "mine" means as a value to compare with (nobody's when there is no user)."""
        return self.me or ""

    def params(self) -> dict[str, Any]:
        """This clock's moments as the values of ``CLOCK_PARAMS`` (a statement built once for its shape)."""
        return {"clock_now": self.now, "clock_urgent_before": self.urgent_before,
                "clock_routine_before": self.routine_before, "clock_day_ago": self.day_ago,
                "clock_week_ago": self.week_ago, "clock_me": self.me_key}

    def due(self, created: datetime, urgent: bool, due_at: datetime | None) -> datetime:
        """A referral's due time (as the SQL below reads it), for the page's rows."""
        if due_at is not None:
            return due_at
        return created + (self.now - (self.urgent_before if urgent else self.routine_before))

    def overdue(self, created: datetime, urgent: bool, due_at: datetime | None, contacted: bool,
                status: str) -> bool:
        return status in OPEN and not contacted and self.due(created, urgent, due_at) < self.now


@dataclass(frozen=True)
class ClockParams:
    """A ``Clock``'s moments as bound parameters, read where the grouped count and the tallies read a clock: a
    statement built with it holds no moment, so it is built once per scope and filter shape and each request passes
    ``Clock.params``."""

    now: Any
    urgent_before: Any
    routine_before: Any
    day_ago: Any
    week_ago: Any
    me_key: Any


_MOMENT = DateTime(timezone=True)
CLOCK_PARAMS = ClockParams(
    now=bindparam("clock_now", type_=_MOMENT), urgent_before=bindparam("clock_urgent_before", type_=_MOMENT),
    routine_before=bindparam("clock_routine_before", type_=_MOMENT),
    day_ago=bindparam("clock_day_ago", type_=_MOMENT), week_ago=bindparam("clock_week_ago", type_=_MOMENT),
    me_key=bindparam("clock_me", type_=String))


def clock_now(settings: Site, now: datetime | None = None, me: str | None = None) -> Clock:
    """The clock of a request, a probe or a scrape: now (or the moment given), and the deployment's due times."""
    return Clock.at(now or datetime.now(UTC), due_rule(settings), me)


# -- status and urgency as SQL ---------------------------------------------------------------------------------
def _raw(statuses: Iterable[str]) -> tuple[str, ...]:
    """Stored spellings of these statuses: the FHIR code and the older words that read as it."""
    wanted = set(statuses)
    return tuple(sorted(wanted | {old for old, new in LEGACY.items() if new in wanted}))


def _stored_in(values: Iterable[str]) -> ColumnElement[bool]:
    """``status IN (...)`` with the values written into the statement: PostgreSQL proves a partial index's predicate
    from constants only (a parameter would leave it out of a prepared statement's generic plan)."""
    return ReferralRecord.status.in_(bindparam(None, tuple(values), expanding=True, literal_execute=True))


STATUS = ReferralRecord.status  # NOT NULL in every schema (task_status.normalise reads a missing one as requested)
# NOT IN these is the predicate of ix_referral_queue_open (smart_app/store/models.py): the open filter's condition.
IS_CLOSED = _stored_in(CLOSED_STORED)
# Open, in the form ix_referral_status_created and the partial ix_referral_open_route (this very list is its
# predicate, smart_app/store/models.py) serve (status is NOT NULL): what counts over every referral use.
IS_OPEN_STORED = ReferralRecord.status.in_(OPEN_STORED)
IS_URGENT = ReferralRecord.urgent.is_(True)


IS_ROUTINE = or_(ReferralRecord.urgent.is_(False), ReferralRecord.urgent.is_(None))


def overdue(clock: Clock | ClockParams) -> ColumnElement[bool]:
    """Open, never contacted, and past its due time (smart_app/worklist/due.py; see ``Clock`` for one without).
    Built once per clock: a request's page, tiers and banner share the expression (immutable), whose building costs
    more than compiling a cached statement."""
    return _overdue_at(clock) if isinstance(clock, Clock) else _overdue(clock)


OVERDUE_KEPT_MAX = 32  # clocks whose overdue condition is kept: a request's, for its statements


@lru_cache(maxsize=OVERDUE_KEPT_MAX)
def _overdue_at(clock: Clock) -> ColumnElement[bool]:
    return _overdue(clock)


def _overdue(clock: Clock | ClockParams) -> ColumnElement[bool]:
    record = ReferralRecord
    past_due = or_(record.due_at < clock.now,
                   and_(record.due_at.is_(None), or_(and_(IS_URGENT, record.created_at < clock.urgent_before),
                                                     and_(IS_ROUTINE, record.created_at < clock.routine_before))))
    # The status as an expression no index has: the overdue banner and the alert counts then read the covering
    # ix_referral_open_route (IS_OPEN_STORED beside this) rather than walking ix_referral_status_created to the heap.
    return and_(record.first_contact_at.is_(None), func.coalesce(STATUS, REQUESTED).in_(_raw(OPEN)), past_due)


def site_not_recorded() -> str:
    return _("Site not recorded")


# -- facets ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Facet:
    """One filter of the queue over one value per referral.

    ``dimension``: the referral's value in SQL (grouped and counted); ``values_of``: the filter values a
    dimension value shows under (an overdue referral is also urgent; every status is also open or closed);
    ``where``: the SQL condition of a chosen filter value (None: no condition); ``options``: the values offered,
    from the dimension values present; ``clean``: the chosen value as the queue uses it."""

    name: str
    title: Callable[[], str]
    dimension: Callable[[Clock | ClockParams], ColumnElement[Any]]
    values_of: Callable[[Any], tuple[str, ...]]
    where: Callable[[str, Clock], ColumnElement[bool] | None]
    options: Callable[[Iterable[Any]], list[tuple[str, str]]]
    default: str = ""
    clean: Callable[[str], str] = lambda value: value
    # The SQL test that a dimension value (a column of the grouped count) shows under a chosen filter value: true
    # exactly where ``chosen in values_of(value)`` (tests/worklist/test_queue_tallies.py compares the two).
    shows: Callable[[ColumnElement[Any], str], ColumnElement[bool]] = lambda column, chosen: column == chosen


def column_facet(name: str, title: Callable[[], str], column: Any, labels: Callable[[str], str] | None = None,
                 *, none_value: str = "none") -> Facet:
    """A facet over one plain column: its values are the column's (NULL as ``none_value``), shown through
    ``labels`` (default: as stored), in the order of their labels."""
    dimension = func.coalesce(column, none_value)
    text = labels or (lambda value: value)
    return Facet(name=name, title=title, dimension=lambda _clock: dimension,
                 values_of=lambda value: (str(value),), where=lambda value, _clock: dimension == value,
                 options=lambda present: sorted(((str(v), text(str(v))) for v in set(present)), key=lambda o: o[1]))


def _shows_in(domain: tuple[str, ...], values_of: Callable[[Any], tuple[str, ...]]) -> Callable[
        [ColumnElement[Any], str], ColumnElement[bool]]:
    """The ``shows`` test of a facet whose dimension takes only the values of ``domain``."""
    def shows(column: ColumnElement[Any], chosen: str) -> ColumnElement[bool]:
        values = [value for value in domain if chosen in values_of(value)]
        return column.in_(values) if values else false()
    return shows


def _urgency_facet() -> Facet:
    def dimension(clock: Clock | ClockParams) -> ColumnElement[Any]:
        late = overdue(clock)
        return case((and_(late, IS_URGENT), "overdue"), (late, OVERDUE_ROUTINE), (IS_URGENT, "urgent"),
                    else_="routine")

    def where(value: str, clock: Clock) -> ColumnElement[bool] | None:
        return {"urgent": IS_URGENT, "overdue": overdue(clock), "routine": IS_ROUTINE}.get(value)

    def values_of(value: Any) -> tuple[str, ...]:
        return {"overdue": ("urgent", "overdue"), OVERDUE_ROUTINE: ("routine", "overdue")}.get(value, (str(value),))

    return Facet(
        name="urgency", title=lambda: _("Urgency"), dimension=dimension, values_of=values_of, where=where,
        options=lambda _present: [("urgent", _("Urgent")), ("overdue", _("Overdue: not contacted by the due time")),
                                  ("routine", _("Not urgent"))],
        clean=lambda value: value if value in URGENCY_VALUES else "",  # an unknown value shows everything
        shows=_shows_in(("overdue", OVERDUE_ROUTINE, "urgent", "routine"), values_of))


def _status_of(raw: Any) -> tuple[str, ...]:
    status = LEGACY.get(str(raw), str(raw))
    return (status, "closed" if status in CLOSED else "open", "all")


# Every stored status whose filter values are not (itself, "open", "all"): the FHIR codes and the older words.
_STATUSES_NAMED = tuple(sorted({*STATUSES, *CLOSED, *LEGACY, *LEGACY.values()}))


def _status_shows(column: ColumnElement[Any], chosen: str) -> ColumnElement[bool]:
    """``chosen in _status_of(column)``: the named statuses that show under it, and any other stored value, which
    reads as itself and open."""
    named = [raw for raw in _STATUSES_NAMED if chosen in _status_of(raw)]
    tests = [column.in_(named)] if named else []
    if chosen in ("open", "all"):
        tests.append(column.not_in(_STATUSES_NAMED))
    elif chosen not in _STATUSES_NAMED:
        tests.append(column == chosen)
    return or_(*tests) if tests else false()


def _status_where(value: str, _clock: Clock) -> ColumnElement[bool] | None:
    if value == "all":
        return None
    if value == "open":
        return not_(IS_CLOSED)
    if value == "closed":
        return IS_CLOSED
    return STATUS.in_(_raw([value]))


def _status_facet() -> Facet:
    return Facet(
        name="status", title=lambda: _("Status"), dimension=lambda _clock: STATUS, values_of=_status_of,
        where=_status_where, default="open", shows=_status_shows,
        options=lambda _present: [("open", _("All open")), *[(s, label(s)) for s in STATUSES],
                                  ("closed", _("All closed")), ("all", _("Everything"))])


def _site_facet() -> Facet:
    def where(value: str, _clock: Clock) -> ColumnElement[bool]:
        if value == site_not_recorded():
            return or_(ReferralRecord.site_name.is_(None), ReferralRecord.site_name == "")
        return ReferralRecord.site_name == value

    def shows(column: ColumnElement[Any], chosen: str) -> ColumnElement[bool]:
        # The dimension is never NULL (COALESCE to ""): "" shows as "Site not recorded", any other name as itself.
        return column.in_([chosen, ""]) if chosen == site_not_recorded() else column == chosen

    return Facet(
        name="site", title=lambda: _("Site"), dimension=lambda _clock: func.coalesce(ReferralRecord.site_name, ""),
        values_of=lambda v: (str(v) or site_not_recorded(),), where=where, shows=shows,
        options=lambda present: [(s, s) for s in sorted({str(v) or site_not_recorded() for v in present})])


def age_label(bucket: str) -> str:
    return {"under_1_day": _("Less than a day"), "1_to_7_days": _("1 to 7 days"),
            "over_7_days": _("Over 7 days")}.get(bucket, bucket)


def _age_facet() -> Facet:
    def dimension(clock: Clock | ClockParams) -> ColumnElement[Any]:
        return case((ReferralRecord.created_at > clock.day_ago, "under_1_day"),
                    (ReferralRecord.created_at > clock.week_ago, "1_to_7_days"), else_="over_7_days")

    def where(value: str, clock: Clock) -> ColumnElement[bool]:
        created = ReferralRecord.created_at
        return {"under_1_day": created > clock.now - DAY,
                "1_to_7_days": and_(created <= clock.now - DAY, created > clock.now - WEEK),
                "over_7_days": created <= clock.now - WEEK}.get(value, false())

    return Facet(name="age", title=lambda: _("Waiting"), dimension=dimension, values_of=lambda v: (str(v),),
                 where=where, options=lambda _present: [(b, age_label(b)) for b in AGE_BUCKETS],
                 shows=_shows_in(AGE_BUCKETS, lambda v: (str(v),)))


ASSIGNEE_VALUES = ("mine", "unassigned", "others")


def _assignee_facet() -> Facet:
    """Whose it is: the user's own (taken by them), nobody's yet, or a colleague's."""
    def dimension(clock: Clock | ClockParams) -> ColumnElement[Any]:
        return case((ReferralRecord.assignee.is_(None), "unassigned"),
                    (ReferralRecord.assignee == clock.me_key, "mine"), else_="others")

    def where(value: str, clock: Clock) -> ColumnElement[bool] | None:
        mine = ReferralRecord.assignee == clock.me if clock.me else false()
        return {"mine": mine, "unassigned": ReferralRecord.assignee.is_(None),
                "others": and_(ReferralRecord.assignee.is_not(None), not_(mine))}.get(value)

    return Facet(
        name="assignee", title=lambda: _("Assigned"), dimension=dimension, values_of=lambda v: (str(v),),
        where=where, options=lambda _present: [("mine", _("Mine")), ("unassigned", _("Unassigned")),
                                               ("others", _("Taken by a colleague"))],
        clean=lambda value: value if value in ASSIGNEE_VALUES else "",
        shows=_shows_in(ASSIGNEE_VALUES, lambda v: (str(v),)))


# The queue's single-valued filters, in the order the filter bar shows them (the program filter follows site).
FACETS: list[Facet] = [_assignee_facet(), _urgency_facet(), _status_facet(), _site_facet(), _age_facet()]
PROGRAM = "program"
FACET_NAMES = tuple(f.name for f in FACETS)  # a cell row's first columns, in this order


def facet_names() -> list[str]:
    names = [f.name for f in FACETS]
    return names[:names.index("site") + 1] + [PROGRAM] + names[names.index("site") + 1:]


# -- programs (several per referral: keyed HMACs, names encrypted) -----------------------------------------------
@dataclass
class Programs:
    """The programs of the referrals in scope: name per key, keys per name."""

    names: dict[str, str] = field(default_factory=dict)
    # Every ``referral.program_keys`` value in scope (None: a referral whose programs are not indexed yet).
    key_sets: set[str | None] = field(default_factory=set)

    def keys_for(self, name: str) -> list[str]:
        return sorted(k for k, n in self.names.items() if n == name)

    def sorted_names(self) -> list[str]:
        return sorted(set(self.names.values()))

    def of(self, keys: str | None) -> tuple[str, ...]:
        """The names of a referral's program keys (as the grouped query returns them, joined by commas)."""
        found = (self.names.get(k) for k in (keys or "").split(","))
        return tuple(dict.fromkeys(n for n in found if n))

    @staticmethod
    def shows(column: ColumnElement[Any], keys: Iterable[str]) -> ColumnElement[bool]:
        """The SQL test that a key set (``referral.program_keys``: sorted keys joined by commas, NULL while not
        indexed) holds one of ``keys``: the keys whose program has the chosen name."""
        sep = literal(",", String)
        joined = sep.op("||", return_type=String)(func.coalesce(column, "")).op("||", return_type=String)(sep)
        tests = [joined.contains(f",{key},", autoescape=True) for key in sorted(keys)]
        return or_(*tests) if tests else false()

    def where(self, name: str) -> ColumnElement[bool]:
        keys = self.keys_for(name)
        if not keys:
            return false()
        return exists().where(ReferralProgram.referral_id == ReferralRecord.id, ReferralProgram.key.in_(keys))

    def rank(self) -> ColumnElement[Any]:
        """A referral's place in program order (its first program by name; none last), for sorting.

        Read from the referral row: each ``program_keys`` value in scope (a few hundred sets in a year) maps to the
        rank of its first-named program, so the sort reads no ``referral_program`` row. A referral whose programs
        are not indexed yet (``program_keys`` NULL, made by an older version) needs its rows: then every referral is
        ranked from them, one lookup per referral. The expression is built once per names and key sets: they
        change only when a referral brings a new set or the directory renames a program."""
        return _program_rank(frozenset(self.names.items()), frozenset(self.key_sets))


# Distinct (program names, key sets) pairs whose sort expression is kept: one per scope seen lately.
PROGRAM_RANK_CACHE_MAX = 64


@lru_cache(maxsize=PROGRAM_RANK_CACHE_MAX)
def _program_rank(names: frozenset[tuple[str, str]], key_sets: frozenset[str | None]) -> ColumnElement[Any]:
    order = {name: i for i, name in enumerate(sorted({name for _key, name in names}))}
    ranks = {key: order[name] for key, name in names}
    if not ranks:
        return literal(0)
    if None in key_sets:
        rank = case(ranks, value=ReferralProgram.key, else_=len(order))
        return (select(func.min(rank)).where(ReferralProgram.referral_id == ReferralRecord.id)
                .scalar_subquery())
    by_set = {keys: min((ranks[k] for k in keys.split(",") if k in ranks), default=len(order))
              for keys in sorted(k for k in key_sets if k)}
    if not by_set:
        return literal(len(order))
    return case(by_set, value=ReferralRecord.program_keys, else_=len(order))


PROGRAM_NAME_CACHE_MAX = 10_000


def _program_name(program: dict[str, Any] | None, services: dict[str, Any]) -> str | None:
    """As the referral page names it: the name saved with the referral, else the directory's."""
    if not program:
        return None
    service = services.get(program.get("id"))
    return program.get("name") or (service.program if service is not None else None)


# -- the request and the answer --------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueQuery:
    """What the social worker asked for: filter values by facet name, sort, page, an optional search."""

    filters: dict[str, str]
    sort: str = "triage"
    page: int = 1
    search: Search | None = None

    @classmethod
    def from_args(cls, args: Any, search: Search | None = None) -> QueueQuery:
        filters = {}
        for facet in FACETS:
            value = facet.clean((args.get(facet.name) or "").strip()[:256])
            filters[facet.name] = value or ("all" if search and facet.name == "status" else facet.default)
        filters[PROGRAM] = (args.get(PROGRAM) or "").strip()[:256]
        sort = args.get("sort") or "triage"
        try:
            page = max(1, int(args.get("page") or 1))
        except ValueError:
            page = 1
        return cls(filters=filters, sort=sort if sort in SORTS else "triage", page=page, search=search)


@dataclass
class QueueView:
    """One page of the queue: the referrals shown (records: decrypt only these), counts and paging."""

    query: QueueQuery
    options: dict[str, list[tuple[str, str]]]
    counts: dict[str, dict[str, int]]
    shown: int
    total: int
    page: int
    pages: int
    first: int
    records: list[ReferralRecord]
    profiles: set[str]


@dataclass(frozen=True)
class Sort:
    title: Callable[[], str]
    order: Callable[[Clock, Programs], list[Any]]


def _status_rank() -> ColumnElement[Any]:
    ranks = {raw: i for i, status in enumerate(STATUSES) for raw in _raw([status])}
    return case(ranks, value=STATUS, else_=len(STATUSES))


SORTS: dict[str, Sort] = {
    # Triage: overdue first (urgent ones before routine), then urgent, open before closed, then the longest waiting.
    "triage": Sort(lambda: _("Urgent first"), lambda clock, _p: [
        case((overdue(clock), 0), else_=1), case((IS_URGENT, 0), else_=1), case((IS_CLOSED, 1), else_=0),
        ReferralRecord.created_at, ReferralRecord.id]),
    "oldest": Sort(lambda: _("Oldest first"), lambda _c, _p: [ReferralRecord.created_at, ReferralRecord.id]),
    "newest": Sort(lambda: _("Newest first"),
                   lambda _c, _p: [ReferralRecord.created_at.desc(), ReferralRecord.id.desc()]),
    "site": Sort(lambda: _("Site"), lambda _c, _p: [func.coalesce(ReferralRecord.site_name, site_not_recorded()),
                                                     ReferralRecord.created_at, ReferralRecord.id]),
    "program": Sort(lambda: _("Program"), lambda _c, programs: [programs.rank(), ReferralRecord.created_at,
                                                                ReferralRecord.id]),
    "status": Sort(lambda: _("Status"), lambda _c, _p: [_status_rank(), ReferralRecord.created_at,
                                                         ReferralRecord.id]),
}


# -- the queries -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """Referrals sharing one value of every facet (and one EHR profile): ``n`` of them."""

    values: dict[str, Any]
    profile: str
    n: int
    keys: str | None = None  # its ``referral.program_keys`` (the program sort's tiers)
    pinned: bool = False  # open, unrouted and nobody's: read above every tier of the page (``Queue._page``)


# The order within a tier of the sorts ``Queue._page`` reads tier by tier (see there); ix_referral_created and
# ix_referral_queue_open serve it.
WITHIN_TIER: dict[str, list[Any]] = {
    "triage": [ReferralRecord.created_at, ReferralRecord.id],
    "program": [ReferralRecord.created_at, ReferralRecord.id],
    "oldest": [ReferralRecord.created_at, ReferralRecord.id],
    "newest": [ReferralRecord.created_at.desc(), ReferralRecord.id.desc()],
}


KEYS, TRIAGE, PROFILE = "keys", "triage", "profile"  # the tally rows' kinds besides the facets' names


def _tally_statement(cells: CTE, chosen: dict[str, str], program_keys: set[str]) -> Select[Any]:
    """The tallies over the grouped count ``cells``, as rows (kind, value, value2, pinned, total, others, shown):

    - per facet (kind: its name) and value of its dimension: every referral with it (``total``: the values
      present), and those the *other* chosen filters show (``others``: the facet's counts, before they are spread
      over the filter values each dimension value shows under);
    - per program key set and pinned or not (``keys``): total, the referrals the filters other than the program's
      show, and those every filter shows (``shown``: the number shown and the program sort's tiers);
    - per urgency, stored status and pinned or not (``triage``): those every filter shows (the triage sort's
      tiers, and how many of each tier are pinned above the tiers);
    - each EHR profile present (``profile``).
    A chosen filter is each facet's ``shows`` test on its column (the program's: holds one of ``program_keys``)."""
    c = cells.c
    dims = {facet.name: c[f"d_{i}"] for i, facet in enumerate(FACETS)}
    tests = _tally_tests(cells, chosen, program_keys)

    def n_shown(but: str | None = None) -> ColumnElement[Any]:
        kept = [test for name, test in tests.items() if name != but]
        return func.sum(case((and_(*kept), c.n), else_=0)) if kept else func.sum(c.n)

    none, zero = null(), literal(0)
    parts = [select(literal(facet.name), dims[facet.name], none, zero, func.sum(c.n), n_shown(facet.name), zero)
             .group_by(dims[facet.name]) for facet in FACETS]
    parts += [select(literal(KEYS), c["keys"], none, c.pinned, func.sum(c.n), n_shown(PROGRAM), n_shown())
              .group_by(c["keys"], c.pinned),
              select(literal(TRIAGE), dims["urgency"], dims["status"], c.pinned, zero, zero, n_shown())
              .group_by(dims["urgency"], dims["status"], c.pinned),
              select(literal(PROFILE), c.profile, none, zero, zero, zero, zero).group_by(c.profile)]
    return union_all(*parts)


def _tally_tests(cells: CTE, chosen: dict[str, str], program_keys: set[str]) -> dict[str, ColumnElement[bool]]:
    """Each chosen filter's test on the grouped count's columns (the program's: the key set holds one of
    ``program_keys``)."""
    c = cells.c
    tests = {facet.name: facet.shows(c[f"d_{i}"], chosen[facet.name])
             for i, facet in enumerate(FACETS) if chosen[facet.name]}
    if chosen[PROGRAM]:
        tests[PROGRAM] = Programs.shows(c["keys"], program_keys)
    return tests


TallyRows = Callable[[Iterable[Any]], list[tuple[Any, ...]]]


def _tally_sets_statement(cells: CTE, chosen: dict[str, str], program_keys: set[str]) -> tuple[Select[Any],
                                                                                                  TallyRows]:
    """``_tally_statement``'s rows from one pass over the grouped count (PostgreSQL): one ``GROUPING SETS`` of the
    same groupings (each facet's dimension; key set and pinned; urgency, status and pinned; profile), each distinct
    sum once, instead of one scan and aggregate of the cells per grouping. Returns the statement and what turns its
    rows into ``_tally_statement``'s (kind, value, value2, pinned, total, others, shown)."""
    c = cells.c
    tests = _tally_tests(cells, chosen, program_keys)
    cols = [*(c[f"d_{i}"] for i in range(len(FACETS))), c["keys"], c.pinned, c.profile]
    keys_at, pinned_at, profile_at = len(FACETS), len(FACETS) + 1, len(FACETS) + 2
    urgency_at, status_at = FACET_NAMES.index("urgency"), FACET_NAMES.index("status")
    sets: dict[str, tuple[int, ...]] = {name: (i,) for i, name in enumerate(FACET_NAMES)}
    sets |= {KEYS: (keys_at, pinned_at), TRIAGE: (urgency_at, status_at, pinned_at), PROFILE: (profile_at,)}
    # GROUPING(every column): a bit per column left out of the row's grouping set, the first column's the highest.
    kind_of = {sum(1 << (len(cols) - 1 - i) for i in range(len(cols)) if i not in group): kind
               for kind, group in sets.items()}
    # The referrals each count keeps: every chosen filter but the facet's own (None: every one); one sum per
    # distinct set of filters (the empty set: every referral, the total).
    kept = {None: frozenset(tests), **{name: frozenset(tests) - {name} for name in (*FACET_NAMES, PROGRAM)}}
    distinct = list(dict.fromkeys([frozenset(), *kept.values()]))
    zero = literal_column("0")
    sums = [func.sum(case((and_(*[tests[name] for name in sorted(names)]), c.n), else_=zero)) if names
            else func.sum(c.n) for names in distinct]
    at = {name: distinct.index(names) for name, names in kept.items()}
    statement = (select(func.grouping(*cols), *cols, *sums)
                 .group_by(func.grouping_sets(*[tuple_(*[cols[i] for i in group]) for group in sets.values()])))

    def rows(found: Iterable[Any]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for row in found:
            kind, values, n = kind_of[row[0]], row[1:len(cols) + 1], row[len(cols) + 1:]
            if kind == KEYS:
                out.append((KEYS, values[keys_at], None, values[pinned_at], n[0], n[at[PROGRAM]], n[at[None]]))
            elif kind == TRIAGE:
                out.append((TRIAGE, values[urgency_at], values[status_at], values[pinned_at], 0, 0, n[at[None]]))
            elif kind == PROFILE:
                out.append((PROFILE, values[profile_at], None, 0, 0, 0, 0))
            else:
                out.append((kind, values[FACET_NAMES.index(kind)], None, 0, n[0], n[at[kind]], 0))
        return out

    return statement, rows


@dataclass
class Tallies:
    """What a queue page shows of its counts: per facet and filter value, the referrals the other filters keep;
    the number shown and in all; the dimension values present (the site options); the EHR profiles; per program key
    set and per triage tier key (urgency, stored status), the referrals shown, and of them the pinned ones."""

    counts: dict[str, Counter[str]]
    shown: int
    total: int
    present: dict[str, set[Any]]
    profiles: set[str]
    by_keys: Counter[str | None]
    triage: Counter[tuple[str, str]]
    pinned_keys: Counter[str | None]
    pinned_triage: Counter[tuple[str, str]]

    @classmethod
    def of(cls, rows: Iterable[Any], programs: Programs) -> Tallies:
        of_facet = {facet.name: facet.values_of for facet in FACETS}
        out = cls(counts={name: Counter() for name in facet_names()}, shown=0, total=0,
                  present={name: set() for name in FACET_NAMES}, profiles=set(), by_keys=Counter(), triage=Counter(),
                  pinned_keys=Counter(), pinned_triage=Counter())
        for kind, value, value2, is_pinned, total, others, shown in rows:
            if kind in of_facet:
                out.present[kind].add(value)
                for shown_as in of_facet[kind](value):
                    out.counts[kind][shown_as] += int(others)
            elif kind == KEYS:
                for name in programs.of(value):
                    out.counts[PROGRAM][name] += int(others)
                if shown:  # a key set or tier with none shown is no tier
                    out.by_keys[value] += int(shown)
                    if is_pinned:
                        out.pinned_keys[value] += int(shown)
                out.shown += int(shown)
                out.total += int(total)
            elif kind == TRIAGE:
                if shown:
                    out.triage[(value, value2)] += int(shown)
                    if is_pinned:
                        out.pinned_triage[(value, value2)] += int(shown)
            else:
                out.profiles.add(value)
        return out


Tier = tuple[ColumnElement[bool], int, int]  # a tier's condition, its referrals shown, and how many are pinned


def _triage_tiers(shown: Counter[tuple[str, str]], pinned_shown: Counter[tuple[str, str]], clock: Clock) -> list[Tier]:
    """The triage sort's tiers (its keys before age: overdue, urgent, closed) in order, each as the condition that
    its sort keys have those values, its number of referrals shown and of pinned ones (``shown``,
    ``pinned_shown``: per urgency and stored status)."""
    sizes: Counter[tuple[int, int, int]] = Counter()
    pins: Counter[tuple[int, int, int]] = Counter()
    for (urgency, status), n in shown.items():
        late = 0 if urgency in ("overdue", OVERDUE_ROUTINE) else 1
        urgent = 0 if urgency in ("overdue", "urgent") else 1
        closed = 1 if str(status) in CLOSED_STORED else 0
        sizes[(late, urgent, closed)] += n
        pins[(late, urgent, closed)] += pinned_shown[(urgency, status)]
    # Each key as a plain condition, not ``CASE ... = k``, so the planner estimates how many rows a tier has (an
    # equality on a CASE it takes for a handful and sorts instead of walking the index). IS NOT TRUE is the CASE's
    # ELSE: a NULL condition (overdue's due_at comparison when there is no due_at) sorts as false.
    late = overdue(clock)
    late_is = {0: late, 1: late.is_not(True)}
    urgent_is = {0: IS_URGENT, 1: ReferralRecord.urgent.is_not(True)}
    closed_is = {0: not_(IS_CLOSED), 1: IS_CLOSED}
    return [(and_(late_is[late], urgent_is[urgent], closed_is[closed]), n, pins[(late, urgent, closed)])
            for (late, urgent, closed), n in sorted(sizes.items()) if n]


def _program_tiers(shown: Counter[str | None], pinned_shown: Counter[str | None], programs: Programs) -> list[Tier]:
    """The program sort's tiers: the referrals whose first-named program has each rank (``Programs.rank``), as a
    condition on ``referral.program_keys`` (the key sets of that rank), its number of referrals shown and of pinned
    ones (``shown``, ``pinned_shown``: per key set)."""
    order = {name: i for i, name in enumerate(programs.sorted_names())}
    ranks = {key: order[name] for key, name in programs.names.items()}
    sets: dict[int, set[str]] = {}
    sizes: Counter[int] = Counter()
    pins: Counter[int] = Counter()
    rank_of: dict[str, int] = {}  # per key set: cells share a few dozen of them
    for key_set, n in shown.items():
        keys = key_set or ""
        if keys not in rank_of:
            rank_of[keys] = min((ranks[k] for k in keys.split(",") if k in ranks), default=len(order))
        rank = rank_of[keys]
        sets.setdefault(rank, set()).add(keys)
        sizes[rank] += n
        pins[rank] += pinned_shown[key_set]
    return [(ReferralRecord.program_keys.in_(sorted(sets[rank])), sizes[rank], pins[rank])
            for rank in sorted(sizes) if sizes[rank]]


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


AS_CELL = "as a cell"  # ``Queue._live_rows``: whose a referral is as its cell counts it (no "mine")


@lru_cache(maxsize=1)  # the same condition always (an expression is immutable): built once
def pinned() -> ColumnElement[bool]:
    """Pinned above every tier of the queue: open, unrouted, and nobody's (see ``Queue.order``)."""
    return and_(unrouted_untaken(), ~IS_CLOSED)


# A referral's pinned value as the grouped count groups it (1 or 0; NULL route or assignee: not pinned).
PINNED = case((pinned(), 1), else_=0)


@dataclass(frozen=True)
class _Border:
    """Where the age filter changes value (a day, a week before now): made on or before ``moment`` is ``older``,
    after it ``younger``. ``day``: the UTC day it cuts through; a cell of that day counts under ``larger``, the age
    of the part of the day on the larger side of the border."""

    moment: Any  # a datetime, or (``as_params``) a bound parameter, as are ``day``, ``start`` and ``end``
    older: str
    younger: str
    day: Any
    larger: str
    start: Any  # the day's first moment, and the next day's
    end: Any
    month: Any  # the first day of the day's month

    @classmethod
    def at(cls, moment: datetime, older: str, younger: str) -> _Border:
        day = moment.astimezone(UTC).date()
        start, end = _day_start(day), _day_start(day + timedelta(days=1))
        return cls(moment=moment, older=older, younger=younger, day=day,
                   larger=younger if end - moment > moment - start else older, start=start, end=end,
                   month=day.replace(day=1))

    def as_params(self, name: str) -> tuple[_Border, dict[str, Any]]:
        """This border with its moments as bound parameters (only which part is larger shapes the SQL), and their
        values."""
        values = {f"{name}_moment": self.moment, f"{name}_day": self.day, f"{name}_start": self.start,
                  f"{name}_end": self.end, f"{name}_month": self.month}
        types = {"moment": _MOMENT, "day": Date(), "start": _MOMENT, "end": _MOMENT, "month": Date()}
        params = {part: bindparam(f"{name}_{part}", type_=type_) for part, type_ in types.items()}
        return replace(self, **params), values

    def smaller_part(self) -> ColumnElement[bool]:
        """The referrals made in the smaller part of the day (at most half a day): counted live."""
        created = ReferralRecord.created_at
        if self.larger == self.older:
            return and_(created > self.moment, created < self.end)
        return and_(created >= self.start, created <= self.moment)

    @staticmethod
    def ages(bucket: Any, borders: list[_Border]) -> ColumnElement[Any]:
        """A cell's age filter value from its day (``borders`` from the most distant)."""
        whens = []
        for border in reversed(borders):
            whens += [(bucket > border.day, border.younger), (bucket == border.day, border.larger)]
        return case(*whens, else_=borders[0].older)


class Queue:
    """The queue of one scope at one moment (a request). ``program_cache``: decrypted programs by key, kept by
    the caller across requests (a key is an HMAC of the program's id and name, so it always means the same)."""

    def __init__(self, db: Session, scope: Scope, clock: Clock, query: QueueQuery, services: dict[str, Any],
                 program_cache: dict[str, dict[str, Any]] | None = None) -> None:
        self.db, self.scope, self.clock, self.query = db, scope, clock, query
        self.services = services
        self.cache = program_cache if program_cache is not None else {}
        # PostgreSQL keeps each referral's site key set and the closed referrals' counts per cell on write
        # (smart_app/store/queue_cells.py); elsewhere (SQLite, the demo) everything is counted live.
        self.kept = db.get_bind().dialect.name == "postgresql"
        self.keysets = keysets_of(db, scope) if self.kept and scope.is_queue_user else None
        self.in_scope = scoped_query(scope, keysets=self.keysets).whereclause
        self.programs = Programs()
        self._cells: list[Cell] | None = None
        self._tallies: Tallies | None = None

    # conditions
    def base(self) -> list[ColumnElement[bool]]:
        """The scope and the search: what every count and list starts from."""
        out = [self.in_scope]
        if self.query.search is not None:
            out.append(self.query.search.where())
        return out

    def conditions(self) -> list[ColumnElement[bool]]:
        """The scope, the search and every chosen filter's condition (the page and the export)."""
        out = self.base()
        for facet in FACETS:
            value = self.query.filters.get(facet.name) or ""
            cond = facet.where(value, self.clock) if value else None
            if cond is not None:
                out.append(cond)
        if self.query.filters.get(PROGRAM):
            out.append(self.programs.where(self.query.filters[PROGRAM]))
        return out

    # the grouped count
    def _counts_kept(self) -> bool:
        return self.kept and self.query.search is None and self.keysets is not None

    def grouped(self, clock: Clock | ClockParams | None = None,
                borders: list[_Border] | None = None) -> Select[Any]:
        """The grouped count: every combination of facet values present under the scope and the search, with its
        number of referrals (rows: the facets' values as ``d_0``…, ``pinned``, ``profile``, ``keys``, ``n``).
        ``clock``, ``borders``: the moments as bound parameters (``_kept_tallies``); by default the request's."""
        clock = clock if clock is not None else self.clock
        if self._counts_kept():
            return KeptCount(self, clock, borders if borders is not None else kept_borders(self.clock)).statement()
        dims = [facet.dimension(clock).label(f"d_{i}") for i, facet in enumerate(FACETS)]
        inner = (select(*dims, PINNED.label("pinned"), ReferralRecord.profile.label("profile"),
                        ReferralRecord.program_keys.label("keys")).where(*self.base()).subquery())
        cols = [inner.c[f"d_{i}"] for i in range(len(FACETS))] + [inner.c.pinned, inner.c.profile, inner.c["keys"]]
        return select(*cols, func.count().label("n")).group_by(*cols)

    def cells(self) -> list[Cell]:
        """The grouped count's rows as cells, and the names of every program they name (the reference the tallies
        in SQL are tested against)."""
        if self._cells is not None:
            return self._cells
        rows = self.db.execute(self.grouped()).all()
        key_sets = {row[-2] for row in rows}
        self.programs.key_sets = key_sets
        self._load_names({k for keys in key_sets for k in (keys or "").split(",") if k and k != NO_PROGRAM})
        named = {keys: self.programs.of(keys) for keys in key_sets}
        self._cells = [Cell(values={**dict(zip(FACET_NAMES, row[:len(FACET_NAMES)], strict=True)),
                                    PROGRAM: named[row[-2]]},
                            profile=row[-3], n=int(row[-1]), keys=row[-2], pinned=bool(row[len(FACET_NAMES)]))
                       for row in rows]
        return self._cells

    def tallies(self) -> Tallies:
        """Every filter's counts, the number shown, the values present and the sort's tier sizes, summed over the
        grouped count in the database (``_tally_statement``: a few hundred numbers instead of its cells).

        The program filter is a test on the key sets: the keys named as the chosen program are taken from the names
        already read (kept across requests); when the count brings a key of that name not read before, it is counted
        again with it (names are read once per key)."""
        if self._tallies is not None:
            return self._tallies
        chosen = {name: self.query.filters.get(name) or "" for name in facet_names()}
        program = chosen[PROGRAM]
        named = {key for key, prog in self.cache.items() if _program_name(prog, self.services) == program} \
            if program else set()
        while True:
            kept, params = self._kept_tallies(chosen, named)
            rows = kept.tally_rows(self.db, params)
            key_sets = {row[1] for row in rows if row[0] == KEYS}
            self.programs.key_sets = key_sets
            self._load_names({k for keys in key_sets for k in (keys or "").split(",") if k and k != NO_PROGRAM})
            missed = {key for key, name in self.programs.names.items() if program and name == program} - named
            if not missed:
                break
            named |= missed
        self._tallies = Tallies.of(rows, self.programs)
        return self._tallies

    def _kept_tallies(self, chosen: dict[str, str], named: set[str]) -> tuple[KeptStatement, dict[str, Any]]:
        """The tallies' statement (with, on PostgreSQL, its driver form) and its parameters. Built once per shape (the
        scope, which side of each age border is counted from cells, the chosen filters, the program keys they name)
        with the clock's moments as bound parameters, and kept (``_TALLY_STATEMENTS``): building it costs more CPU
        than the page's other statements together. A search's statement holds its terms (a patient's name or record
        number), so it is built per request and never kept."""
        dialect = self.db.get_bind().dialect
        if self.query.search is not None:
            return KeptStatement.of(self.grouped().cte("cells"), chosen, named, dialect), {}
        params = self.clock.params()
        borders = []
        for i, border in enumerate(kept_borders(self.clock) if self._counts_kept() else []):
            as_param, values = border.as_params(f"border{i}")
            borders.append(as_param)
            params |= values
        key = (self._scope_shape(), tuple(b.larger for b in borders), tuple(sorted(chosen.items())),
               frozenset(named))
        kept = _TALLY_STATEMENTS.get(key)
        if kept is None:
            kept = KeptStatement.of(self.grouped(CLOCK_PARAMS, borders).cte("cells"), chosen, named, dialect, params)
            _TALLY_STATEMENTS.put(key, kept)
        return kept, params

    def _scope_shape(self) -> tuple[Any, ...]:
        """What of the scope its statements hold (``scoped_query``, ``KeptCount``): the EHR, the sites covered
        (their key sets where PostgreSQL keeps them, else the keys) and the teams."""
        scope = self.scope
        keys = tuple(self.keysets) if self.keysets is not None else ("keys", *sorted(scope.keys))
        return (self.kept, scope.is_queue_user, scope.ehr_id, scope.iss, tuple(sorted(scope.ehr_iss)),
                tuple(sorted(scope.teams)), keys)

    def _load_names(self, keys: set[str]) -> None:
        """Names of these program keys: from the cache, else one encrypted row per key (decrypted once)."""
        missing = sorted(keys - self.cache.keys())
        if missing:
            first = (select(func.min(ReferralProgram.id)).where(ReferralProgram.key.in_(missing))
                     .group_by(ReferralProgram.key))
            for key, blob in self.db.execute(select(ReferralProgram.key, ReferralProgram.program_enc)
                                             .where(ReferralProgram.id.in_(first))):
                try:
                    program = decrypt_json(blob, where="referral program")
                except Undecryptable:
                    continue  # not cached: tried again once the key is back
                if isinstance(program, dict) and len(self.cache) < PROGRAM_NAME_CACHE_MAX:
                    self.cache[key] = {"id": program.get("id"), "name": program.get("name")}
        for key in keys:
            name = _program_name(self.cache.get(key), self.services)
            if name:
                self.programs.names[key] = name

    def _options(self, present: dict[str, set[Any]]) -> dict[str, list[tuple[str, str]]]:
        options = {f.name: f.options(present[f.name]) for f in FACETS}
        options[PROGRAM] = [(n, n) for n in self.programs.sorted_names()]
        return {name: _with_chosen(opts, self.query.filters.get(name) or "") for name, opts in options.items()}

    # the page
    def view(self, page_size: int) -> QueueView:
        tallies = self.tallies()
        options = self._options(tallies.present)
        counts = {name: {value: tallies.counts[name][value] for value, _text in options[name]}
                  for name in facet_names()}
        shown = tallies.shown
        total = self.count_in_scope() if self.query.search is not None else tallies.total
        pages = max(1, -(-shown // page_size))
        page = min(self.query.page, pages)
        first = (page - 1) * page_size
        records = self._page(tallies, first, page_size) if shown else []
        return QueueView(query=self.query, options=options, counts=counts, shown=shown, total=total, page=page,
                         pages=pages, first=first, records=records, profiles=tallies.profiles)

    def _page(self, tallies: Tallies, first: int, size: int) -> list[ReferralRecord]:
        """The page's referrals, in the queue's order.

        Triage, program, oldest and newest first read the page in age order within each tier of the sort (triage:
        overdue urgent, overdue routine, urgent, routine, each open then closed; program: each rank of the first
        program's name; one tier for oldest and newest), so PostgreSQL walks ``ix_referral_queue_open`` or
        ``ix_referral_created`` and stops once the page is full instead of sorting every referral shown. The tiers'
        sizes come from the tallies (``Tallies.triage``, ``Tallies.by_keys``: the referrals shown), so only the
        tiers the page falls in are read, each from its own offset. Open unrouted referrals nobody has taken are
        pinned above every tier (a few: sorted as the sort says), and each tier's size leaves out its pinned ones
        (the tallies count them: pinned is a column of the grouped count). For the other sorts the page is one
        sorted query."""
        within = WITHIN_TIER.get(self.query.sort)
        # A referral whose programs are not indexed yet may count under no program and still match the program
        # filter's rows: the tiers' sizes could then be off by it, so such a queue is read in one query.
        if within is None or None in self.programs.key_sets:
            return list(self.db.scalars(select(ReferralRecord).where(*self.conditions())
                                        .order_by(*self.order()).limit(size).offset(first)))
        tiers = self.tiers(tallies)
        records: list[ReferralRecord] = []
        start = sum(pinned_n for _where, _n, pinned_n in tiers)
        if first < start:
            records += self.db.scalars(select(ReferralRecord).where(*self.conditions(), pinned())
                                       .order_by(*self.order()).limit(size).offset(first))
        rest = [pinned().is_not(True)] if start else []  # IS NOT TRUE: a NULL route or assignee is not pinned
        for where, n, pinned_n in tiers:
            n -= pinned_n
            if first < start + n and len(records) < size:
                records += self.db.scalars(select(ReferralRecord).where(*self.conditions(), where, *rest)
                                           .order_by(*within).limit(size - len(records))
                                           .offset(max(0, first - start)))
            start += n
        return records

    def tiers(self, tallies: Tallies) -> list[Tier]:
        """The tiers ``_page`` reads in order (a tiered sort): each one's condition, its referrals shown and how many
        of those are pinned (from the tallies: the pinned ones are a dimension of the grouped count)."""
        if self.query.sort == "triage":
            return _triage_tiers(tallies.triage, tallies.pinned_triage, self.clock)
        if self.query.sort == "program":
            return _program_tiers(tallies.by_keys, tallies.pinned_keys, self.programs)
        return [(true(), tallies.shown, sum(tallies.pinned_keys.values()))]

    def order(self) -> list[Any]:
        # Open unrouted referrals nobody has taken first whatever the sort: nobody else is named for them.
        unrouted_first = case((pinned(), 0), else_=1)
        return [unrouted_first, *SORTS[self.query.sort].order(self.clock, self.programs)]

    def count_in_scope(self) -> int:
        return int(self.db.scalar(select(func.count()).select_from(ReferralRecord).where(self.in_scope)) or 0)

    def program_names_of(self, ids: list[str]) -> dict[str, list[str]]:
        """The program names of these referrals (the page's, or the export's), in the order they were chosen."""
        out: dict[str, list[str]] = {rid: [] for rid in ids}
        for start in range(0, len(ids), 500):
            for rid, key in self.db.execute(select(ReferralProgram.referral_id, ReferralProgram.key)
                                            .where(ReferralProgram.referral_id.in_(ids[start:start + 500]))
                                            .order_by(ReferralProgram.id)):
                name = self.programs.names.get(key)
                if name and name not in out[rid]:
                    out[rid].append(name)
        return out

    def lines(self) -> list[Any]:
        """Every referral the filters show, in order, as plain columns (the CSV export: nothing decrypted)."""
        if self.query.filters.get(PROGRAM) or self.query.sort == "program":
            self.tallies()  # the program names the filter and the sort need
        return list(self.db.execute(select(*LINE_COLUMNS).where(*self.conditions()).order_by(*self.order())))


@dataclass(frozen=True)
class DriverForm:
    """A kept statement as the database driver takes it: its SQL with the values the shape fixes (the IN lists, the
    constants) expanded once, and those values; each request adds its clock's. Executed so, a request skips what
    SQLAlchemy does per execution of a statement this size (its cache key walked over the whole expression, the
    IN lists and literal values rendered into the SQL again)."""

    sql: str
    fixed: dict[str, Any]

    @classmethod
    def of(cls, statement: Select[Any], dialect: Any, params: dict[str, Any]) -> DriverForm:
        """``params``: one request's values of the statement's own parameters (the clock's: left to each request)."""
        state = statement.compile(dialect=dialect).construct_expanded_state(params)
        if not isinstance(state.parameters, dict):
            raise ValueError("a driver form needs named parameters")
        return cls(sql=state.statement, fixed={k: v for k, v in state.parameters.items() if k not in params})

    def rows(self, db: Session, params: dict[str, Any]) -> list[Any]:
        return list(db.connection().exec_driver_sql(self.sql, {**self.fixed, **params}).all())


@dataclass(frozen=True)
class KeptStatement:
    """The tallies' statement, what turns its rows into ``_tally_statement``'s, and its driver form (kept shapes on
    PostgreSQL)."""

    statement: Select[Any]
    rows: TallyRows | None = None
    driver: DriverForm | None = None

    @classmethod
    def of(cls, cells: CTE, chosen: dict[str, str], named: set[str], dialect: Any,
           params: dict[str, Any] | None = None) -> KeptStatement:
        """On PostgreSQL one pass of ``GROUPING SETS`` (``_tally_sets_statement``), with its driver form when
        ``params`` (a kept shape's clock) are given: the driver takes named parameters and no bind processing for
        these types. Elsewhere (SQLite: no GROUPING SETS, positional parameters, dates stored as text) the
        ``UNION ALL`` of ``_tally_statement`` through SQLAlchemy."""
        if dialect.name != "postgresql":
            return cls(_tally_statement(cells, chosen, named))
        statement, rows = _tally_sets_statement(cells, chosen, named)
        return cls(statement, rows, DriverForm.of(statement, dialect, params) if params is not None else None)

    def tally_rows(self, db: Session, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        found = self.driver.rows(db, params) if self.driver is not None else \
            db.connection().execute(self.statement, params).all()
        return self.rows(found) if self.rows is not None else list(found)


class _StatementCache:
    """A few built statements by shape, the least recently used dropped first (shared by the app's threads)."""

    def __init__(self, size: int) -> None:
        self.size, self.kept, self.lock = size, OrderedDict[tuple[Any, ...], KeptStatement](), Lock()

    def get(self, key: tuple[Any, ...]) -> KeptStatement | None:
        with self.lock:
            statement = self.kept.get(key)
            if statement is not None:
                self.kept.move_to_end(key)
            return statement

    def put(self, key: tuple[Any, ...], statement: KeptStatement) -> None:
        with self.lock:
            self.kept[key] = statement
            while len(self.kept) > self.size:
                self.kept.popitem(last=False)


# Tally statements kept (``Queue._kept_tallies``): a shape per scope and filters in use lately.
TALLY_STATEMENT_CACHE_MAX = 256
_TALLY_STATEMENTS = _StatementCache(TALLY_STATEMENT_CACHE_MAX)


class KeptCount:
    """The queue's grouped count from the cells PostgreSQL keeps on write (smart_app/store/queue_cells.py): the
    same rows as counting every referral in scope, reading the closed ones' cells and the rest live."""

    def __init__(self, queue: Queue, clock: Clock | ClockParams, borders: list[_Border]) -> None:
        """``clock`` and ``borders`` (``kept_borders``): the request's, or as bound parameters."""
        self.db, self.scope, self.clock, self.borders = queue.db, queue.scope, clock, borders
        self.keysets, self.in_scope = queue.keysets, queue.in_scope
        # The facets' values of a referral, built once: every live arm groups by them (an expression is immutable,
        # so the arms share it).
        self.dims: list[ColumnElement[Any]] = [facet.dimension(self.clock) for facet in FACETS]

    def statement(self) -> Select[Any]:
        """The grouped count, in one statement (one snapshot):

        - closed referrals from ``referral_cell``: by month for the months before the one a week ago falls in, by day
          since. A day the age filter's border (a day, a week ago) cuts through counts under the age of its larger
          part, and the closed referrals of its smaller part (at most half a day) are moved to their own age live;
        - every referral not closed (the working set), counted live from partial indexes (``_open_arms``);
        - the user's own closed referrals, which a cell counts as "taken by a colleague", moved to "mine" (read
          through ix_referral_assignee_created: one social worker's caseload).
        Rows as the live grouped count's: the facets' values, profile, program keys, count."""
        borders = self.borders
        month = borders[0].month
        parts = [self._cell_rows(and_(ReferralCell.grain == "m", ReferralCell.bucket < month), borders),
                 self._cell_rows(and_(ReferralCell.grain == "d", ReferralCell.bucket >= month), borders),
                 *[self._live_rows(arm, scoped=False) for arm in self._open_arms()]]
        for border in borders:
            moved = and_(IS_CLOSED, border.smaller_part())
            # As a cell has them: whose is "others" or "unassigned" (the "mine" move below is from the cells' counts).
            parts += [self._live_rows(moved, assignee=AS_CELL),
                      self._live_rows(moved, assignee=AS_CELL, age=border.larger, sign=-1)]
        own = and_(IS_CLOSED, ReferralRecord.assignee == self.clock.me_key)
        parts += [self._live_rows(own, assignee="mine"), self._live_rows(own, assignee="others", sign=-1)]
        inner = union_all(*parts).subquery()
        cols = [inner.c[f"d_{i}"] for i in range(len(FACETS))] + [inner.c.pinned, inner.c.profile, inner.c["keys"]]
        return select(*cols, func.sum(inner.c.n).label("n")).group_by(*cols).having(func.sum(inner.c.n) > 0)

    def _open_arms(self) -> list[ColumnElement[bool]]:
        """The referrals in scope not closed, as disjoint conditions each read from its own partial index (one OR
        over the three routes into scope would read every open referral of the system): at a covered site
        (ix_referral_open_keyset), else unrouted, else routed to one of the user's teams (ix_referral_open_reach)."""
        ehr, is_open = of_ehr(self.scope), not_(IS_CLOSED)
        keysets = self.keysets or []
        elsewhere = or_(ReferralRecord.site_keyset.is_(None), ReferralRecord.site_keyset.not_in(keysets)) \
            if keysets else true()
        arms = [and_(ehr, is_open, ReferralRecord.route_kind == UNROUTED, elsewhere)]
        if keysets:
            arms.append(and_(ehr, is_open, ReferralRecord.site_keyset.in_(keysets)))
        if self.scope.teams:
            arms.append(and_(ehr, is_open, ReferralRecord.route_team.in_(sorted(self.scope.teams)),
                             ReferralRecord.route_kind.is_distinct_from(UNROUTED), elsewhere))
        return arms

    def _live_rows(self, where: ColumnElement[bool], *, assignee: str | None = None, age: str | None = None,
                   sign: int = 1, scoped: bool = True) -> Select[Any]:
        """Referrals counted live, grouped as cells (``assignee``, ``age``: that value instead of the row's)."""
        dims = list(self.dims)
        if assignee == AS_CELL:
            dims[0] = case((ReferralRecord.assignee.is_(None), "unassigned"), else_="others")
        elif assignee is not None:
            dims[0] = literal(assignee)
        if age is not None:
            dims[-1] = literal(age)
        named = [d.label(f"d_{i}") for i, d in enumerate(dims)]
        group = [*dims, PINNED, ReferralRecord.profile, ReferralRecord.program_keys]
        return (select(*named, PINNED.label("pinned"), ReferralRecord.profile.label("profile"),
                       ReferralRecord.program_keys.label("keys"),
                       (func.count() * sign).label("n")).where(self.in_scope if scoped else true(), where)
                .group_by(*group))

    def _cell_rows(self, when: ColumnElement[bool], borders: list[_Border]) -> Select[Any]:
        """Closed referrals' cells in scope (the scope's test, on a cell's columns)."""
        cell = ReferralCell
        values = sorted({self.scope.iss, *self.scope.ehr_iss})
        reach = [cell.route_kind == UNROUTED]
        if self.keysets:
            reach.append(cell.site_keyset.in_(self.keysets))
        if self.scope.teams:
            reach.append(cell.route_team.in_(sorted(self.scope.teams)))
        in_scope = and_(or_(cell.ehr == self.scope.ehr_id, cell.iss.in_(values + [v + "/" for v in values])),
                        or_(*reach))
        dims = [case((cell.assigned, "others"), else_="unassigned"), case((cell.urgent, "urgent"), else_="routine"),
                cell.status, cell.site_name,
                _Border.ages(cell.bucket, borders)]
        keys = case((cell.program_keys == NO_PROGRAM_INDEX, null()), else_=cell.program_keys)
        # A cell holds closed referrals only: none is pinned.
        return select(*[d.label(f"d_{i}") for i, d in enumerate(dims)], literal(0).label("pinned"),
                      cell.profile.label("profile"), keys.label("keys"), cell.n.label("n")).where(in_scope, when)


def kept_borders(clock: Clock) -> list[_Border]:
    """The age filter's borders the kept count reads cells around (``KeptCount.statement``), the most distant first."""
    return [_Border.at(clock.week_ago, "over_7_days", "1_to_7_days"),
            _Border.at(clock.day_ago, "1_to_7_days", "under_1_day")]


LINE_COLUMNS = (ReferralRecord.id, ReferralRecord.status, ReferralRecord.urgent, ReferralRecord.created_at,
                ReferralRecord.first_contact_at, ReferralRecord.site_name, ReferralRecord.handoff,
                ReferralRecord.due_at, ReferralRecord.closing_outcome, ReferralRecord.closing_attempts)


def _with_chosen(options: list[tuple[str, str]], chosen: str) -> list[tuple[str, str]]:
    """The options, with the chosen value among them even when nothing has it now (so it can be seen and undone)."""
    if chosen and chosen not in {value for value, _text in options}:
        return [*options, (chosen, chosen)]
    return options
