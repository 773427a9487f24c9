"""A write the EHR has: the row records its server id, its labels are checked, and the access audit says whose
launch caused it."""

from __future__ import annotations

import logging
from typing import Any

from fhir.client import FhirClient
from smart_app.launch.state import Launch
from smart_app.ops.audit import record_audit
from smart_app.outbox import verify
from smart_app.outbox.context import SendContext
from smart_app.outbox.state import WRITTEN, utcnow
from smart_app.store.models import LaunchRecord, OutboxItem

log = logging.getLogger("ipv.outbox")


def written(ctx: SendContext, row: OutboxItem, server_id: str | None, version: str | None, sent: dict[str, Any],
            client: FhirClient, returned: dict[str, Any] | None = None) -> None:
    """Record the write (``returned``: the stored resource the EHR answered with, if any). Commits."""
    now = utcnow()
    row.status, row.server_id, row.server_version = WRITTEN, server_id, version
    row.written_at = row.updated_at = now
    row.claimed_by = row.lease_until = None
    row.last_error = None
    row.outcome_unknown = False
    verify.check_after_write(ctx, row, sent, client, returned)
    _audit(ctx, row)
    ctx.db.commit()
    ctx.stats.written += 1
    ctx.stats.ids.append(row.id)
    log.info("outbox %s: %s written", row.id, row.kind)


def _audit(ctx: SendContext, row: OutboxItem) -> None:
    """Access audit: which user's launch caused this chart write (committed with the write's state)."""
    record = ctx.db.get(LaunchRecord, row.launch_id) if row.launch_id else None
    launch = Launch(record) if record is not None else None
    resources = [f"{row.kind}/{row.server_id}"] if row.server_id else None
    record_audit("write_resource", launch=launch, iss=row.iss, object_id=row.referral_id, detail=row.kind,
                 resources=resources, db=ctx.db, app=ctx.app)
