"""Keep the minimum: a launch's encrypted tokens, patient context and screening answers are deleted
once the launch has ended (quick exit: once its 15-minute resume window, smart_app/launch/resume.py, has
closed) or expired, unless a chart write still needs its token; a chart
write's stored content is emptied once the EHR has it and its labels were checked (failed writes keep
theirs, for documenting by hand, until tuning.failed_write_retention_days after they failed). Referrals keep their
own minimal summary for social work. Access-audit rows go after tuning.audit_retention_days (smart_app/ops/audit.py),
heartbeats of workers gone for a week are dropped. The README's "Retention" table lists every table.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from flask import Flask, current_app, has_app_context
from flask.cli import with_appcontext
from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session

from config.current import current_settings
from smart_app.launch.revocation import revoke_records
from smart_app.ops.audit import purge_audit
from smart_app.store.db import get_session
from smart_app.store.models import CdsJti, LaunchRecord, OutboxItem, UsedCode, UsedJti, WorkerHeartbeat

# Replay guards only need to outlive the codes and assertions they guard (minutes); a day is generous.
REPLAY_GUARD_TTL = timedelta(days=1)
HEARTBEAT_TTL = timedelta(days=7)


def purge(db: Session, now: datetime | None = None) -> dict[str, int]:
    """Delete ended or expired launches no unfinished chart write needs and old replay guards; empty the
    stored content of writes the EHR has and whose labels were checked."""
    now = now or datetime.now(UTC)
    # Unsent writes use the launch's token. A label read-back never holds the launch (its tokens, context
    # and answers) past the purge: it is bounded, and without the token it ends as "could not check".
    unfinished = OutboxItem.status.in_(("pending", "sending"))
    needed = exists().where(OutboxItem.launch_id == LaunchRecord.id, unfinished)
    # A quick exit's launch keeps its data only while its resume window is open (smart_app/launch/resume.py), never
    # longer: the window is fixed at the exit and ignores the launch's own expiry.
    resumable = LaunchRecord.resumable_until.is_not(None) & (LaunchRecord.resumable_until > now)
    gone = select(LaunchRecord.id).where(
        or_(LaunchRecord.status == "ended", LaunchRecord.expires_at < now), ~resumable, ~needed)
    # Tokens of launches about to go are revoked at the EHR first (needs an app context).
    revoked = 0
    if has_app_context():
        revoked = revoke_records(db.scalars(select(LaunchRecord).where(
            LaunchRecord.id.in_(gone.scalar_subquery()), LaunchRecord.tokens_enc.is_not(None))).all())
        db.flush()
    launches = db.execute(delete(LaunchRecord).where(LaunchRecord.id.in_(gone.scalar_subquery()))
                          .execution_options(synchronize_session=False)).rowcount
    codes = db.execute(delete(UsedCode).where(UsedCode.used_at < now - REPLAY_GUARD_TTL)).rowcount
    jtis = db.execute(delete(UsedJti).where(UsedJti.used_at < now - REPLAY_GUARD_TTL)).rowcount
    jtis += db.execute(delete(CdsJti).where(CdsJti.expires_at < now)).rowcount  # CDS Hooks jtis, once expired
    done = (OutboxItem.status == "written") & OutboxItem.label_status.in_(("ok", "flagged", "unchecked"))
    # An empty blob is "no content" to decrypt_json; it also marks rows already emptied.
    emptied = db.execute(update(OutboxItem).where(done, OutboxItem.resource_enc != b"")
                         .values(resource_enc=b"")).rowcount
    # A write that failed (or needs a person to check the chart) keeps its content for documenting by hand,
    # for tuning.failed_write_retention_days after it failed; the row itself stays (the queue still says "not in the
    # chart") until its referral is purged.
    days = current_settings().failed_write_retention_days
    stale = OutboxItem.status.in_(("failed", "check")) & (OutboxItem.updated_at < now - timedelta(days=days))
    failed = db.execute(update(OutboxItem).where(stale, OutboxItem.resource_enc != b"")
                        .values(resource_enc=b"")).rowcount
    beats = db.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.beat_at < now - HEARTBEAT_TTL)).rowcount
    db.commit()
    audit = purge_audit(db, now=now)
    return {"launches": launches, "tokens_revoked": revoked, "used_codes": codes, "used_jtis": jtis,
            "writes_emptied": emptied, "failed_writes_emptied": failed, "heartbeats": beats, "audit_rows": audit}


@click.command("purge-launches")
@with_appcontext
def purge_launches_command() -> None:
    """Delete ended/expired launches (tokens, patient context, answers) no pending chart write needs."""
    counts = purge(get_session())
    click.echo(" ".join(f"{k}={v}" for k, v in counts.items()))
    current_app.logger.info("retention purge: %s", counts)


def init_app(app: Flask) -> None:
    app.cli.add_command(purge_launches_command)
