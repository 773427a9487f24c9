"""The closed loop's sender: a status row (``operation == "status"``, queued by ``closed_loop.enqueue_status``)
sets the status of a resource the referral wrote. Read it; if it already has the wanted status it is done (a
resend after a lost reply changes nothing); otherwise ``PUT`` it with ``If-Match`` on the version read, so an
edit made in the EHR meanwhile is never overwritten (412: read again on the next try). FHIR R4 update and
If-Match / versionId: https://hl7.org/fhir/R4/http.html#concurrency"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from fhir.client import FhirClient, FhirError
from smart_app.outbox import outcomes, retry
from smart_app.outbox.clients import AuthGone
from smart_app.outbox.context import SendContext
from smart_app.store.crypto import Undecryptable, decrypt_json
from smart_app.store.models import OutboxItem


def send_status(ctx: SendContext, row: OutboxItem) -> None:
    db = ctx.db
    try:
        wanted = decrypt_json(row.resource_enc, where="status update") or {}
    except Undecryptable:
        outcomes.unreadable(ctx, row)  # stays pending until the key is back (as queued writes do)
        return
    target_url = next(iter(json.loads(row.depends_on or "{}")), None)
    target = db.scalar(select(OutboxItem).where(OutboxItem.referral_id == row.referral_id,
                                                OutboxItem.full_url == target_url,
                                                OutboxItem.operation == "create"))
    if target is None or target.status == "failed":
        outcomes.fail(ctx, row, f"the chart has no {row.kind} from this referral to update")
        return
    if target.status != "written" or not target.server_id:
        outcomes.defer(ctx, row)
        return
    try:
        client = ctx.client_for(row)
    except AuthGone as exc:
        outcomes.fail(ctx, row, str(exc) + "; the chart was not updated")
        return
    ctx.stats.sends += 1
    try:
        _put_status(client, f"{row.kind}/{target.server_id}", row.kind, wanted)
    except FhirError as exc:
        if exc.status == 412:  # changed in the EHR since we read it: read again on the next try
            outcomes.retry_later(ctx, row, "the EHR had a newer version; reading it again", 0.0)
            return
        retry.on_error(ctx, row, exc)
        return
    now = datetime.now(UTC)
    row.status, row.server_id, row.written_at, row.updated_at = "written", target.server_id, now, now
    row.claimed_by = row.lease_until = None
    row.last_error = None
    db.commit()
    ctx.stats.written += 1
    ctx.stats.ids.append(row.id)


def _put_status(client: FhirClient, path: str, kind: str, wanted: dict[str, Any]) -> None:
    """Read the resource and, unless it already has the wanted status, update it on the version read."""
    current = client.request("GET", path).resource or {}
    reason = wanted.get("status_reason") if kind == "Task" else None
    if current.get("status") == wanted.get("status") and (reason is None or current.get("statusReason") == reason):
        return
    current["status"] = wanted["status"]
    if reason is not None:  # how a closed referral ended (closed_loop._outcome)
        current["statusReason"] = reason
    if kind == "Task":
        current["lastModified"] = datetime.now(UTC).isoformat(timespec="seconds")
    headers = {"Prefer": "return=minimal"}
    version = (current.get("meta") or {}).get("versionId")
    if version:
        headers["If-Match"] = f'W/"{version}"'
    client.request("PUT", path, json=current, headers=headers)
