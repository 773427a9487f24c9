"""Positive self-screens left without a response past the visit (smart_app/followup/items.py), at the top of the
social-work queue: scoped exactly like referrals (smart_app/worklist/scope.py). An item is in a user's queue when it
is of the user's EHR and one of its site keys is covered by the user, or the route its site keys would get
(smart_app/worklist/routing.py) is a team the user works, or that route is the unrouted queue (every social worker
and program manager of that EHR). Another EHR's or another site's item does not exist here (404 on a POST).

The route is worked out when the queue is read, from the site keys stored with the item, so a routing change
reaches the items already open. Items are few (open, past the visit, one EHR): read in one statement, then scoped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from config.deployment import Site
from smart_app.followup import items as followup
from smart_app.store.models import FollowupItem
from smart_app.worklist.routing import UNROUTED, routing_of
from smart_app.worklist.scope import Scope


@dataclass(frozen=True)
class Row:
    """One item as the queue shows it: when it opened, the site, the patient's name and MRN, the last response."""

    id: str
    opened_at: datetime
    site_name: str | None
    patient_name: str | None
    mrn: str | None
    response: str


def in_scope(item: FollowupItem, scope: Scope, deployment: Site) -> bool:
    if not scope.is_queue_user or item.ehr != scope.ehr_id:
        return False
    keys = followup.site_keys(item)
    if scope.keys & set(keys):
        return True
    route = routing_of(deployment).route(item.ehr, keys)
    return route.kind == UNROUTED or (route.team_id is not None and route.team_id in scope.teams)


def open_for(db: Session, scope: Scope, deployment: Site, now: datetime) -> list[FollowupItem]:
    """The user's open items past their visit, oldest first."""
    if not scope.is_queue_user:
        return []
    found = followup.open_past_visit(db, [scope.ehr_id], now, followup.visit_hours())
    return [item for item in found if in_scope(item, scope, deployment)]


def rows(found: list[FollowupItem]) -> list[Row]:
    """The shown items, their names and MRNs decrypted now."""
    out = []
    for item in found:
        patient: dict[str, Any] = followup.patient_summary(item)
        out.append(Row(id=item.id, opened_at=item.opened_at, site_name=item.site_name,
                       patient_name=patient.get("patient_name"), mrn=patient.get("mrn"),
                       response=followup.response_label(item.response)))
    return out


def scoped_item(db: Session, scope: Scope, deployment: Site, item_id: str) -> FollowupItem | None:
    """An open item the user may act on, else None (a closed one, another EHR's or site's, or no such item)."""
    if not item_id or len(item_id) > 64:
        return None
    item = db.get(FollowupItem, item_id)
    if item is None or item.status != followup.OPEN or not in_scope(item, scope, deployment):
        return None
    return item
