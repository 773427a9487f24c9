"""One write, one create: conditional on the business identifier (If-None-Exist) where the EHR honours it;
where it does not, a send whose outcome is unknown is searched for before it may go again."""

from __future__ import annotations

import logging
from typing import Any

from config.ehr_profile import EhrProfile
from fhir.client import FhirClient, FhirError
from smart_app.outbox import outcomes, retry
from smart_app.outbox.claim import still_mine
from smart_app.outbox.clients import AuthGone
from smart_app.outbox.context import SendContext
from smart_app.outbox.lookup import look_for
from smart_app.outbox.payload import ready_to_send
from smart_app.outbox.references import server_ids
from smart_app.outbox.written import written
from smart_app.store.models import OutboxItem

log = logging.getLogger("ipv.outbox")


def send_single(ctx: SendContext, row: OutboxItem) -> None:
    resource = ready_to_send(ctx, row, set())
    if resource is None:
        return
    try:
        client = ctx.client_for(row)
    except AuthGone as exc:
        outcomes.fail(ctx, row, str(exc) + ("" if row.outcome_unknown else "; nothing was written"))
        return
    profile = ctx.profile(row.profile)
    honours = ctx.honours_conditional_create(profile, client, row.kind)
    if not still_mine(ctx.db, row, lease_seconds=ctx.lease_for(client)):
        return  # our lease ran out while earlier rows of the batch were sent: another worker has it now
    if row.outcome_unknown and not honours:
        # An earlier send may have reached the EHR: never re-send blindly. Look for it first.
        if not _proved_absent(ctx, row, resource, client, profile):
            return
        if not still_mine(ctx.db, row, lease_seconds=ctx.lease_for(client)):
            return  # the search took time: the lease is renewed (or lost) before sending
    _create(ctx, row, resource, client, profile, conditional=honours)


def _create(ctx: SendContext, row: OutboxItem, resource: dict[str, Any], client: FhirClient, profile: EhrProfile,
            *, conditional: bool) -> None:
    search = f"identifier={row.identifier_system}|{row.identifier_value}"
    # From here on the EHR may have it (timeout, reset, this worker killed) — also when this send is a
    # conditional create: the next attempt may be made by a worker that cannot trust If-None-Exist (its
    # CapabilityStatement read failed), and it must search first rather than send a plain create. Marked
    # only once the lease is confirmed, so a row another worker holds is never written to.
    unknown_before = row.outcome_unknown  # an earlier send's unknown outcome outlives this send's refusal
    row.outcome_unknown = True
    ctx.db.commit()
    ctx.stats.sends += 1
    try:
        resp = client.create(resource, if_none_exist=search if conditional else None)
    except FhirError as exc:
        if not retry.maybe_applied(exc):
            row.outcome_unknown = unknown_before  # this send filed nothing: what was known before still holds
        retry.on_error(ctx, row, exc)
        return
    server_id, version = server_ids(resp.resource, resp.location)
    if not server_id:
        # 2xx without an id: find it (also confirms the write).
        found = look_for(row, resource, client, profile)
        if found.verdict == "found":
            server_id, version = found.resource.get("id"), (found.resource.get("meta") or {}).get("versionId")
    written(ctx, row, server_id, version, resource, client, returned=resp.resource)


def _proved_absent(ctx: SendContext, row: OutboxItem, resource: dict[str, Any], client: FhirClient,
                   profile: EhrProfile) -> bool:
    """Resolve an unknown outcome by searching. True = proved absent (send it); False = handled here
    (found -> written; search failed for now -> retry later; cannot tell -> "check the chart")."""
    found = look_for(row, resource, client, profile)
    if found.verdict == "found":
        log.info("outbox %s: %s found at the EHR after an unknown outcome; not sent again", row.id, row.kind)
        server_id, version = found.resource.get("id"), (found.resource.get("meta") or {}).get("versionId")
        written(ctx, row, server_id, version, resource, client, returned=None)
        return False
    if found.verdict == "absent":
        row.outcome_unknown = False
        return True
    if found.verdict == "retry" and row.attempts < row.max_attempts:
        outcomes.retry_later(ctx, row, "looking for an earlier send failed (" + found.why + "); will look again",
                             retry.backoff(ctx.settings, row.attempts))
        return False
    outcomes.check(ctx, row, found.why)
    return False
