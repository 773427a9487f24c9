"""Did the EHR keep the security labels? Judged from the stored resource the create returned where it did,
else by a bounded read-back; read-backs that failed are retried later (a read is idempotent: no claim)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from fhir.client import FhirClient, FhirError
from fhir.labels import verify_labels
from smart_app.outbox import retry
from smart_app.outbox.clients import AuthGone
from smart_app.outbox.context import SendContext
from smart_app.outbox.state import WRITTEN, RunStats, utcnow
from smart_app.store.crypto import Undecryptable, decrypt_json
from smart_app.store.models import OutboxItem

log = logging.getLogger("ipv.outbox")

# Read-backs retried per run (the rest wait for the next run).
PENDING_CHECKS_PER_RUN = 25


def check_after_write(ctx: SendContext, row: OutboxItem, sent: dict[str, Any], client: FhirClient,
                      returned: dict[str, Any] | None) -> None:
    """Set the label status of a row just written."""
    profile = ctx.profile(row.profile)
    expected = _expected(sent)
    if profile.labels_kept == "dropped":
        # Known to be dropped: nothing to read back; the note's protection is its restricted type.
        row.label_status = "note_type" if row.kind == "DocumentReference" else "unchecked"
        row.label_detail = "this EHR does not keep security labels"
    elif returned and returned.get("resourceType") == row.kind and "meta" in returned:
        # Prefer: return=representation honoured: the stored resource is in hand, no read-back.
        judge(row, expected, returned, ctx.stats)
    elif profile.read_back.enabled and row.server_id:
        read_back(ctx, row, sent, client)
    else:
        row.label_status = None


def read_back(ctx: SendContext, row: OutboxItem, sent: dict[str, Any], client: FhirClient) -> None:
    """Bounded read-back: 401/403/404 = could not check (no retry); other failures retried a few times
    with backoff (the profile's read_back.max_attempts), then "could not check"."""
    row.label_attempts = (row.label_attempts or 0) + 1
    try:
        stored = client.read(row.kind, row.server_id)
    except FhirError as exc:
        limit = ctx.profile(row.profile).read_back.max_attempts
        if exc.status in (401, 403, 404) or row.label_attempts >= limit:
            row.label_status = "unchecked"
            row.label_detail = "labels could not be checked: " + retry.reason(exc)
        else:
            row.label_status = "unverified"
            row.label_detail = "read-back failed: " + retry.reason(exc)
            row.next_attempt_at = utcnow() + timedelta(seconds=retry.backoff(ctx.settings, row.label_attempts))
        return
    judge(row, _expected(sent), stored, ctx.stats)


def judge(row: OutboxItem, expected: list[dict[str, Any]], stored: dict[str, Any], stats: RunStats) -> None:
    check = verify_labels(expected, stored)
    row.label_status = "ok" if check.ok else "flagged"
    row.label_detail = check.summary()
    if not check.ok:
        stats.label_flags += 1
        # Resource type + outbox id + label codes only: no PHI in logs.
        log.warning("outbox %s: EHR did not keep the security labels of the %s (%s)",
                    row.id, row.kind, check.summary())


def verify_pending(ctx: SendContext, *, referral_id: str | None = None) -> None:
    """Retry the read-backs that failed earlier and are due."""
    q = select(OutboxItem).where(OutboxItem.status == WRITTEN, OutboxItem.label_status == "unverified",
                                 OutboxItem.next_attempt_at <= utcnow())
    if referral_id is not None:
        q = q.where(OutboxItem.referral_id == referral_id)
    for row in list(ctx.db.scalars(q.limit(PENDING_CHECKS_PER_RUN))):
        try:
            client = ctx.client_for(row)
        except AuthGone:
            row.label_status, row.label_detail = "unchecked", "labels could not be checked: sign-in ended"
            ctx.db.commit()
            continue
        try:
            sent = decrypt_json(row.resource_enc, where="outbox write") or {}
        except Undecryptable:
            continue  # checked once the key is back
        read_back(ctx, row, sent, client)
        ctx.db.commit()


def _expected(sent: dict[str, Any]) -> list[dict[str, Any]]:
    return (sent.get("meta") or {}).get("security") or []
