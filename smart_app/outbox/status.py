"""Plain-language status of a referral's chart writes, for the clinician's confirmation page and the social-work
queue."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Select, select

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


def row_view(row: Any, words: dict[tuple[Any, ...], tuple[str, str, str]] | None = None) -> dict[str, Any]:
    """Plain-language status of one outbox row (clinician page, social-work queue, /progress). ``words``: the texts
    already worked out for rows of the same kind and state (a queue page's rows repeat a handful)."""
    key = (row.kind, row.status, bool(row.final_retry), bool(row.attempts), row.label_status)
    texts = words.get(key) if words is not None else None
    if texts is None:
        texts = _texts(*key)
        if words is not None:
            words[key] = texts
    label, text, label_text = texts
    view = {"id": row.id, "kind": row.kind, "label": label, "status": row.status,
            "reason": row.last_error, "label_status": row.label_status, "label_detail": row.label_detail,
            "text": text}
    view["state"] = row.status if row.status in ("written", "failed", "check") else "queued"
    view["label_text"] = label_text
    return view


def _texts(kind: str, status: str, final_retry: bool, attempted: bool,
           label_status: str | None) -> tuple[str, str, str]:
    """A row's kind, state and label check in words."""
    if status == "written":
        text = _("Written to the chart")
    elif status == "failed":
        text = _("Not written to the chart")
    elif status == "check":
        text = _("Check the chart: the EHR may or may not have saved it, and the app could not find out. "
                 "Look for it in the chart before documenting it by hand; the app will not send it again.")
    elif final_retry:
        text = _("The EHR did not take it. It is kept and will be tried once more; if that fails too, "
                 "social work is told and the note must be documented by hand.")
    elif attempted:
        text = _("Queued: the app will retry automatically")
    else:
        text = _("Queued to be written")
    words = _LABEL_STATUS_TEXTS.get(label_status or "")
    label_text = words() if words else _("Not checked yet") if status == "written" else "–"
    return kind_label(kind), text, label_text


def referral_rows(referral_id: str) -> list[OutboxItem]:
    # The referral's own writes; closed-loop status updates are the worklist's (smart_app/outbox/closed_loop.py).
    return referral_rows_of([referral_id]).get(referral_id, [])


# What ``row_view`` reads of a row (and the referral it belongs to): a queue page reads only these.
STATE_COLUMNS = (OutboxItem.id, OutboxItem.referral_id, OutboxItem.kind, OutboxItem.status, OutboxItem.attempts,
                 OutboxItem.final_retry, OutboxItem.last_error, OutboxItem.label_status, OutboxItem.label_detail)


def referral_states_of(referral_ids: list[str]) -> dict[str, list[Any]]:
    """``referral_rows_of`` as plain rows of ``STATE_COLUMNS`` (``row_view`` reads them as it reads an
    ``OutboxItem``): a queue page's hundred writes without building and tracking an ORM object for each."""
    if not referral_ids:
        return {}
    return _by_referral(get_session().execute(_own_writes(select(*STATE_COLUMNS), referral_ids)))


def referral_rows_of(referral_ids: list[str]) -> dict[str, list[OutboxItem]]:
    """The own writes of several referrals in one query (a page of the social-work queue), each in send order."""
    if not referral_ids:
        return {}
    return _by_referral(get_session().scalars(_own_writes(select(OutboxItem), referral_ids)))


def _own_writes(query: Select[Any], referral_ids: list[str]) -> Select[Any]:
    return query.where(OutboxItem.referral_id.in_(referral_ids), OutboxItem.operation == "create") \
        .order_by(OutboxItem.id)


def _by_referral(rows: Iterable[Any]) -> dict[str, list[Any]]:
    """Rows grouped by their referral, each referral's in send order."""
    out: dict[str, list[Any]] = {}
    for row in rows:
        out.setdefault(row.referral_id, []).append(row)
    for kept in out.values():
        kept.sort(key=lambda r: SEND_ORDER.get(r.kind, 99))
    return out
