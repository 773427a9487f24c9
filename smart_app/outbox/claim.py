"""Claim and lease: which worker may send which rows, and for how long.

Claiming is one UPDATE over a sub-select: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and on SQLite the single
write statement is atomic; each claim stamps a unique token, so a worker only sends the rows its own UPDATE
changed. Two workers never send the same row. A worker that dies leaves rows in ``sending``; once the lease
passes they are claimed again (safe: a re-send is conditional, or searched for first).
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from smart_app.outbox.settings import OutboxSettings
from smart_app.outbox.state import PENDING, SENDING, utcnow
from smart_app.store.models import OutboxItem

log = logging.getLogger("ipv.outbox")


def claim(db: Session, *, worker_id: str, settings: OutboxSettings, limit: int | None = None,
          referral_id: str | None = None) -> str:
    """Claim due rows (and rows whose lease ran out); returns the claim token. Commits."""

    now = utcnow()
    token = f"{worker_id}:{secrets.token_hex(8)}"
    lease_until = now + timedelta(seconds=settings.lease_seconds)
    # Skip referrals another worker is sending right now (live lease): a referral goes out in one piece.
    busy = aliased(OutboxItem)
    in_flight = exists().where(busy.referral_id == OutboxItem.referral_id, busy.status == SENDING,
                               busy.lease_until >= now)
    size = limit or settings.batch_size
    taken = 0
    # Rows whose lease ran out, then due pending rows: two walks, each in the order of an index that stops at the
    # batch (one condition OR'd over both read every due row and sorted them, docs/decisions/0013-a-year-of-data.md).
    for due in (and_(OutboxItem.status == SENDING, OutboxItem.lease_until < now),
                and_(OutboxItem.status == PENDING, OutboxItem.next_attempt_at <= now)):
        sub = select(OutboxItem.id).where(due, ~in_flight)
        if referral_id is not None:
            sub = sub.where(OutboxItem.referral_id == referral_id)
        sub = sub.order_by(OutboxItem.next_attempt_at, OutboxItem.id).limit(size - taken)
        # One statement: the re-check of ``due`` makes a row claimable by exactly one UPDATE.
        taken += _take(db, sub, due, token=token, now=now, lease_until=lease_until)
        if taken >= size:
            break
    # Same transaction (on SQLite: the same write lock), so no other claim lands in between.
    # Take the referral's other pending rows too (due, or never tried yet): a referral goes out
    # together — one transaction, or single creates in dependency order — instead of being split
    # between workers and waiting on each other. Rows in backoff keep their wait. SKIP LOCKED
    # again, so this never waits on another worker.
    # The rows just stamped are in flight: the partial index of in-flight rows (ix_outbox_in_flight) finds them.
    referrals = (select(OutboxItem.referral_id).where(OutboxItem.claimed_by == token, OutboxItem.status == SENDING)
                 .distinct().scalar_subquery())
    sibling = and_(OutboxItem.status == PENDING, or_(OutboxItem.attempts == 0, OutboxItem.next_attempt_at <= now))
    siblings = select(OutboxItem.id).where(OutboxItem.referral_id.in_(referrals), sibling)
    _take(db, siblings, sibling, token=token, now=now, lease_until=lease_until)
    db.commit()
    return token


def _take(db: Session, ids: Select[tuple[int]], still: ColumnElement[bool], *, token: str, now: datetime,
          lease_until: datetime) -> int:
    """Stamp ``token`` on the rows ``ids`` selects that ``still`` holds for when the UPDATE runs; a try counted.
    Returns how many."""
    if db.get_bind().dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    return db.execute(
        update(OutboxItem).where(OutboxItem.id.in_(ids.scalar_subquery()), still)
        .values(status=SENDING, claimed_by=token, lease_until=lease_until, attempts=OutboxItem.attempts + 1,
                updated_at=now)
        .execution_options(synchronize_session=False)).rowcount or 0


def release(db: Session, token: str) -> int:
    """Give back rows of this claim that were not sent (shutdown): pending again, the try not counted.
    A row whose send had started keeps ``outcome_unknown``, so whoever takes it searches first. Commits."""
    count = db.execute(
        update(OutboxItem).where(OutboxItem.claimed_by == token, OutboxItem.status == SENDING)
        .values(status=PENDING, claimed_by=None, lease_until=None, attempts=OutboxItem.attempts - 1,
                next_attempt_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    db.commit()
    return count


def send_lease_seconds(settings: OutboxSettings, http_timeout: float) -> float:
    """The lease renewed before each send: at least two HTTP timeouts, so a send in flight ends before anyone
    else may look for it."""
    return max(settings.lease_seconds, 2 * http_timeout + 1)


def still_mine(db: Session, row: OutboxItem, *, lease_seconds: float) -> bool:
    """Fence: renew this row's lease only if our claim still holds it (a batch can outlive the lease of
    its last rows; another worker may have reclaimed them). Commits."""
    until = utcnow() + timedelta(seconds=lease_seconds)
    token = row.claimed_by
    if not token:
        return False
    taken = db.execute(
        update(OutboxItem).where(OutboxItem.id == row.id, OutboxItem.claimed_by == token,
                                 OutboxItem.status == SENDING)
        .values(lease_until=until).execution_options(synchronize_session=False)).rowcount
    db.commit()
    if taken != 1:
        log.info("outbox %s: claim lost to another worker; not sending", row.id)
        return False
    return True
