"""The social-work queue in SQL: filters, counts, sort and paging over every referral in scope, with no cap.

Everything the queue filters, counts or sorts by is a plain column (status, urgency, site name, times) or a keyed
HMAC (the ``referral_program`` keys, ``mrn_key``); encrypted summaries are read only for the page shown, and the
encrypted program names once per distinct program.

Counts: each filter (a ``Facet``) shows how many referrals each of its values would show with the *other*
filters kept. One grouped query (``GROUP BY`` every facet's value, plus the EHR profile) returns a few hundred
cells with a count each; every facet's counts, the number shown and the total are sums over those cells. The
program filter is the one facet with several values per referral (a referral can name two programs): its
counts come from a second grouped query over ``referral_program``.

A new filter is one more ``Facet`` in ``FACETS`` (``column_facet`` for a plain column): its values group, count,
filter and link like the others'.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, false, func, literal, not_, or_, select, true
from sqlalchemy.orm import Session

from smart_app.ops.i18n import gettext as _
from smart_app.store.crypto import Undecryptable, decrypt_json
from smart_app.store.models import ReferralProgram, ReferralRecord
from smart_app.store.task_status import CLOSED, LEGACY, OPEN, REQUESTED, STATUSES, label
from smart_app.worklist.routing import UNROUTED
from smart_app.worklist.scope import NO_PROGRAM, Scope, scoped_query
from smart_app.worklist.search import Search

AGE_BUCKETS = ("under_1_day", "1_to_7_days", "over_7_days")
URGENCY_VALUES = ("urgent", "routine", "overdue")
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Clock:
    """The moments the queue's time-based filters compare with, fixed once per request."""

    now: datetime
    overdue_before: datetime  # an urgent referral made before this and never contacted is overdue

    @classmethod
    def at(cls, now: datetime, urgent_contact_hours: float) -> Clock:
        return cls(now=now, overdue_before=now - timedelta(hours=urgent_contact_hours))


# -- status and urgency as SQL ---------------------------------------------------------------------------------
def _raw(statuses: Iterable[str]) -> tuple[str, ...]:
    """Stored spellings of these statuses: the FHIR code and the older words that read as it."""
    wanted = set(statuses)
    return tuple(sorted(wanted | {old for old, new in LEGACY.items() if new in wanted}))


STATUS = func.coalesce(ReferralRecord.status, REQUESTED)  # no status reads as requested (task_status.normalise)
IS_CLOSED = STATUS.in_(_raw(CLOSED))
IS_URGENT = ReferralRecord.urgent.is_(True)


def overdue(clock: Clock) -> ColumnElement[bool]:
    """Urgent, open, never contacted and older than the deployment's urgent contact time."""
    return and_(IS_URGENT, ReferralRecord.first_contact_at.is_(None), STATUS.in_(_raw(OPEN)),
                ReferralRecord.created_at <= clock.overdue_before)


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
    dimension: Callable[[Clock], ColumnElement[Any]]
    values_of: Callable[[Any], tuple[str, ...]]
    where: Callable[[str, Clock], ColumnElement[bool] | None]
    options: Callable[[Iterable[Any]], list[tuple[str, str]]]
    default: str = ""
    clean: Callable[[str], str] = lambda value: value


def column_facet(name: str, title: Callable[[], str], column: Any, labels: Callable[[str], str] | None = None,
                 *, none_value: str = "none") -> Facet:
    """A facet over one plain column: its values are the column's (NULL as ``none_value``), shown through
    ``labels`` (default: as stored), in the order of their labels."""
    dimension = func.coalesce(column, none_value)
    text = labels or (lambda value: value)
    return Facet(name=name, title=title, dimension=lambda _clock: dimension,
                 values_of=lambda value: (str(value),), where=lambda value, _clock: dimension == value,
                 options=lambda present: sorted(((str(v), text(str(v))) for v in set(present)), key=lambda o: o[1]))


def _urgency_facet() -> Facet:
    def dimension(clock: Clock) -> ColumnElement[Any]:
        return case((overdue(clock), "overdue"), (IS_URGENT, "urgent"), else_="routine")

    def where(value: str, clock: Clock) -> ColumnElement[bool] | None:
        return {"urgent": IS_URGENT, "overdue": overdue(clock),
                "routine": or_(ReferralRecord.urgent.is_(False), ReferralRecord.urgent.is_(None))}.get(value)

    return Facet(
        name="urgency", title=lambda: _("Urgency"), dimension=dimension,
        values_of=lambda v: ("urgent", "overdue") if v == "overdue" else (str(v),), where=where,
        options=lambda _present: [("urgent", _("Urgent")), ("overdue", _("Urgent, not contacted in time")),
                                  ("routine", _("Not urgent"))],
        clean=lambda value: value if value in URGENCY_VALUES else "")  # an unknown value shows everything


def _status_of(raw: Any) -> tuple[str, ...]:
    status = LEGACY.get(str(raw), str(raw))
    return (status, "closed" if status in CLOSED else "open", "all")


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
        where=_status_where, default="open",
        options=lambda _present: [("open", _("All open")), *[(s, label(s)) for s in STATUSES],
                                  ("closed", _("All closed")), ("all", _("Everything"))])


def _site_facet() -> Facet:
    def where(value: str, _clock: Clock) -> ColumnElement[bool]:
        if value == site_not_recorded():
            return or_(ReferralRecord.site_name.is_(None), ReferralRecord.site_name == "")
        return ReferralRecord.site_name == value

    return Facet(
        name="site", title=lambda: _("Site"), dimension=lambda _clock: func.coalesce(ReferralRecord.site_name, ""),
        values_of=lambda v: (str(v) or site_not_recorded(),), where=where,
        options=lambda present: [(s, s) for s in sorted({str(v) or site_not_recorded() for v in present})])


def age_label(bucket: str) -> str:
    return {"under_1_day": _("Less than a day"), "1_to_7_days": _("1 to 7 days"),
            "over_7_days": _("Over 7 days")}.get(bucket, bucket)


def _age_facet() -> Facet:
    def dimension(clock: Clock) -> ColumnElement[Any]:
        return case((ReferralRecord.created_at > clock.now - DAY, "under_1_day"),
                    (ReferralRecord.created_at > clock.now - WEEK, "1_to_7_days"), else_="over_7_days")

    def where(value: str, clock: Clock) -> ColumnElement[bool]:
        created = ReferralRecord.created_at
        return {"under_1_day": created > clock.now - DAY,
                "1_to_7_days": and_(created <= clock.now - DAY, created > clock.now - WEEK),
                "over_7_days": created <= clock.now - WEEK}.get(value, false())

    return Facet(name="age", title=lambda: _("Waiting"), dimension=dimension, values_of=lambda v: (str(v),),
                 where=where, options=lambda _present: [(b, age_label(b)) for b in AGE_BUCKETS])


# The queue's single-valued filters, in the order the filter bar shows them (the program filter follows site).
FACETS: list[Facet] = [_urgency_facet(), _status_facet(), _site_facet(), _age_facet()]
PROGRAM = "program"


def facet_names() -> list[str]:
    names = [f.name for f in FACETS]
    return names[:names.index("site") + 1] + [PROGRAM] + names[names.index("site") + 1:]


# -- programs (several per referral: keyed HMACs, names encrypted) -----------------------------------------------
@dataclass
class Programs:
    """The programs of the referrals in scope: name per key (decrypted once per key), keys per name."""

    names: dict[str, str] = field(default_factory=dict)

    def keys_for(self, name: str) -> list[str]:
        return sorted(k for k, n in self.names.items() if n == name)

    def sorted_names(self) -> list[str]:
        return sorted(set(self.names.values()))

    def where(self, name: str) -> ColumnElement[bool]:
        keys = self.keys_for(name)
        if not keys:
            return false()
        return exists().where(ReferralProgram.referral_id == ReferralRecord.id, ReferralProgram.key.in_(keys))

    def rank(self) -> ColumnElement[Any]:
        """A referral's place in program order (its first program by name; none last), for sorting."""
        order = {name: i for i, name in enumerate(self.sorted_names())}
        ranks = {key: order[name] for key, name in self.names.items()}
        if not ranks:
            return literal(0)
        rank = case(ranks, value=ReferralProgram.key, else_=len(order))
        return (select(func.min(rank)).where(ReferralProgram.referral_id == ReferralRecord.id)
                .scalar_subquery())


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
    program_names: dict[str, list[str]]
    profiles: set[str]


@dataclass(frozen=True)
class Sort:
    title: Callable[[], str]
    order: Callable[[Clock, Programs], list[Any]]


def _status_rank() -> ColumnElement[Any]:
    ranks = {raw: i for i, status in enumerate(STATUSES) for raw in _raw([status])}
    return case(ranks, value=STATUS, else_=len(STATUSES))


SORTS: dict[str, Sort] = {
    # Triage: overdue urgent first, then urgent, open before closed, then the longest waiting.
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
class Queue:
    """The queue of one scope at one moment (a request)."""

    def __init__(self, db: Session, scope: Scope, clock: Clock, query: QueueQuery,
                 services: dict[str, Any]) -> None:
        self.db, self.scope, self.clock, self.query = db, scope, clock, query
        self.services = services
        self.in_scope = scoped_query(scope).whereclause
        self.programs = Programs()
        self._program_counts: dict[str, int] = {}

    # conditions
    def _facet_where(self, facet: Facet) -> ColumnElement[bool] | None:
        value = self.query.filters.get(facet.name) or ""
        return facet.where(value, self.clock) if value else None

    def filter_conditions(self, *, without: str | None = None) -> list[ColumnElement[bool]]:
        """Every chosen filter's condition (all but the facet ``without``)."""
        out = []
        for facet in FACETS:
            cond = self._facet_where(facet) if facet.name != without else None
            if cond is not None:
                out.append(cond)
        program = self.query.filters.get(PROGRAM)
        if program and without != PROGRAM:
            out.append(self.programs.where(program))
        return out

    def base(self) -> list[ColumnElement[bool]]:
        """The scope and the search: what every count and list starts from."""
        out = [self.in_scope]
        if self.query.search is not None:
            out.append(self.query.search.where())
        return out

    def conditions(self) -> list[ColumnElement[bool]]:
        return self.base() + self.filter_conditions()

    # programs
    def load_programs(self) -> None:
        """Every program of the referrals in scope (and the search), with how many referrals each would show
        under the other filters: one grouped query, then one read of one encrypted name per program."""
        others = and_(true(), *self.filter_conditions(without=PROGRAM))
        rows = self.db.execute(
            select(ReferralProgram.key, func.min(ReferralProgram.id), func.sum(case((others, 1), else_=0)))
            .join(ReferralRecord, ReferralRecord.id == ReferralProgram.referral_id)
            .where(*self.base(), ReferralProgram.key != NO_PROGRAM)
            .group_by(ReferralProgram.key)).all()
        if not rows:
            return
        blobs = dict(self.db.execute(select(ReferralProgram.key, ReferralProgram.program_enc)
                                     .where(ReferralProgram.id.in_([r[1] for r in rows]))).all())
        for key, _first, _count in rows:
            try:
                name = _program_name(decrypt_json(blobs.get(key), where="referral program"), self.services)
            except Undecryptable:
                name = None
            if name:
                self.programs.names[key] = name
        counts: Counter[str] = Counter()
        for key, _first, count in rows:
            if key in self.programs.names:
                counts[self.programs.names[key]] += int(count or 0)
        shared = {n for n in counts if len(self.programs.keys_for(n)) > 1}
        if shared:  # one referral may name two programs of one name: count it once
            counts.update(self._distinct_counts(shared, others))
        self._program_counts = dict(counts)

    def _distinct_counts(self, names: set[str], others: ColumnElement[bool]) -> dict[str, int]:
        group = case({k: n for k, n in self.programs.names.items() if n in names}, value=ReferralProgram.key)
        rows = self.db.execute(
            select(group, func.count(func.distinct(ReferralProgram.referral_id)))
            .join(ReferralRecord, ReferralRecord.id == ReferralProgram.referral_id)
            .where(*self.base(), others, group.is_not(None)).group_by(group)).all()
        found = {str(name): int(count) for name, count in rows}
        return {name: found.get(name, 0) for name in names}

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

    # the grouped count
    def cells(self) -> list[tuple[dict[str, Any], str, int]]:
        """(facet value per facet, EHR profile, referrals) for every combination present, under the search and
        the program filter (the one filter not among the cells' values)."""
        dims = [facet.dimension(self.clock).label(f"d_{i}") for i, facet in enumerate(FACETS)]
        conditions = self.base()
        program = self.query.filters.get(PROGRAM)
        if program:
            conditions.append(self.programs.where(program))
        inner = select(*dims, ReferralRecord.profile.label("profile")).where(*conditions).subquery()
        cols = [inner.c[f"d_{i}"] for i in range(len(FACETS))] + [inner.c.profile]
        rows = self.db.execute(select(*cols, func.count()).group_by(*cols)).all()
        return [({facet.name: row[i] for i, facet in enumerate(FACETS)}, row[-2], int(row[-1])) for row in rows]

    def _passes(self, values: dict[str, Any], facet: Facet) -> bool:
        chosen = self.query.filters.get(facet.name) or ""
        return not chosen or chosen in facet.values_of(values[facet.name])

    # the page
    def view(self, page_size: int) -> QueueView:
        self.load_programs()
        cells = self.cells()
        counts: dict[str, dict[str, int]] = {}
        options: dict[str, list[tuple[str, str]]] = {}
        for facet in FACETS:
            tally: Counter[str] = Counter()
            for values, _profile, n in cells:
                if all(self._passes(values, other) for other in FACETS if other is not facet):
                    for value in facet.values_of(values[facet.name]):
                        tally[value] += n
            options[facet.name] = _with_chosen(facet.options([v[facet.name] for v, _p, _n in cells]),
                                               self.query.filters.get(facet.name) or "")
            counts[facet.name] = {value: tally[value] for value, _text in options[facet.name]}
        options[PROGRAM] = _with_chosen([(n, n) for n in self.programs.sorted_names()],
                                        self.query.filters.get(PROGRAM) or "")
        counts[PROGRAM] = {n: self._program_counts.get(n, 0) for n, _text in options[PROGRAM]}
        shown = sum(n for values, _p, n in cells if all(self._passes(values, f) for f in FACETS))
        narrowed = self.query.search is not None or bool(self.query.filters.get(PROGRAM))
        total = self.count_in_scope() if narrowed else sum(n for _v, _p, n in cells)
        pages = max(1, -(-shown // page_size))
        page = min(self.query.page, pages)
        first = (page - 1) * page_size
        records = list(self.db.scalars(select(ReferralRecord).where(*self.conditions())
                                       .order_by(*self.order()).limit(page_size).offset(first))) if shown else []
        return QueueView(query=self.query, options=options, counts=counts, shown=shown, total=total, page=page,
                         pages=pages, first=first, records=records,
                         program_names=self.program_names_of([r.id for r in records]),
                         profiles={p for _v, p, _n in cells})

    def order(self) -> list[Any]:
        # Open unrouted referrals first whatever the sort: nobody else is named for them.
        unrouted_first = case((and_(ReferralRecord.route_kind == UNROUTED, ~IS_CLOSED), 0), else_=1)
        return [unrouted_first, *SORTS[self.query.sort].order(self.clock, self.programs)]

    def count_in_scope(self) -> int:
        return int(self.db.scalar(select(func.count()).select_from(ReferralRecord).where(self.in_scope)) or 0)

    def lines(self) -> list[Any]:
        """Every referral the filters show, in order, as plain columns (the CSV export: nothing decrypted)."""
        self.load_programs()
        return list(self.db.execute(select(*LINE_COLUMNS).where(*self.conditions()).order_by(*self.order())))


LINE_COLUMNS = (ReferralRecord.id, ReferralRecord.status, ReferralRecord.urgent, ReferralRecord.created_at,
                ReferralRecord.first_contact_at, ReferralRecord.site_name, ReferralRecord.handoff)


def _with_chosen(options: list[tuple[str, str]], chosen: str) -> list[tuple[str, str]]:
    """The options, with the chosen value among them even when nothing has it now (so it can be seen and undone)."""
    if chosen and chosen not in {value for value, _text in options}:
        return [*options, (chosen, chosen)]
    return options
