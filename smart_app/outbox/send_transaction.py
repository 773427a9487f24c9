"""A referral's writes in one FHIR transaction, each entry conditional (``ifNoneExist``); only where the EHR
honours that for every type in it, since a transaction cannot be searched for entry by entry before a replay.
Elsewhere the writes go as single creates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir.client import FhirClient, FhirError
from smart_app.outbox import outcomes, retry
from smart_app.outbox.claim import still_mine
from smart_app.outbox.clients import AuthGone
from smart_app.outbox.context import SendContext
from smart_app.outbox.payload import ready_to_send
from smart_app.outbox.references import drop_reference, server_ids
from smart_app.outbox.send_single import send_single
from smart_app.outbox.written import written
from smart_app.store.models import OutboxItem


@dataclass
class Entry:
    """A row going in the transaction, with the resource it sends."""

    row: OutboxItem
    resource: dict[str, Any]

    def bundle_entry(self) -> dict[str, Any]:
        row = self.row
        return {"fullUrl": row.full_url, "resource": self.resource,
                "request": {"method": "POST", "url": row.kind,
                            "ifNoneExist": f"identifier={row.identifier_system}|{row.identifier_value}"}}


def send_transaction(ctx: SendContext, group: list[OutboxItem]) -> None:
    """Send a referral's create rows (in send order)."""
    if not _replay_safe(ctx, group):
        for row in group:
            send_single(ctx, row)
        return
    entries = _entries(ctx, group)
    if not entries:
        return
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry.bundle_entry() for entry in entries]}
    try:
        client = ctx.client_for(entries[0].row)
    except AuthGone as exc:
        for entry in entries:
            outcomes.fail(ctx, entry.row, str(exc) + "; nothing was written")
        return
    if not all(still_mine(ctx.db, entry.row, lease_seconds=ctx.lease_for(client)) for entry in entries):
        return
    # As for a single create: once sent, each entry may be filed, whoever makes the next attempt.
    unknown_before = {entry.row.id: entry.row.outcome_unknown for entry in entries}
    for entry in entries:
        entry.row.outcome_unknown = True
    ctx.db.commit()
    ctx.stats.sends += 1
    try:
        result = client.bundle(bundle)
    except FhirError as exc:
        refused = not retry.maybe_applied(exc)  # refused as a whole before anything was filed
        for entry in entries:
            if refused:  # this send filed nothing: an earlier send's unknown outcome still holds
                entry.row.outcome_unknown = unknown_before[entry.row.id]
            retry.on_error(ctx, entry.row, exc)
        return
    _record(ctx, entries, result, client)


def _replay_safe(ctx: SendContext, group: list[OutboxItem]) -> bool:
    """Does the EHR honour ifNoneExist for every type in the group? Without a client to ask (the sign-in is
    gone) the transaction path goes on, and fails each row plainly."""
    try:
        probe = ctx.client_for(group[0])
    except AuthGone:
        return True
    profile = ctx.profile(group[0].profile)
    return all(ctx.honours_conditional_create(profile, probe, r.kind) for r in group)


def _entries(ctx: SendContext, group: list[OutboxItem]) -> list[Entry]:
    """The rows ready to go, with their resources; the others get their outcome (deferred, failed, kept)."""
    entries = []
    in_bundle = {r.full_url for r in group}
    for row in group:
        resource = ready_to_send(ctx, row, in_bundle)
        if resource is None:
            in_bundle.discard(row.full_url)
            continue
        entries.append(Entry(row, resource))
    # A reference to a row that left the bundle (deferred/failed) must not dangle.
    left = {r.full_url for r in group} - in_bundle
    for entry in entries:
        for urn in left:
            drop_reference(entry.resource, urn)
    return entries


def _record(ctx: SendContext, entries: list[Entry], result: dict[str, Any], client: FhirClient) -> None:
    """Each entry's outcome from the transaction response, in entry order."""
    out = result.get("entry") or []
    for i, entry in enumerate(entries):
        answer = out[i] if i < len(out) else {}
        response = answer.get("response") or {}
        server_id, version = server_ids(answer.get("resource"), response.get("location"))
        if not server_id:
            retry.on_error(ctx, entry.row, FhirError(502, "transaction response without a location"))
            continue
        # The entry's stored resource (Prefer: return=representation) spares a read-back, as for a create.
        written(ctx, entry.row, server_id, version, entry.resource, client, returned=answer.get("resource"))
