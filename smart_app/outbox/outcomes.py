"""Where a row goes after a try that did not write it: later, deferred, kept unreadable, failed, or
"check the chart". Each commits and counts itself in the run's stats."""

from __future__ import annotations

import logging
from datetime import timedelta

from smart_app.outbox.context import SendContext
from smart_app.outbox.state import CHECK, CHECK_TEXT, FAILED, PENDING, utcnow
from smart_app.store.models import OutboxItem

log = logging.getLogger("ipv.outbox")

# A deferred row (a resource it points at is still on its way) is looked at again within this.
DEFER_SECONDS_MAX = 1.0
UNREADABLE_TEXT = "cannot be decrypted with the configured keys: add the previous TOKEN_ENCRYPTION_KEY back"


def retry_later(ctx: SendContext, row: OutboxItem, reason: str, delay: float) -> None:
    now = utcnow()
    row.status, row.claimed_by, row.lease_until = PENDING, None, None
    row.last_error = reason
    row.next_attempt_at = now + timedelta(seconds=delay)
    row.updated_at = now
    ctx.db.commit()
    ctx.stats.retrying += 1


def defer(ctx: SendContext, row: OutboxItem) -> None:
    """A resource it points at is still on its way: wait without spending a try."""
    row.status, row.claimed_by, row.lease_until = PENDING, None, None
    row.attempts = max(0, row.attempts - 1)
    row.next_attempt_at = utcnow() + timedelta(seconds=min(DEFER_SECONDS_MAX, ctx.settings.base_delay))
    ctx.db.commit()
    ctx.stats.deferred += 1


def unreadable(ctx: SendContext, row: OutboxItem) -> None:
    """No configured key decrypts the stored write: never fail or drop it (the content is intact, a key is
    missing); keep it pending without spending a try, and say why, until the key is back."""
    now = utcnow()
    row.status, row.claimed_by, row.lease_until = PENDING, None, None
    row.attempts = max(0, row.attempts - 1)
    row.last_error = UNREADABLE_TEXT
    row.next_attempt_at = now + timedelta(seconds=ctx.settings.max_delay)
    row.updated_at = now
    ctx.db.commit()
    ctx.stats.deferred += 1
    log.error("outbox %s: %s kept pending: no configured key decrypts it", row.id, row.kind)


def fail(ctx: SendContext, row: OutboxItem, reason: str, status: int | None = None) -> None:
    """Not written, and no more tries: kept (content encrypted) and shown as not in the chart."""
    if row.outcome_unknown:
        # An earlier send may have been filed: "not written" could be false. A person checks the chart.
        row.last_status = status or row.last_status
        check(ctx, row, reason)
        return
    now = utcnow()
    row.status, row.claimed_by, row.lease_until = FAILED, None, None
    row.last_error = reason
    row.last_status = status or row.last_status
    row.updated_at = now
    ctx.db.commit()
    ctx.stats.failed += 1
    log.warning("outbox %s: %s failed (%s)", row.id, row.kind, reason)


def check(ctx: SendContext, row: OutboxItem, why: str) -> None:
    """Outcome unknown and not findable: a person checks the chart; the app never sends it again."""
    now = utcnow()
    row.status, row.claimed_by, row.lease_until = CHECK, None, None
    row.last_error = f"{CHECK_TEXT} ({why})"
    row.updated_at = now
    ctx.db.commit()
    ctx.stats.failed += 1
    log.warning("outbox %s: %s outcome unknown; marked check-the-chart", row.id, row.kind)
