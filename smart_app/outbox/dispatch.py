"""One referral's claimed rows, sent in order: its creates (one transaction, or single creates in dependency
order), then the rows that are not creates (closed-loop status updates) through the sender for their operation."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fhir.builders import SEND_ORDER
from smart_app.outbox import outcomes
from smart_app.outbox.context import SendContext
from smart_app.outbox.send_single import send_single
from smart_app.outbox.send_status import send_status
from smart_app.outbox.send_transaction import send_transaction
from smart_app.store.models import OutboxItem

Sender = Callable[[SendContext, OutboxItem], None]

# Senders for outbox rows that are not creates, by ``OutboxItem.operation``.
OPERATIONS: dict[str, Sender] = {"status": send_status}
# Sent after every known type (SEND_ORDER: a resource before those that point at it).
LAST = 99


def by_referral(rows: list[OutboxItem]) -> dict[str, list[OutboxItem]]:
    """Claimed rows grouped by referral, each group and the groups in claim order."""
    groups: dict[str, list[OutboxItem]] = {}
    for row in rows:
        groups.setdefault(row.referral_id, []).append(row)
    return groups


def send_referral(ctx: SendContext, group: list[OutboxItem], stopping: threading.Event) -> None:
    """Send one referral's claimed rows; once ``stopping`` is set no further row is started."""
    updates = [r for r in group if r.operation != "create"]
    creates = sorted((r for r in group if r.operation == "create"), key=lambda r: SEND_ORDER.get(r.kind, LAST))
    if creates and creates[0].mode == "transaction":
        send_transaction(ctx, creates)
    else:
        for row in creates:
            if stopping.is_set():
                break
            send_single(ctx, row)
    for row in updates:
        if stopping.is_set():
            break
        sender = OPERATIONS.get(row.operation)
        if sender is None:
            outcomes.fail(ctx, row, f"no sender for {row.operation} writes")
        else:
            sender(ctx, row)
