"""Plain-language status of a referral's chart writes, for the clinician's confirmation page and the social-work
queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from fhir.builders import SEND_ORDER
from smart_app.ops.i18n import gettext as _
from smart_app.ops.i18n import label_for
from smart_app.store.db import get_session
from smart_app.store.models import OutboxItem

_KIND_LABELS: dict[str, Callable[[], str]] = {
    "DocumentReference": lambda: _("Referral note"), "ServiceRequest": lambda: _("Referral"),
    "Observation": lambda: _("Screening score"), "QuestionnaireResponse": lambda: _("Screening answers"),
    "Task": lambda: _("Follow-up task"), "Condition": lambda: _("Health problem entry"),
}
_LABEL_STATUS_TEXTS: dict[str, Callable[[], str]] = {
    "ok": lambda: _("Verified"), "flagged": lambda: _("Not kept by the EHR"),
    "unchecked": lambda: _("Could not be checked"), "note_type": lambda: _("Protected by the restricted note type"),
    "unverified": lambda: _("Being checked"),
}


def kind_label(kind: str) -> str:
    return label_for(_KIND_LABELS, kind)


def row_view(row: OutboxItem) -> dict[str, Any]:
    """Plain-language status of one outbox row (clinician page, social-work queue, /progress)."""
    view = {"id": row.id, "kind": row.kind, "label": kind_label(row.kind), "status": row.status,
            "reason": row.last_error, "label_status": row.label_status, "label_detail": row.label_detail}
    if row.status == "written":
        view["text"] = _("Written to the chart")
    elif row.status == "failed":
        view["text"] = _("Not written to the chart")
    elif row.status == "check":
        view["text"] = _("Check the chart: the EHR may or may not have saved it, and the app could not find out. "
                         "Look for it in the chart before documenting it by hand; the app will not send it again.")
    elif row.final_retry:
        view["text"] = _("The EHR did not take it. It is kept and will be tried once more; if that fails too, "
                         "social work is told and the note must be documented by hand.")
    elif row.attempts:
        view["text"] = _("Queued: the app will retry automatically")
    else:
        view["text"] = _("Queued to be written")
    view["state"] = row.status if row.status in ("written", "failed", "check") else "queued"
    words = _LABEL_STATUS_TEXTS.get(row.label_status or "")
    view["label_text"] = words() if words else _("Not checked yet") if row.status == "written" else "–"
    return view


def referral_rows(referral_id: str) -> list[OutboxItem]:
    # The referral's own writes; closed-loop status updates are the worklist's (smart_app/outbox/closed_loop.py).
    return referral_rows_of([referral_id]).get(referral_id, [])


def referral_rows_of(referral_ids: list[str]) -> dict[str, list[OutboxItem]]:
    """The own writes of several referrals in one query (a page of the social-work queue), each in send order."""
    out: dict[str, list[OutboxItem]] = {}
    if not referral_ids:
        return out
    for row in get_session().scalars(select(OutboxItem).where(OutboxItem.referral_id.in_(referral_ids),
                                                              OutboxItem.operation == "create")
                                  .order_by(OutboxItem.id)):
        out.setdefault(row.referral_id, []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: SEND_ORDER.get(r.kind, 99))
    return out
