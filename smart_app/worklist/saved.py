"""Saved queue views: a social worker keeps the filters and sort they use often and applies them in one click.

Stored server-side (``worklist_saved_filter``) under a keyed HMAC of (EHR, user): no user id in clear. What is
saved is the view's query string, made only of known filter names and the sort (site and program names,
statuses, urgency, age): never a search, so never a reference code or an MRN. Its name is made from the
filters, in the reader's language; the user types nothing that could carry a patient detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smart_app.store.crypto import keyed_hash
from smart_app.store.models import SavedQueueFilter
from smart_app.worklist.queue import FACETS, SORTS, facet_names
from smart_app.worklist.scope import Scope

MAX_SAVED = 12
QUERY_MAX = 1024


@dataclass(frozen=True)
class SavedView:
    id: int
    args: dict[str, str]


def user_tag(scope: Scope) -> str | None:
    """The key saved views are kept under: None when the launch names no user (nothing can be saved)."""
    if not scope.user_reference:
        return None
    return keyed_hash(f"worklist-user|{scope.ehr_id}|{scope.user_reference}")  # any iss of the EHR


def view_args(filters: dict[str, str], sort: str) -> dict[str, str]:
    """The filters and sort worth saving: chosen values only (a facet at its default is left out), in the
    filter bar's order, so one view is stored once however it was reached."""
    defaults = {f.name: f.default for f in FACETS}
    out = {name: filters[name] for name in facet_names()
           if filters.get(name) and filters[name] != defaults.get(name, "")}
    if sort and sort != "triage":
        out["sort"] = sort
    return out


def _clean(args: dict[str, str]) -> dict[str, str]:
    known = set(facet_names()) | {"sort"}
    out = {k: str(v)[:256] for k, v in args.items() if k in known and v}
    if out.get("sort") not in SORTS:
        out.pop("sort", None)
    return out


def saved_views(db: Session, tag: str | None) -> list[SavedView]:
    if tag is None:
        return []
    rows = db.execute(select(SavedQueueFilter.id, SavedQueueFilter.query).where(SavedQueueFilter.user_tag == tag)
                      .order_by(SavedQueueFilter.id)).all()
    return [SavedView(id=row.id, args=_clean(dict(parse_qsl(row.query)))) for row in rows]


def save_view(db: Session, tag: str, args: dict[str, str]) -> bool:
    """Keep this view for the user (once; at most MAX_SAVED). False when there was nothing to save or no room."""
    query = urlencode(_clean(args))
    if not query or len(query) > QUERY_MAX:
        return False
    count = db.scalar(select(func.count()).select_from(SavedQueueFilter).where(SavedQueueFilter.user_tag == tag))
    if (count or 0) >= MAX_SAVED:
        return False
    db.add(SavedQueueFilter(user_tag=tag, query=query))
    try:
        db.commit()
    except IntegrityError:  # already saved (or saved by a second click at the same moment)
        db.rollback()
    return True


def delete_view(db: Session, tag: str, view_id: int) -> None:
    db.execute(delete(SavedQueueFilter).where(SavedQueueFilter.user_tag == tag, SavedQueueFilter.id == view_id))
    db.commit()

