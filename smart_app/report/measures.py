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

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from smart_app.report.events import UNSPECIFIED
from smart_app.report.periods import month_number
from smart_app.report.suppress import Counts, Derived, Leaf, Measure
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


@dataclass
class Collected:
    """Monthly counts per measure and leaf, the hours to first contact per leaf and month, and display names."""

    counts: Counts
    contact_hours: dict[Leaf, dict[int, list[float]]]
    site_names: dict[str, str]
    teams: dict[str, set[str]] = field(default_factory=dict)

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

    def referrals(self) -> ColumnElement[bool]:
        values = sorted(self.iss)
        return or_(ReferralRecord.ehr == self.id,
                   and_(ReferralRecord.ehr.is_(None), ReferralRecord.iss.in_(values + [v + "/" for v in values])))


REFERRAL_COLUMNS = (ReferralRecord.created_at, ReferralRecord.site, ReferralRecord.route_kind,
                    ReferralRecord.route_team, ReferralRecord.site_name, ReferralRecord.closing_outcome,
                    ReferralRecord.handoff, ReferralRecord.first_contact_at, ReferralRecord.due_at,
                    ReferralRecord.urgent)


def collect(db: Session, due: DueRule, before_month: int, ehr: EhrFilter | None = None) -> Collected:
    """Everything counted in months before ``before_month`` (the open month is never read); with ``ehr``, that EHR's
    only (a program manager's report), else the whole deployment's (the CLI)."""
    counts: Counts = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    teams: dict[str, set[str]] = defaultdict(set)
    # Counted in the database: a year of a health system is millions of events and a few thousand cells.
    q = (select(ReportEvent.month, ReportEvent.site, ReportEvent.kind, func.count())
         .where(ReportEvent.kind.in_(EVENT_KINDS)).group_by(ReportEvent.month, ReportEvent.site, ReportEvent.kind))
    q = q.where(ehr.events()) if ehr is not None else q
    for month_text, site, kind, n in db.execute(q):
        month = month_number(month_text)
        if month < before_month:
            counts[EVENT_KINDS[kind]][(site, "")][month] += n
            teams.setdefault(site, set())
    hours: dict[Leaf, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    names: dict[str, Counter] = defaultdict(Counter)
    # The columns counted, not whole records: no encrypted summary read, no object built per referral.
    q = (select(*REFERRAL_COLUMNS, ReferralDims.site.label("dims_site"), ReferralDims.month.label("dims_month"))
         .outerjoin(ReferralDims, ReferralDims.referral_id == ReferralRecord.id))
    q = q.where(ehr.referrals()) if ehr is not None else q
    for record in db.execute(q):
        dims_site, dims_month = record.dims_site, record.dims_month
        created = _aware(record.created_at)
        month = month_number(dims_month) if dims_month else created.year * 12 + created.month - 1
        if month >= before_month:
            continue
        site = dims_site or record.site or UNSPECIFIED
        leaf = (site, team_key(record.route_kind, record.route_team))
        teams[site].add(leaf[1])
        if record.site_name:
            names[site][record.site_name] += 1
        _count_referral(counts, hours, leaf, month, record, due)
    return Collected(counts, hours, {s: c.most_common(1)[0][0] for s, c in names.items()}, teams)


def _count_referral(counts: Counts, hours: dict[Leaf, dict[int, list[float]]], leaf: Leaf, month: int,
                    record: Any, due: DueRule) -> None:
    counts[REFERRALS][leaf][month] += 1
    if record.closing_outcome in CLOSED:
        counts[CLOSED[record.closing_outcome]][leaf][month] += 1
    if record.handoff:
        counts[HANDOFF_OFFERED][leaf][month] += 1
    if record.handoff == handoff_codes.COMPLETED:
        counts[HANDOFF_COMPLETED][leaf][month] += 1
    contact = _aware(record.first_contact_at)
    if contact is None:
        return
    waited = max(0.0, (contact - _aware(record.created_at)).total_seconds() / 3600)
    hours[leaf][month].append(waited)
    if waited <= due.hours(record):
        counts[CONTACTED_IN_TIME][leaf][month] += 1
