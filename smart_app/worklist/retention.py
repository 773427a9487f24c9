"""Retention for social work: closed referrals (completed, cancelled, declined) are deleted with their
contact log, status history, site keys and chart-write rows ``tuning.worklist_closed_retention_days`` after they
closed (365 by default); screen marks (smart_app/launch/visit_memory.py) after the memory window; follow-ups of
positive self-screens (smart_app/followup/items.py) the same days after their final response, and the rows of the
neutral check-in line (smart_app/writeback/checkin.py, no referral behind them) the same days after they were
written or given up. Open referrals and open follow-ups are kept until they close. Runs with the launch purge
(smart_app/launch/retention.py: worker every 10 minutes, ``flask purge-launches``) and on its own as
``flask purge-referrals``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session

from config.current import current_settings
from smart_app.launch.visit_memory import memory_days
from smart_app.store.db import get_session
from smart_app.store.models import (
    ContactAttempt,
    FollowupItem,
    OutboxItem,
    PatientMark,
    ReferralEvent,
    ReferralProgram,
    ReferralRecord,
    ReferralSite,
)
from smart_app.store.task_status import CLOSED, LEGACY

_CLOSED_CODES = tuple(CLOSED) + tuple(k for k, v in LEGACY.items() if v in CLOSED)


def retention_days() -> int:
    return current_settings().worklist_closed_retention_days


def purge_referrals(db: Session, now: datetime | None = None) -> dict[str, int]:
    """Delete closed referrals past the retention period, and old screen marks. Commits."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=retention_days())
    closed_at = or_(ReferralRecord.closed_at < cutoff,
                    ReferralRecord.closed_at.is_(None) & (ReferralRecord.status_at < cutoff))
    ids = list(db.scalars(select(ReferralRecord.id).where(ReferralRecord.status.in_(_CLOSED_CODES), closed_at)))
    counts = {"referrals": 0, "contacts": 0, "events": 0, "writes": 0, "marks": 0, "followups": 0, "lines": 0}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        counts["contacts"] += db.execute(delete(ContactAttempt).where(ContactAttempt.referral_id.in_(chunk))).rowcount
        counts["events"] += db.execute(delete(ReferralEvent).where(ReferralEvent.referral_id.in_(chunk))).rowcount
        # A write still on its way keeps its referral until it is done (never lose a chart write).
        busy = set(db.scalars(select(OutboxItem.referral_id).where(OutboxItem.referral_id.in_(chunk),
                                                                   OutboxItem.status.in_(("pending", "sending")))))
        done = [r for r in chunk if r not in busy]
        counts["writes"] += db.execute(delete(OutboxItem).where(OutboxItem.referral_id.in_(done))).rowcount
        db.execute(delete(ReferralSite).where(ReferralSite.referral_id.in_(done)))
        db.execute(delete(ReferralProgram).where(ReferralProgram.referral_id.in_(done)))
        counts["referrals"] += db.execute(delete(ReferralRecord).where(ReferralRecord.id.in_(done))).rowcount
    # A check-in line's row once written or given up (never one still on its way).
    counts["lines"] = db.execute(delete(OutboxItem).where(
        OutboxItem.status.not_in(("pending", "sending")), OutboxItem.updated_at < cutoff,
        ~exists().where(ReferralRecord.id == OutboxItem.referral_id)).execution_options(
        synchronize_session=False)).rowcount
    counts["marks"] = db.execute(delete(PatientMark).where(
        PatientMark.at < now - timedelta(days=memory_days()))).rowcount
    # Counted in the report already (report_event); the item itself is kept only while someone may need it.
    counts["followups"] = db.execute(delete(FollowupItem).where(
        FollowupItem.status == "recorded", FollowupItem.responded_at < cutoff)).rowcount
    db.commit()
    return counts


@click.command("purge-referrals")
@with_appcontext
def purge_referrals_command() -> None:
    """Delete closed referrals (and their logs) and recorded follow-ups past tuning.worklist_closed_retention_days, and
    old screen marks."""
    counts = purge_referrals(get_session())
    click.echo(" ".join(f"{k}={v}" for k, v in counts.items()))


def init_app(app: Flask) -> None:
    app.cli.add_command(purge_referrals_command)
