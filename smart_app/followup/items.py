"""The forced response: a positive self-administered screen stays an open item until the clinician records one.

Why: when patients answered on a computer, only about half of the positive prompts led to a discussion (Rhodes et
al., Arch Intern Med 2006), so the response is the step this mode must not let slip. The tablet
(the kiosk package) stores the answers in the launch's working state as the clinician's pages do, with
``administered: "self"``, and calls ``open_if_positive_self_screen``. Positive means the instrument's cut-off
(``smart_app.screening.summary.positive``: the published one, or the deployment's ``cutoffs``), never a rule of
its own here.

The item (``followup_item``) is keyed like referrals: the EHR identity (config/ehrs.py), keyed HMACs of the patient
and encounter (smart_app/launch/visit_memory.py), the site's keys for the social-work queue's coverage, the name and
MRN encrypted for that queue. The responses:

- ``discussed_referred``: discussed, and a referral offered or made;
- ``discussed_declined``: discussed, the patient declined help now;
- ``not_safe_now``: not safe to discuss now. The item stays open: the next launch for this patient asks again.

Where it shows until recorded: the result page after hand-back and the first page of every later launch for the
patient (``smart_app/followup/templates/followup/_panel.html``), the CDS Hooks card for the patient
(smart_app/cds/views.py), and, once past the visit (the encounter seen ended, or ``tuning.followup_visit_hours``
after it opened), the social-work queue of the staff who cover its site (smart_app/worklist/views.py).

Counted in the report (smart_app/report/events.py): one ``self_positive`` per item and one ``self_responded`` at the
first response recorded, whichever it is (the clinician responded), in the month the item opened.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config.current import current_settings
from smart_app.launch.sites import referral_site_keys, site_display_name
from smart_app.launch.visit_memory import encounter_key, patient_key, patient_keys
from smart_app.ops.i18n import gettext as _
from smart_app.report import events
from smart_app.screening.summary import instrument_of, positive
from smart_app.store.crypto import Undecryptable, decrypt_json, encrypt_json
from smart_app.store.db import get_session
from smart_app.store.models import FollowupItem

SELF = "self"  # the working state's ``administered`` when the patient answered on the tablet
OPEN, RECORDED = "open", "recorded"
DISCUSSED_REFERRED, DISCUSSED_DECLINED, NOT_SAFE_NOW = "discussed_referred", "discussed_declined", "not_safe_now"
RESPONSES: dict[str, Callable[[], str]] = {
    DISCUSSED_REFERRED: lambda: _("Discussed and referred"),
    DISCUSSED_DECLINED: lambda: _("Discussed, patient declined"),
    NOT_SAFE_NOW: lambda: _("Not safe to discuss now — remind me next time"),
}
FINAL = frozenset({DISCUSSED_REFERRED, DISCUSSED_DECLINED})  # closes the item; not_safe_now leaves it open
CLINICIAN = "clinician"  # the responder role of a user with no queue role


def response_label(code: str | None) -> str:
    words = RESPONSES.get(code or "")
    return words() if words else ""


def self_administered(data: dict[str, Any]) -> bool:
    """The tablet marks the launch's state and the screen itself; either says the patient answered alone."""
    return SELF in (data.get("administered"), (data.get("screening") or {}).get("administered"))


def open_if_positive_self_screen(launch: Any) -> FollowupItem | None:
    """Open the launch's response item when its screen was self-administered and is positive; the item already
    open for this launch when there is one (idempotent: a second call, or a concurrent one, opens nothing more).
    None when the screen was not self-administered, not positive, or the launch names no patient. Commits."""
    data = launch.data
    screening = data.get("screening") or {}
    if not self_administered(data) or not screening:
        return None
    if not positive(instrument_of(screening.get("instrument")), screening):
        return None
    db = get_session()
    existing = of_launch(db, launch.id)
    if existing is not None:
        return existing
    pk = patient_key(launch.iss, launch.context)
    if pk is None:
        return None
    events.self_positive(launch)  # counted once per launch; fixes the launch's report month and site
    counted = launch.data.get("report_counted") or {}
    patient = (launch.context or {}).get("patient") or {}
    item = FollowupItem(
        launch_id=launch.id, ehr=events.ehr_of(launch.iss) or launch.iss, iss=launch.iss, patient_key=pk,
        encounter_key=encounter_key(launch.iss, launch.context), site=counted.get("_site") or events.UNSPECIFIED,
        site_name=site_display_name(launch.context), site_keys=json.dumps(referral_site_keys(launch.context, None)),
        summary_enc=encrypt_json({"patient_name": patient.get("name"), "mrn": patient.get("mrn")}),
        month=counted.get("_month") or events.month_of(), status=OPEN)
    db.add(item)
    try:
        db.flush()
    except IntegrityError:  # another request opened it first
        db.rollback()
        return of_launch(db, launch.id)
    launch.update_data(followup={"id": item.id})
    db.commit()
    return item


def of_launch(db: Session, launch_id: str) -> FollowupItem | None:
    return db.scalars(select(FollowupItem).where(FollowupItem.launch_id == launch_id)).first()


def of_patient(db: Session, launch: Any, item_id: str) -> FollowupItem | None:
    """The item ``item_id`` when it is this launch's patient's (the same EHR's keys), else None."""
    keys = patient_keys(launch.iss, launch.context)
    if not item_id or len(item_id) > 64 or not keys:
        return None
    return db.scalars(select(FollowupItem).where(FollowupItem.id == item_id,
                                                 FollowupItem.patient_key.in_(keys))).first()


def record_response(db: Session, item: FollowupItem, code: str, *, role: str, launch_id: str | None) -> bool:
    """Record a response (no commit: the caller's). False for an unknown code. A final one closes the item; "not
    safe to discuss now" keeps it open for the next launch. The first response recorded is counted in the report,
    in the month the item opened."""
    if code not in RESPONSES:
        return False
    if item.status != OPEN:
        return True  # already recorded: a second press changes nothing
    now = datetime.now(UTC)
    item.response, item.responded_at, item.responder_role = code, now, role[:32]
    item.response_launch_id = launch_id
    if code in FINAL:
        item.status = RECORDED
    if item.first_response_at is None:
        item.first_response_at = now
        events.add(db, "self_responded", site=item.site, month=item.month, ehr=item.ehr)
    return True


def responder_role(roles: list[str]) -> str:
    """The role a response is recorded under: the user's queue role (social work), else clinician."""
    return roles[0] if roles else CLINICIAN


# -- the social-work queue -------------------------------------------------------------------------------------------


def visit_hours() -> int:
    return current_settings().followup_visit_hours


def past_visit(now: datetime, hours: int) -> ColumnElement[bool]:
    """Past the visit: a later launch saw the encounter end, or ``hours`` have passed since the item opened."""
    return or_(FollowupItem.visit_ended_at.is_not(None), FollowupItem.opened_at <= now - timedelta(hours=hours))


def open_past_visit(db: Session, ehr_ids: list[str], now: datetime, hours: int) -> list[FollowupItem]:
    """One EHR's open items past their visit, oldest first (the queue keeps those its user covers)."""
    return list(db.scalars(select(FollowupItem).where(FollowupItem.ehr.in_(ehr_ids), FollowupItem.status == OPEN,
                                                      past_visit(now, hours)).order_by(FollowupItem.opened_at)))


def site_keys(item: FollowupItem) -> list[str]:
    try:
        keys = json.loads(item.site_keys or "[]")
    except ValueError:
        return []
    return [str(k) for k in keys] if isinstance(keys, list) else []


def patient_summary(item: FollowupItem) -> dict[str, Any]:
    """Name and MRN for the social worker (decrypted only for the rows shown); {} when unreadable."""
    try:
        return decrypt_json(item.summary_enc, where="follow-up summary") or {}
    except Undecryptable:
        return {}
