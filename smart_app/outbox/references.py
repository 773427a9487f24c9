"""Links between a referral's writes: a planned resource points at its siblings by ``urn:uuid``; before it is
sent each link becomes the sibling's server id, waits for it, or is dropped when the sibling will not come."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from smart_app.outbox.state import FAILED, WRITTEN, aware, utcnow
from smart_app.store.models import OutboxItem


@dataclass(frozen=True)
class Dependency:
    """One link of a planned write (``OutboxItem.depends_on``): the sibling's fullUrl, its type, and whether the
    write is useless without it."""

    urn: str
    kind: str
    required: bool


@dataclass(frozen=True)
class Readiness:
    """Whether a write can go now: ``ready``; ``defer`` (a sibling it needs is still on its way); ``fail``
    (a sibling it needs, of type ``missing``, was not written)."""

    state: Literal["ready", "defer", "fail"]
    missing: str | None = None


READY = Readiness("ready")
DEFER = Readiness("defer")


def dependencies(row: OutboxItem) -> list[Dependency]:
    return [Dependency(urn, kind, bool(required))
            for urn, (kind, required) in json.loads(row.depends_on or "{}").items()]


def resolve(db: Session, row: OutboxItem, resource: dict[str, Any], in_bundle: set[str], *,
            link_wait_seconds: float) -> Readiness:
    """Swap urn:uuid references for server ids (in ``resource``), where the siblings are written. A link to
    a write in the same transaction (``in_bundle``) is left for the server to resolve."""
    deps = dependencies(row)
    if not deps:
        return READY
    siblings = {r.full_url: r for r in db.scalars(select(OutboxItem).where(OutboxItem.referral_id == row.referral_id))}
    for dep in deps:
        if dep.urn in in_bundle:
            continue  # same transaction: the server resolves the fullUrl
        target = siblings.get(dep.urn)
        if target is not None and target.status == WRITTEN and target.server_id:
            replace_reference(resource, dep.urn, f"{dep.kind}/{target.server_id}")
        elif target is None or target.status == FAILED:
            if dep.required:
                return Readiness("fail", dep.kind)
            drop_reference(resource, dep.urn)
        elif dep.required or utcnow() - aware(row.created_at) < timedelta(seconds=link_wait_seconds):
            return DEFER
        else:
            drop_reference(resource, dep.urn)  # waited long enough: the note matters more than the link
    return READY


def replace_reference(node: Any, urn: str, reference: str) -> None:
    if isinstance(node, dict):
        if node.get("reference") == urn:
            node["reference"] = reference
        for value in node.values():
            replace_reference(value, urn, reference)
    elif isinstance(node, list):
        for value in node:
            replace_reference(value, urn, reference)


def drop_reference(node: Any, urn: str) -> None:
    """Remove optional links to a resource that was not written (lists shrink, empty keys go)."""
    if isinstance(node, dict):
        for key in list(node):
            value = node[key]
            if isinstance(value, dict) and value.get("reference") == urn:
                del node[key]
            elif isinstance(value, list):
                node[key] = [v for v in value if not (isinstance(v, dict) and v.get("reference") == urn)]
                if not node[key]:
                    del node[key]
                else:
                    drop_reference(node[key], urn)
            else:
                drop_reference(value, urn)
                if isinstance(value, dict) and not value:
                    del node[key]  # e.g. DocumentReference.context left empty
    elif isinstance(node, list):
        for value in node:
            drop_reference(value, urn)


def server_ids(resource: dict[str, Any] | None, location: str | None) -> tuple[str | None, str | None]:
    """Server id and version from the returned resource or the Location (``Type/id/_history/v``)."""
    if resource and resource.get("id"):
        return resource["id"], (resource.get("meta") or {}).get("versionId")
    if location:
        parts = location.rstrip("/").split("/")
        if "_history" in parts:
            i = parts.index("_history")
            return parts[i - 1], parts[i + 1] if i + 1 < len(parts) else None
        return parts[-1], None
    return None, None
