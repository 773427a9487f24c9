"""De-identified program events: what the program report counts.

Each step of a journey adds at most one row per kind to ``report_event``: month, site, kind, the EHR identity
(config/ehrs.py: one EHR answering on several iss values counts as one) and, for screens and referrals,
instrument and language. No patient, launch, referral or user id and no
time finer than the month, so the table can outlive the patient data (purging launches or
referrals leaves past reports unchanged) and nothing in it identifies a patient.

Call sites are one line each (screening, writeback, worklist, cds blueprints). A step counted
twice in one launch (a reload, a second POST) is counted once: the launch's encrypted working
state remembers which kinds it already counted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from config.current import current_settings
from config.ehrs import ehr_id_for
from smart_app.store.db import get_session
from smart_app.store.models import ReferralDims, ReferralRecord, ReportEvent

# Kinds counted per journey (screens, referrals) and per card.
SCREEN_KINDS = ("offered", "completed", "declined", "positive", "urgent")
REFERRAL_KINDS = ("referral", "contacted_24h", "contacted_72h")
# The warm hand-off at the bedside: the call to the advocate offered, and completed (spoke with one then).
HANDOFF_KINDS = ("handoff_offered", "handoff_completed")
CARD_KINDS = ("card_shown", "card_accepted", "card_overridden")
# A positive self-administered screen (clinic tablet) and, once, the clinician's first recorded response to it, both
# in the month it was positive (smart_app/followup/items.py).
FOLLOWUP_KINDS = ("self_positive", "self_responded")
# A check-in started (the gate shown, once per launch) and universal education offered in it (never the answer).
EDUCATION_KINDS = ("checkin", "education_offered")
KINDS = SCREEN_KINDS + REFERRAL_KINDS + HANDOFF_KINDS + CARD_KINDS + FOLLOWUP_KINDS + EDUCATION_KINDS
SITE_SYSTEM = "urn:ipv-sandbox:site"  # the sandbox's site identifier on Location (as in writeback)
UNSPECIFIED = "unspecified"


def month_of(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m")


def site_of(context: dict[str, Any]) -> str:
    """The encounter's site key: its Location's site identifier, else the deployment's site_map
    entry for the Location or serviceProvider, else 'unspecified'."""
    encounter = context.get("encounter") or {}
    site_map = current_settings().site_map
    for loc in encounter.get("locations") or []:
        for ident in loc.get("identifiers") or []:
            if ident.get("system") == SITE_SYSTEM and ident.get("value"):
                return str(ident["value"])[:64]
        if site_map.get(f"Location/{loc.get('id')}"):
            return str(site_map[f"Location/{loc.get('id')}"])[:64]
    org = encounter.get("service_provider") or {}
    return str(site_map.get(f"Organization/{org.get('id')}") or UNSPECIFIED)[:64]


def ehr_of(iss: str | None) -> str | None:
    """The EHR identity an event of a launch on ``iss`` counts for."""
    return ehr_id_for(iss, current_settings())[:512] if iss else None


def add(db: Session, kind: str, *, site: str, month: str, instrument: str = "", language: str = "",
        ehr: str | None = None) -> None:
    """One counted event (no commit: it joins the caller's transaction)."""
    if kind not in KINDS:
        raise ValueError(f"unknown report event {kind!r}")
    # A plain INSERT in the session's transaction: counted rows are never read back or changed in a request.
    db.connection().execute(_INSERT, {"kind": kind, "site": site or UNSPECIFIED, "month": month,
                                      "instrument": instrument or "", "language": language or "", "ehr": ehr})


_INSERT = ReportEvent.__table__.insert()


def _once(launch: Any, kinds: list[str], **dims: str) -> None:
    """Add the kinds this launch has not counted yet, and remember them in its working state."""
    counted = dict(launch.data.get("report_counted") or {})
    new = [k for k in kinds if k not in counted]
    if not new:
        return
    month = counted.get("_month") or month_of()
    site = counted.get("_site") or site_of(launch.context)
    db = get_session()
    for kind in new:
        add(db, kind, site=site, month=month, ehr=ehr_of(launch.iss), **dims)
        counted[kind] = True
    counted.update(_month=month, _site=site)
    launch.update_data(report_counted=counted)
    db.commit()


# ---------------------------------------------------------------------------- call sites


def offered(launch: Any, instrument: str, language: str) -> None:
    """The instrument was put in front of the patient (first time in this launch)."""
    _once(launch, ["offered"], instrument=instrument, language=language)


def screened(launch: Any, screening: dict[str, Any]) -> None:
    """A scored or declined screen (and, after the danger check, its urgency)."""
    if screening.get("interpretation") == "declined" or screening.get("score") is None:
        kinds = ["declined"]
    else:
        kinds = ["completed"] + (["positive"] if screening.get("interpretation") == "positive" else [])
        kinds += ["urgent"] if screening.get("danger") else []
    _once(launch, kinds, instrument=screening.get("instrument") or "", language=screening.get("language") or "")


def handoff(launch: Any, *, completed: bool) -> None:
    """The call to the advocate was offered at the bedside (and, ``completed``, the patient spoke with one)."""
    screening = launch.data.get("screening") or {}
    _once(launch, ["handoff_offered"] + (["handoff_completed"] if completed else []),
          instrument=screening.get("instrument") or "", language=screening.get("language") or "")


def checkin(launch: Any) -> None:
    """The check-in's first page was shown (the gate): the launches universal education is measured against."""
    _once(launch, ["checkin"])


def education_offered(launch: Any) -> None:
    """The clinician offered the universal-education words and the wallet card in this launch (counted once; the
    patient's answer is never asked or kept)."""
    _once(launch, ["checkin", "education_offered"])


def self_positive(launch: Any) -> None:
    """A positive self-administered screen opened a response item (counted once per launch)."""
    screening = launch.data.get("screening") or {}
    _once(launch, ["self_positive"], instrument=screening.get("instrument") or "",
          language=screening.get("language") or "")


def referral_made(launch: Any, record: ReferralRecord) -> None:
    """A consented referral; its dimensions are kept beside it for the later contact count. No commit: it
    joins the referral's transaction, so it is counted exactly when the referral is stored."""
    counted = launch.data.get("report_counted") or {}
    screening = launch.data.get("screening") or {}
    month = counted.get("_month") or month_of()
    site = counted.get("_site") or record.site or site_of(launch.context)
    dims = {"instrument": screening.get("instrument") or "", "language": screening.get("language") or ""}
    db = get_session()
    if db.get(ReferralDims, record.id) is None:
        db.add(ReferralDims(referral_id=record.id, month=month, site=site, **dims))
        add(db, "referral", site=site, month=month, ehr=record.ehr or ehr_of(record.iss), **dims)


def referral_status(record: ReferralRecord, to_status: str, at: datetime | None = None) -> None:
    """Social work marked the referral contacted: counted once, within 24 h and/or 72 h of the referral."""
    if to_status != "contacted":
        return
    db = get_session()
    dims = db.get(ReferralDims, record.id)
    if dims is None or dims.contacted:
        return
    created = record.created_at if record.created_at.tzinfo else record.created_at.replace(tzinfo=UTC)
    hours = ((at or datetime.now(UTC)) - created).total_seconds() / 3600
    dims.contacted = True
    for kind, limit in (("contacted_24h", 24), ("contacted_72h", 72)):
        if hours <= limit:
            add(db, kind, site=dims.site, month=dims.month, instrument=dims.instrument, language=dims.language,
                ehr=record.ehr or ehr_of(record.iss))
    db.commit()


def card(db: Session, kind: str, *, site: str, month: str, ehr: str | None = None) -> None:
    """A check-in card shown, accepted or overridden (smart_app/cds/views.py)."""
    add(db, kind, site=site, month=month, ehr=ehr)
