"""The outbox worker: claims due rows and sends them, batch after batch, beating a heartbeat and running the
features' housekeeping on its rounds. Any number may run, in threads or processes (``flask outbox-worker``)."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from config.current import settings_of
from config.ehr_profile import EhrProfile
from smart_app.ops import housekeeping
from smart_app.ops.audit import instance_name
from smart_app.ops.observability import record_outbox_run, set_request_id
from smart_app.ops.profiles import profile_for
from smart_app.outbox.capabilities import ConditionalCreateSupport
from smart_app.outbox.claim import claim as claim_due
from smart_app.outbox.claim import release, send_lease_seconds
from smart_app.outbox.clients import ClientFor, launch_client_provider
from smart_app.outbox.context import SendContext
from smart_app.outbox.dispatch import by_referral, send_referral
from smart_app.outbox.settings import OutboxSettings
from smart_app.outbox.state import PENDING, SENDING, RunStats, utcnow
from smart_app.outbox.verify import verify_pending
from smart_app.store.db import get_session
from smart_app.store.directory import load_imports
from smart_app.store.models import OutboxItem, WorkerHeartbeat

log = logging.getLogger("ipv.outbox")

class OutboxWorker:
    """Claims due rows and sends them. One instance per process/thread; any number may run."""

    def __init__(self, app: Flask, *, client_for: ClientFor | None = None, worker_id: str | None = None,
                 settings: OutboxSettings | None = None, timeout: float | None = None):
        self.app = app
        self.worker_id = worker_id or secrets.token_hex(6)
        self._client_for = client_for
        self.timeout = timeout
        self.settings = settings or OutboxSettings.for_app(app)
        self._profiles: dict[str, EhrProfile] = {}
        self._conditional = ConditionalCreateSupport()
        self._last_beat: float | None = None
        # Set by SIGTERM (or the demo's stop): the current send finishes, the rest of the claim is released.
        self.stopping = threading.Event()

    def claim(self, db: Session, *, limit: int | None = None, referral_id: str | None = None) -> str:
        """Claim due rows (and rows whose lease ran out) for this worker; returns the claim token. Commits."""
        return claim_due(db, worker_id=self.worker_id, settings=self.settings, limit=limit, referral_id=referral_id)

    def run_once(self, *, referral_id: str | None = None, limit: int | None = None) -> RunStats:
        """Claim one batch and process it. Needs no request; pushes an app context."""

        stats = RunStats()
        with self.app.app_context():
            db = get_session()
            token = self.claim(db, limit=limit, referral_id=referral_id)
            rows = list(db.scalars(select(OutboxItem).where(OutboxItem.claimed_by == token,
                                                            OutboxItem.status == SENDING)))
            stats.claimed = len(rows)
            if rows:
                ctx = self._context(db, stats)
                for group in by_referral(rows).values():
                    if self.stopping.is_set():
                        break
                    send_referral(ctx, group, self.stopping)
                if self.stopping.is_set():
                    self.release(db, token)
                    return stats
            # Read-backs that failed earlier, with clients of their own (a read needs no claim).
            verify_pending(self._context(db, stats), referral_id=referral_id)
        return stats

    def drain(self, *, referral_id: str | None = None, max_seconds: float = 60.0, idle_sleep: float = 0.02) -> RunStats:
        """Run until nothing is pending/sending (or time is up): tests, CLI ``outbox-run-once --drain``."""
        total = RunStats()
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            stats = self.run_once(referral_id=referral_id)
            total.add(stats)
            if stats.claimed == 0:
                if not self.outstanding(referral_id=referral_id):
                    break
                time.sleep(idle_sleep)
        return total

    def outstanding(self, *, referral_id: str | None = None) -> int:
        """Rows still to send, or whose labels are still to be checked."""
        with self.app.app_context():
            q = select(func.count()).select_from(OutboxItem).where(
                or_(OutboxItem.status.in_((PENDING, SENDING)), OutboxItem.label_status == "unverified"))
            if referral_id is not None:
                q = q.where(OutboxItem.referral_id == referral_id)
            return int(get_session().scalar(q) or 0)

    def loop(self, *, idle_sleep: float = 1.0, stop: Callable[[], bool] = lambda: False,
             purge_every: float = 600.0) -> None:
        """The long-running worker (``flask outbox-worker``). Every ``purge_every`` seconds it also runs the
        housekeeping the features registered (``smart_app.ops.housekeeping``: retention purges), since it is
        the process every deployment runs."""
        next_purge = next_directory = time.monotonic()
        directory_every = settings_of(self.app).directory_check_seconds
        while not stop() and not self.stopping.is_set():
            try:
                self.beat()
                if time.monotonic() >= next_purge:
                    self.purge_launches()
                    next_purge = time.monotonic() + purge_every
                if directory_every > 0 and time.monotonic() >= next_directory:
                    # The housekeeping routes stored referrals by the directory's sites: the newest import, as
                    # the web instances serve it (smart_app/store/directory.py).
                    load_imports(self.app)
                    next_directory = time.monotonic() + directory_every
                set_request_id(f"outbox-{secrets.token_hex(8)}")  # X-Request-ID of this batch's EHR calls
                stats = self.run_once()
                record_outbox_run(stats)
            except Exception:  # keep the worker alive; the rows stay durable
                log.exception("outbox: run failed")
                stats = RunStats()
            if stats.claimed == 0:
                self.stopping.wait(idle_sleep)
        log.info("outbox worker %s stopped", self.worker_id)

    def release(self, db: Session, token: str) -> int:
        """Give back the rows of this claim that were not sent (shutdown)."""
        count = release(db, token)
        if count:
            log.info("outbox worker %s released %s unsent rows", self.worker_id, count)
        return count

    def beat(self, *, every: float = 10.0) -> None:
        """Stamp this worker's heartbeat row (at most every ``every`` seconds); /readyz reports its age."""
        now = time.monotonic()
        if self._last_beat is not None and now - self._last_beat < every:
            return
        self._last_beat = now
        with self.app.app_context():
            db = get_session()
            row = db.get(WorkerHeartbeat, self.worker_id)
            if row is None:
                db.add(WorkerHeartbeat(worker_id=self.worker_id, instance=instance_name(self.app),
                                       started_at=utcnow(), beat_at=utcnow()))
            else:
                row.beat_at = utcnow()
            db.commit()

    def purge_launches(self) -> dict[str, int]:
        """Run the registered housekeeping once; the counts of what it removed."""
        with self.app.app_context():
            counts = housekeeping.run(self.app, get_session())
        if any(counts.values()):
            log.info("retention purge: %s", counts)
        return counts

    def profile(self, ref: str) -> EhrProfile:
        """The row's profile by name or absolute path (as stored), with the site's settings."""
        if ref not in self._profiles:
            self._profiles[ref] = profile_for(self.app, ref)
        return self._profiles[ref]

    def honours_conditional_create(self, profile: EhrProfile, client: Any, kind: str) -> bool:
        """May a create of ``kind`` through ``client`` rely on If-None-Exist? (``smart_app.outbox.capabilities``)"""
        return self._conditional.honours(profile, client, kind)

    def _context(self, db: Session, stats: RunStats) -> SendContext:
        """What this batch's senders share. A fresh client provider each time: its clients (and their tokens)
        live as long as the batch."""
        timeout = float(self.timeout or settings_of(self.app).http_timeout_seconds)
        return SendContext(
            app=self.app, db=db, settings=self.settings, stats=stats,
            client_for=self._client_for or launch_client_provider(self.timeout), profile=self.profile,
            # Looked up on the instance each batch, so a test may stand in for it.
            honours_conditional_create=self.honours_conditional_create,
            lease_seconds=send_lease_seconds(self.settings, timeout))
