"""Memory across launches: "this patient was screened / referred here recently" — and nothing more.

A later launch for the same patient (same EHR) within ``tuning.worklist_memory_days`` (30 by default) shows the
clinician one line at the gate: the date, and for a referral its plain status and whether social work
has made contact. Never answers, never a score, never which instrument. Patients and encounters are
known only by keyed HMACs of (EHR identity, id), so the tables hold no chart id, and a launch on any iss of one
EHR (config/ehrs.py: its EHR launch, a standalone launcher's per-launch iss) finds the same patient. Keys made
before the identity was kept are HMACs of (iss, id): a read also looks for those of the EHR's exact iss values
and of this launch's iss (without an ``ehrs`` block the identity is the iss, so both keys are one). Screens leave
a ``patient_mark`` (deleted after the window, smart_app/worklist/retention.py); referrals are found by their own
keys.

A second referral for the same visit (same encounter) needs an explicit choice on the consent form.

An open follow-up (a positive self-administered screen with no recorded response, smart_app/followup/items.py) is
found the same way: by the patient's keys, on every later launch, until a response is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, literal, null, or_, select, union_all, update
from sqlalchemy.orm import Session

from config.current import current_settings
from config.ehrs import ehr_for, normalise
from smart_app.store.crypto import keyed_hash
from smart_app.store.models import FollowupItem, LaunchRecord, PatientMark, ReferralRecord
from smart_app.store.task_status import CLOSED, LEGACY, OPEN
from smart_app.store.task_status import normalise as normalise_status


def _key(kind: str, owner: str, value: str | None) -> str | None:
    if not value:
        return None
    return keyed_hash(f"{kind}|{owner.rstrip('/')}|{value}")


def _owners(iss: str) -> list[str]:
    """What keys of a launch on ``iss`` were made of: the EHR identity first (what new keys use), then the iss
    values older keys used (this one, and the EHR's exact values)."""
    ehr = ehr_for(iss, current_settings())
    owners = [ehr.id if ehr is not None else normalise(iss), normalise(iss)]
    owners += sorted(ehr.iss) if ehr is not None else []
    return list(dict.fromkeys(owners))


def _id(context: dict[str, Any], part: str) -> str | None:
    return ((context or {}).get(part) or {}).get("id")


def patient_key(iss: str, context: dict[str, Any]) -> str | None:
    """The key a new referral or screen mark of this patient gets: of the EHR identity."""
    return _key("patient", _owners(iss)[0], _id(context, "patient"))


def encounter_key(iss: str, context: dict[str, Any]) -> str | None:
    return _key("encounter", _owners(iss)[0], _id(context, "encounter"))


def _keys(kind: str, iss: str, context: dict[str, Any]) -> list[str]:
    """Every key this patient (or encounter) may be stored under: the identity's, then older ones."""
    value = _id(context, kind)
    return [k for k in (_key(kind, owner, value) for owner in _owners(iss)) if k]


def memory_days() -> int:
    return current_settings().worklist_memory_days


def record_screen(db: Session, iss: str, context: dict[str, Any]) -> None:
    """Leave the minimal mark of a completed screen (the caller commits)."""
    pk = patient_key(iss, context)
    if pk:
        db.add(PatientMark(patient_key=pk, encounter_key=encounter_key(iss, context), kind="screen",
                           at=datetime.now(UTC)))


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _typed_null(column: Any) -> Any:
    return null().cast(column.type)


# The columns of one row of a launch page's memory read: a referral, a screen mark or an open follow-up.
_FOLLOWUP_EXTRA = ("fid", "flaunch", "fresponse_launch")


def _followup_select(pks: Any) -> Any:
    return (select(literal("followup").label("kind"), FollowupItem.opened_at.label("at"),
                   FollowupItem.response.label("status"), FollowupItem.visit_ended_at.label("contact"),
                   FollowupItem.encounter_key.label("ek"), FollowupItem.id.label("fid"),
                   FollowupItem.launch_id.label("flaunch"), FollowupItem.response_launch_id.label("fresponse_launch"))
            .where(FollowupItem.patient_key.in_(pks), FollowupItem.status == "open"))


@cache
def _memory_statement(with_recent: bool) -> Any:
    """Built once: constructing the union costs more CPU than running it (its cache key is still per call).

    The patient's open follow-ups, and with ``with_recent`` the latest referral and the latest screen mark in the
    window: one round trip for what the gate shows of this patient's other launches."""
    pks, since, exclude = bindparam("pks", expanding=True), bindparam("since"), bindparam("exclude")
    followups = _followup_select(pks)
    if not with_recent:
        return followups
    pad = [_typed_null(FollowupItem.id).label(name) for name in _FOLLOWUP_EXTRA]
    referral = (select(literal("referral").label("kind"), ReferralRecord.created_at.label("at"),
                       ReferralRecord.status.label("status"), ReferralRecord.first_contact_at.label("contact"),
                       ReferralRecord.encounter_key.label("ek"), *pad)
                .where(ReferralRecord.patient_key.in_(pks), ReferralRecord.created_at >= since,
                       ReferralRecord.launch_id != exclude))
    mark = (select(literal("screen").label("kind"), PatientMark.at.label("at"),
                   _typed_null(ReferralRecord.status).label("status"),
                   _typed_null(ReferralRecord.first_contact_at).label("contact"),
                   PatientMark.encounter_key.label("ek"), *pad)
            .where(PatientMark.patient_key.in_(pks), PatientMark.at >= since))
    latest = (select(q.order_by(q.selected_columns.at.desc()).limit(1).subquery()) for q in (referral, mark))
    return union_all(*latest, followups)


@dataclass(frozen=True)
class PatientKeys:
    """Every key this launch's patient and encounter may be stored under (the identity's first), made once."""

    patients: list[str]
    encounters: list[str]

    @classmethod
    def of(cls, iss: str, context: dict[str, Any]) -> PatientKeys:
        owners = _owners(iss)
        patient, encounter = _id(context, "patient"), _id(context, "encounter")
        return cls(patients=[k for k in (_key("patient", o, patient) for o in owners) if k],
                   encounters=[k for k in (_key("encounter", o, encounter) for o in owners) if k])


def recent(db: Session, iss: str, context: dict[str, Any], *, exclude_launch: str | None = None,
           now: datetime | None = None) -> dict[str, Any] | None:
    """The latest referral or screen of this patient within the window: {"at", "kind", "status",
    "contacted", "same_visit"}; None when there is none."""
    return launch_memory(db, iss, context, exclude_launch or "", with_recent=True, now=now)[0]


def _recent_from(rows: dict[str, Any], eks: set[str]) -> dict[str, Any] | None:
    if "referral" in rows:  # a referral is preferred when both exist
        row = rows["referral"]
        return {"at": _aware(row.at), "kind": "referral", "status": normalise_status(row.status),
                "open": normalise_status(row.status) not in CLOSED, "contacted": row.contact is not None,
                "same_visit": row.ek in eks}
    if "screen" in rows:
        row = rows["screen"]
        return {"at": _aware(row.at), "kind": "screen", "same_visit": row.ek in eks}
    return None


def launch_memory(db: Session, iss: str, context: dict[str, Any], launch_id: str, *, with_recent: bool,
                  now: datetime | None = None) -> tuple[dict[str, Any] | None, list[OpenFollowup]]:
    """What a launch page shows of this patient beyond this launch, in one statement: the latest referral or screen
    within the window (``with_recent``; as ``recent`` gives it, else None) and the open follow-ups (as
    ``open_followups`` gives them)."""
    keys = PatientKeys.of(iss, context)
    if not keys.patients:
        return None, []
    since = (now or datetime.now(UTC)) - timedelta(days=memory_days())
    params = {"pks": keys.patients}
    if with_recent:
        params.update(since=since, exclude=launch_id)  # "": launch ids are never empty
    rows = db.execute(_memory_statement(with_recent), params).all()
    eks = set(keys.encounters)
    latest = {row.kind: row for row in rows if row.kind != "followup"}
    followups = _followups_from(db, [row for row in rows if row.kind == "followup"], eks, launch_id)
    return (_recent_from(latest, eks) if with_recent else None), followups


@dataclass(frozen=True)
class EarlierReferral:
    """What the pages say of an existing referral for this visit: when it was made and its status."""

    created_at: datetime
    status: str


@cache
def _visit_referral_statement(excluding: bool) -> Any:
    """Built once, two columns: the latest referral of these patient and encounter keys (from another launch)."""
    q = select(ReferralRecord.created_at, ReferralRecord.status).where(
        ReferralRecord.patient_key.in_(bindparam("pks", expanding=True)),
        ReferralRecord.encounter_key.in_(bindparam("eks", expanding=True)))
    if excluding:
        q = q.where(ReferralRecord.launch_id != bindparam("exclude"))
    return q.order_by(ReferralRecord.created_at.desc()).limit(1)


def visit_referral(db: Session, iss: str, context: dict[str, Any], *, exclude_launch: str | None = None,
                   read: ReadWithLaunch | None = None) -> EarlierReferral | None:
    """An existing referral for this very visit (same patient and encounter) from another launch. ``read``: what
    the launch's own statement read (``WITH_VISIT_REFERRAL``), used when it covers every key of this visit."""
    keys = PatientKeys.of(iss, context)
    if not keys.patients or not keys.encounters:
        return None
    if read is not None and read.referral_read and exclude_launch is not None and read.covers(keys, encounter=True):
        return read.visit_referral
    params = {"pks": keys.patients, "eks": keys.encounters, "exclude": exclude_launch}
    row = db.execute(_visit_referral_statement(exclude_launch is not None), params).first()
    return EarlierReferral(created_at=row.created_at, status=row.status) if row is not None else None


def checkin_done(db: Session, iss: str, context: dict[str, Any], since: datetime) -> bool:
    """Whether this app already knows a check-in is not due: a screen in this encounter or since ``since``
    (the deployment's interval; marks older than the memory window are gone, smart_app/worklist/retention.py),
    or a referral of this patient made in this encounter, since ``since``, or still open. The CDS card asks
    this before it shows, so a patient screened minutes ago, or with a referral being worked, gets no card."""
    pks = _keys("patient", iss, context)
    if not pks:
        return False
    eks = _keys("encounter", iss, context)
    mark_when = [PatientMark.at >= since] + ([PatientMark.encounter_key.in_(eks)] if eks else [])
    if db.scalars(select(PatientMark.id).where(PatientMark.patient_key.in_(pks), or_(*mark_when)).limit(1)).first():
        return True
    open_statuses = [*OPEN, *(old for old, new in LEGACY.items() if new in OPEN)]
    ref_when = [ReferralRecord.created_at >= since, ReferralRecord.status.in_(open_statuses)]
    ref_when += [ReferralRecord.encounter_key.in_(eks)] if eks else []
    return db.scalars(select(ReferralRecord.id).where(ReferralRecord.patient_key.in_(pks), or_(*ref_when))
                      .limit(1)).first() is not None


@dataclass(frozen=True)
class OpenFollowup:
    """An open follow-up as a launch page shows it: no answers, no score. ``this_launch``: opened in this very
    launch (the result after hand-back); ``answered_here``: a response ("not safe to discuss now") was recorded in
    this launch, so the page reminds and no longer asks."""

    id: str
    opened_at: datetime
    same_visit: bool
    this_launch: bool
    answered_here: bool
    response: str | None


def open_followups(db: Session, iss: str, context: dict[str, Any], launch_id: str, *,
                   read: ReadWithLaunch | None = None) -> list[OpenFollowup]:
    """This patient's open follow-ups, oldest first. One opened in another encounter is past its visit from now
    (``visit_ended_at``, what puts it in the social-work queue); committed here when that changes. ``read``: what
    the launch's own statement read (``WITH_FOLLOWUPS``), used when it covers every key of this patient."""
    if read is not None and read.followups is not None:
        keys = PatientKeys.of(iss, context)
        if read.covers(keys):
            return _followups_from(db, list(read.followups), set(keys.encounters), launch_id)
    return launch_memory(db, iss, context, launch_id, with_recent=False)[1]


def _followups_from(db: Session, rows: list[Any], eks: set[str], launch_id: str) -> list[OpenFollowup]:
    rows = sorted(rows, key=lambda row: _aware(row.at))
    ended = [row.fid for row in rows
             if row.contact is None and row.flaunch != launch_id and eks and row.ek not in eks]
    if ended:
        db.execute(update(FollowupItem).where(FollowupItem.id.in_(ended)).values(visit_ended_at=datetime.now(UTC)))
        db.commit()
    return [OpenFollowup(id=row.fid, opened_at=_aware(row.at), same_visit=row.ek in eks,
                         this_launch=row.flaunch == launch_id, answered_here=row.fresponse_launch == launch_id,
                         response=row.status) for row in rows]


def followup_open(db: Session, iss: str, context: dict[str, Any]) -> bool:
    """Whether this patient has an open follow-up (the CDS card asks this before anything else)."""
    pks = _keys("patient", iss, context)
    return bool(pks) and db.scalars(select(FollowupItem.id).where(
        FollowupItem.patient_key.in_(pks), FollowupItem.status == "open").limit(1)).first() is not None


def patient_keys(iss: str, context: dict[str, Any]) -> list[str]:
    """Every key this patient may be stored under (the identity's first)."""
    return _keys("patient", iss, context)


# -- Read with the launch: what a page shows of this patient beyond this launch, in the launch's own statement ------
# The launch row carries the keys its patient's rows are made with (``patient_key``, ``encounter_key``), so a page
# joins them to the launch read: one statement a page, still read on every request (another launch, the clinic
# tablet's, may open a follow-up or refer the visit at any moment). docs/decisions/0017-launch-patient-key.md.
WITH_FOLLOWUPS = "followups"  # this patient's open follow-ups
WITH_VISIT_REFERRAL = "visit_referral"  # the latest referral of this visit from another launch
WITH_RECENT = "recent"  # the latest referral (from another launch) and screen mark of this patient in the window
READS = frozenset({WITH_FOLLOWUPS, WITH_VISIT_REFERRAL, WITH_RECENT})


class _FollowupRow(NamedTuple):
    """An open follow-up as the launch's statement read it: the fields ``_followups_from`` reads."""

    at: datetime
    status: str | None
    contact: datetime | None
    ek: str | None
    fid: str
    flaunch: str
    fresponse_launch: str | None


class _RecentRow(NamedTuple):
    """A referral or screen mark as the launch's statement read it: the fields ``_recent_from`` reads."""

    at: datetime
    status: str | None
    contact: datetime | None
    ek: str | None


@dataclass(frozen=True)
class ReadWithLaunch:
    """What the launch's statement read of its patient, joined on the launch row's keys (none when they are NULL).

    ``followups``: the open follow-up rows, None when not read; ``referral_read``: whether ``visit_referral`` was;
    ``recent``: the latest referral and screen mark in the window by kind ("referral", "screen"), None when not
    read."""

    patient_key: str | None
    encounter_key: str | None
    followups: tuple[_FollowupRow, ...] | None = None
    referral_read: bool = False
    visit_referral: EarlierReferral | None = None
    recent: dict[str, _RecentRow] | None = None

    def covers(self, keys: PatientKeys, *, encounter: bool = False) -> bool:
        """Whether rows joined on the launch's keys are all this patient's (and this visit's): the launch has keys,
        they are the ones made now, and the patient has no key of an older owner (an ``ehrs`` block adds the EHR's
        iss values, under which rows made before it are kept; then the page reads by every key, as before)."""
        if self.patient_key is None or keys.patients != [self.patient_key]:
            return False
        return not encounter or keys.encounters == [self.encounter_key]


def launch_keys(iss: str, context: dict[str, Any]) -> tuple[str | None, str | None]:
    """The keys a launch row carries: its patient's and encounter's as new referrals and follow-ups get them."""
    return patient_key(iss, context), encounter_key(iss, context)


@cache
def launch_statement(reads: frozenset[str]) -> Any:
    """Built once per set of reads: the launch's row (bind ``lid``), with this patient's open follow-ups (outer
    joined: one row a follow-up, else one row) and the visit's latest referral from another launch (outer joined
    on a correlated subquery). Plain joins and a scalar subquery, for SQLite and PostgreSQL alike."""
    launch = LaunchRecord.__table__
    columns: list[Any] = list(launch.c)
    joined: Any = launch
    if WITH_FOLLOWUPS in reads:
        f = FollowupItem.__table__
        joined = joined.outerjoin(f, and_(f.c.patient_key == launch.c.patient_key, f.c.status == "open"))
        columns += [f.c.opened_at.label("f_at"), f.c.response.label("f_status"),
                    f.c.visit_ended_at.label("f_contact"), f.c.encounter_key.label("f_ek"), f.c.id.label("f_id"),
                    f.c.launch_id.label("f_launch"), f.c.response_launch_id.label("f_response_launch")]
    if WITH_VISIT_REFERRAL in reads:
        r = ReferralRecord.__table__
        latest = (select(r.c.id).where(r.c.patient_key == launch.c.patient_key,
                                       r.c.encounter_key == launch.c.encounter_key, r.c.launch_id != launch.c.id)
                  .order_by(r.c.created_at.desc()).limit(1).correlate(launch).scalar_subquery())
        visit = r.alias("visit_referral")
        joined = joined.outerjoin(visit, visit.c.id == latest)
        columns += [visit.c.created_at.label("r_at"), visit.c.status.label("r_status")]
    if WITH_RECENT in reads:
        # As ``_memory_statement``'s latest referral and mark, for the launch row's key: each its row's id by a
        # correlated scalar subquery, that row outer joined (bind ``since``, the window's start).
        r, m = ReferralRecord.__table__, PatientMark.__table__
        since = bindparam("since")
        latest_referral = (select(r.c.id).where(r.c.patient_key == launch.c.patient_key, r.c.created_at >= since,
                                                r.c.launch_id != launch.c.id)
                           .order_by(r.c.created_at.desc()).limit(1).correlate(launch).scalar_subquery())
        latest_mark = (select(m.c.id).where(m.c.patient_key == launch.c.patient_key, m.c.at >= since)
                       .order_by(m.c.at.desc()).limit(1).correlate(launch).scalar_subquery())
        referral, mark = r.alias("recent_referral"), m.alias("recent_mark")
        joined = joined.outerjoin(referral, referral.c.id == latest_referral)
        joined = joined.outerjoin(mark, mark.c.id == latest_mark)
        columns += [referral.c.id.label("rr_id"), referral.c.created_at.label("rr_at"),
                    referral.c.status.label("rr_status"), referral.c.first_contact_at.label("rr_contact"),
                    referral.c.encounter_key.label("rr_ek"), mark.c.id.label("rm_id"), mark.c.at.label("rm_at"),
                    mark.c.encounter_key.label("rm_ek")]
    return select(*columns).select_from(joined).where(launch.c.id == bindparam("lid"))


def launch_params(reads: frozenset[str], now: datetime | None = None) -> dict[str, Any]:
    """The binds ``launch_statement(reads)`` takes besides ``lid``."""
    if WITH_RECENT not in reads:
        return {}
    return {"since": (now or datetime.now(UTC)) - timedelta(days=memory_days())}


def read_with_launch(rows: list[Any], reads: frozenset[str]) -> ReadWithLaunch:
    """The rows of ``launch_statement(reads)`` for one launch, as what they read of its patient."""
    first = rows[0]
    followups = None
    if WITH_FOLLOWUPS in reads:
        followups = tuple(_FollowupRow(row.f_at, row.f_status, row.f_contact, row.f_ek, row.f_id, row.f_launch,
                                       row.f_response_launch) for row in rows if row.f_id is not None)
    earlier = None
    if WITH_VISIT_REFERRAL in reads and first.r_at is not None:
        earlier = EarlierReferral(created_at=first.r_at, status=first.r_status)
    recent = None
    if WITH_RECENT in reads:
        recent = {}
        if first.rr_id is not None:
            recent["referral"] = _RecentRow(first.rr_at, first.rr_status, first.rr_contact, first.rr_ek)
        if first.rm_id is not None:
            recent["screen"] = _RecentRow(first.rm_at, None, None, first.rm_ek)
    return ReadWithLaunch(patient_key=first.patient_key, encounter_key=first.encounter_key, followups=followups,
                          referral_read=WITH_VISIT_REFERRAL in reads, visit_referral=earlier, recent=recent)


def gate_memory(db: Session, iss: str, context: dict[str, Any], launch_id: str, *, with_recent: bool,
                read: ReadWithLaunch | None = None) -> tuple[dict[str, Any] | None, list[OpenFollowup]]:
    """What the gate shows of this patient beyond this launch, as ``launch_memory`` gives it. ``read``: what the
    launch's own statement read (``WITH_RECENT`` and ``WITH_FOLLOWUPS``), used when it covers every key of this
    patient; else ``launch_memory``'s own statement."""
    if read is not None and read.recent is not None and read.followups is not None:
        keys = PatientKeys.of(iss, context)
        if read.covers(keys):
            eks = set(keys.encounters)
            followups = _followups_from(db, list(read.followups), eks, launch_id)
            return (_recent_from(read.recent, eks) if with_recent else None), followups
    return launch_memory(db, iss, context, launch_id, with_recent=with_recent)
