"""A claimed row's stored write made ready to send: decrypted, its links resolved. Where it cannot go now the row
gets its outcome here (kept pending for a missing key, deferred, or failed) and there is nothing to send."""

from __future__ import annotations

from typing import Any

from smart_app.outbox import outcomes
from smart_app.outbox.context import SendContext
from smart_app.outbox.references import resolve
from smart_app.store.crypto import Undecryptable, decrypt_json
from smart_app.store.models import OutboxItem


def ready_to_send(ctx: SendContext, row: OutboxItem, in_bundle: set[str]) -> dict[str, Any] | None:
    """The resource to send, or None when the row already has its outcome (``in_bundle``: the fullUrls sent
    in the same transaction, which the server resolves itself)."""
    try:
        resource = decrypt_json(row.resource_enc, where="outbox write")
    except Undecryptable:
        outcomes.unreadable(ctx, row)
        return None
    if resource is None:
        outcomes.fail(ctx, row, "the stored write has no content")
        return None
    readiness = resolve(ctx.db, row, resource, in_bundle, link_wait_seconds=ctx.settings.link_wait_seconds)
    if readiness.state == "defer":
        outcomes.defer(ctx, row)
        return None
    if readiness.state == "fail":
        outcomes.fail(ctx, row, f"needs the {readiness.missing}, which was not written")
        return None
    return resource
