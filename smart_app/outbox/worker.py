"""Durable outbox for chart writes: stored before sent, sent at most once per claim, retried safely.

Life of a row (``smart_app.store.models.OutboxItem``). This is the app's persistence and scheduling of
chart writes; the FHIR wire work it calls (builders, client, labels) lives in ``fhir/``::

    pending --claim--> sending --2xx--> written (server id, label check)
                          |--timeout/5xx/429--> pending (backoff + jitter, Retry-After honoured)
                          |--refused (4xx) or tries used up--> pending once more ("final retry")
                          |--final retry fails--> failed (kept, reason shown to clinician + social work)

- Claiming is one UPDATE over a sub-select: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and on SQLite
  the single write statement is atomic; each claim stamps a unique token, so a worker only sends the
  rows its own UPDATE changed. Two workers never send the same row.
- A worker that dies leaves rows in ``sending``; once the lease passes they are claimed again.
  That is safe because every create is conditional on the business identifier (If-None-Exist):
  a resent write finds the resource the lost request created instead of duplicating it.
- After each write the resource is read back and its ``meta.security`` compared (fhir/labels.py).
- Resource JSON is encrypted at rest (smart_app.store.crypto); ``last_error`` and ``label_detail`` hold
  only HTTP status, reason class and label codes, and log lines name resource type + row id only.

Reading of the guide's "a note that the EHR refused or could not take is kept durably and retried
exactly once; the clinician is told plainly": transient failures (timeouts, 5xx, 429) are transport
noise and get the usual bounded backoff. When the EHR *refuses* a write (a 4xx) or still cannot take
it after the last transient try, the row is not dropped: it stays in the outbox and gets exactly one
more try after ``final_retry_delay``. If that try fails too the row ends ``failed`` (content kept,
encrypted) and the clinician's confirmation page and the social-work queue say plainly that the
note is not in the chart.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from fhir.builders import SEND_ORDER, EhrProfile, reference_code
from fhir.client import FhirClient, FhirError, FhirUnavailable
from fhir.labels import verify_labels
from smart_app.launch.state import Launch
from smart_app.ops import housekeeping
from smart_app.ops.audit import instance_name, record_audit
from smart_app.ops.observability import record_outbox_run, set_request_id
from smart_app.ops.profiles import profile_for
from smart_app.outbox import retry
from smart_app.outbox.claim import claim as claim_due
from smart_app.outbox.claim import release, send_lease_seconds, still_mine
from smart_app.outbox.clients import AuthGone, ClientFor, launch_client_provider
from smart_app.outbox.settings import OutboxSettings
from smart_app.outbox.state import CHECK, CHECK_TEXT, FAILED, PENDING, SENDING, WRITTEN, RunStats, aware, utcnow
from smart_app.store.crypto import Undecryptable, decrypt_json
from smart_app.store.db import get_session
from smart_app.store.models import LaunchRecord, OutboxItem, WorkerHeartbeat

log = logging.getLogger("ipv.outbox")

# Senders for outbox rows that are not creates: operation -> f(worker, db, row, client_for, stats).
# smart_app/outbox/closed_loop.py registers "status".
OPERATIONS: dict[str, Callable[..., None]] = {}


# -- the worker ---------------------------------------------------------------------------------------------
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
        self._capabilities: dict[str, dict[str, bool]] = {}
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
                client_for = self._client_for or launch_client_provider(self.timeout)
                by_referral: dict[str, list[Any]] = {}
                for row in rows:
                    by_referral.setdefault(row.referral_id, []).append(row)
                for rid, group in by_referral.items():
                    if self.stopping.is_set():
                        break
                    # Rows that are not creates (closed-loop status updates, smart_app/outbox/closed_loop.py) go
                    # after the referral's creates, through the sender registered for their operation.
                    updates = [r for r in group if r.operation != "create"]
                    group = [r for r in group if r.operation == "create"]
                    group.sort(key=lambda r: SEND_ORDER.get(r.kind, 99))
                    if group and group[0].mode == "transaction":
                        self._send_transaction(db, rid, group, client_for, stats)
                    else:
                        for row in group:
                            if self.stopping.is_set():
                                break
                            self._send_single(db, row, client_for, stats)
                    for row in updates:
                        if self.stopping.is_set():
                            break
                        sender = OPERATIONS.get(row.operation)
                        if sender is None:
                            self._fail(db, row, f"no sender for {row.operation} writes", None, stats)
                        else:
                            sender(self, db, row, client_for, stats)
                if self.stopping.is_set():
                    self.release(db, token)
                    return stats
            self.verify_pending_labels(db, client_for=self._client_for, stats=stats, referral_id=referral_id)
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


        with self.app.app_context():
            q = select(func.count()).select_from(OutboxItem).where(
                or_(OutboxItem.status.in_((PENDING, SENDING)), OutboxItem.label_status == "unverified"))
            if referral_id is not None:
                q = q.where(OutboxItem.referral_id == referral_id)
            return int(get_session().scalar(q) or 0)

    def loop(self, *, idle_sleep: float = 1.0, stop: Callable[[], bool] = lambda: False,
             purge_every: float = 600.0) -> None:
        """The long-running worker (``flask outbox-worker``). It also deletes ended or expired launches
        every ``purge_every`` seconds (smart_app.launch.retention), since it is the process every deployment runs."""
        next_purge = time.monotonic()
        while not stop() and not self.stopping.is_set():
            try:
                self.beat()
                if time.monotonic() >= next_purge:
                    self.purge_launches()
                    next_purge = time.monotonic() + purge_every
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
        if now - getattr(self, "_last_beat", -every) < every:
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

        with self.app.app_context():
            counts = housekeeping.run(self.app, get_session())
        if any(counts.values()):
            log.info("retention purge: %s", counts)
        return counts

    # sending -------------------------------------------------------------------------------------------
    def profile(self, ref: str) -> EhrProfile:
        """The row's profile by name or absolute path (as stored), with the site's settings."""
        if ref not in self._profiles:
            self._profiles[ref] = profile_for(self.app, ref)
        return self._profiles[ref]

    def _siblings(self, db: Session, referral_id: str) -> dict[str, Any]:

        return {r.full_url: r for r in db.scalars(select(OutboxItem).where(OutboxItem.referral_id == referral_id))}

    def _resolve(self, db: Session, row: Any, resource: dict[str, Any], in_bundle: set[str]) -> str | None:
        """Swap urn:uuid references for server ids. Returns 'defer', 'fail:<kind>' or None (ready)."""
        deps = json.loads(row.depends_on or "{}")
        if not deps:
            return None
        siblings = self._siblings(db, row.referral_id)
        for urn, (kind, required) in deps.items():
            if urn in in_bundle:
                continue  # same transaction: the server resolves the fullUrl
            target = siblings.get(urn)
            if target is not None and target.status == WRITTEN and target.server_id:
                _replace_reference(resource, urn, f"{kind}/{target.server_id}")
            elif target is None or target.status == FAILED:
                if required:
                    return f"fail:{kind}"
                _drop_reference(resource, urn)
            elif required or utcnow() - aware(row.created_at) < timedelta(seconds=self.settings.link_wait_seconds):
                return "defer"
            else:
                _drop_reference(resource, urn)  # waited long enough: the note matters more than the link
        return None

    def _send_single(self, db: Session, row: Any, client_for: ClientFor, stats: RunStats) -> None:
        try:
            resource = decrypt_json(row.resource_enc, where="outbox write")
        except Undecryptable:
            self._unreadable(db, row, stats)
            return
        if resource is None:
            self._fail(db, row, "the stored write has no content", None, stats)
            return
        state = self._resolve(db, row, resource, set())
        if state == "defer":
            self._defer(db, row, stats)
            return
        if state and state.startswith("fail:"):
            self._fail(db, row, f"needs the {state[5:]}, which was not written", None, stats)
            return
        try:
            client = client_for(row)
        except AuthGone as exc:
            self._fail(db, row, str(exc) + ("" if row.outcome_unknown else "; nothing was written"), None, stats)
            return
        profile = self.profile(row.profile)
        honours = self.honours_conditional_create(profile, client, row.kind)
        if not self._still_mine(db, row):
            return  # our lease ran out while earlier rows of the batch were sent: another worker has it now
        if row.outcome_unknown and not honours:
            # An earlier send may have reached the EHR: never re-send blindly. Look for it first.
            if not self._settle_unknown(db, row, resource, client, profile, stats):
                return
            if not self._still_mine(db, row):
                return  # the search took time: the lease is renewed (or lost) before sending
        search = f"identifier={row.identifier_system}|{row.identifier_value}"
        # From here on the EHR may have it (timeout, reset, this worker killed) — also when this send is a
        # conditional create: the next attempt may be made by a worker that cannot trust If-None-Exist (its
        # CapabilityStatement read failed), and it must search first rather than send a plain create. Marked
        # only once the lease is confirmed just above, so a row another worker holds is never written to.
        row.outcome_unknown = True
        db.commit()
        stats.sends += 1
        try:
            resp = client.create(resource, if_none_exist=search if honours else None)
        except FhirError as exc:
            if not retry.maybe_applied(exc):
                row.outcome_unknown = False  # refused before it was filed: a plain retry is safe
            self._error(db, row, exc, stats)
            return
        server_id, version = _ids(resp.resource, resp.location)
        if not server_id:
            # 2xx without an id: find it (also confirms the write).
            found, verdict = self._look_for(row, resource, client, profile)
            if verdict == "found":
                server_id, version = found.get("id"), (found.get("meta") or {}).get("versionId")
        self._written(db, row, server_id, version, resource, client, stats, returned=resp.resource)

    def _still_mine(self, db: Session, row: Any) -> bool:
        timeout = float(self.timeout or self.app.config.get("HTTP_TIMEOUT_SECONDS", 10) or 10)
        return still_mine(db, row, lease_seconds=send_lease_seconds(self.settings, timeout))

    # exactly once without conditional create -------------------------------------------------------------
    def honours_conditional_create(self, profile: EhrProfile, client: Any, kind: str) -> bool:
        """The profile's word; where it says unknown, the CapabilityStatement's ``conditionalCreate``
        (FHIR R4 CapabilityStatement.rest.resource.conditionalCreate). Anything unclear counts as no."""
        if profile.conditional_create != "unknown":
            return profile.conditional_create == "true"
        base = getattr(client, "base_url", None)
        if base is None or not hasattr(client, "capabilities"):
            return False
        if base not in self._capabilities:
            found: dict[str, bool] = {}
            try:
                statement = client.capabilities()
            except FhirError:
                return False  # not known this time (not remembered: the next attempt reads it again)
            for rest in statement.get("rest") or []:
                for res in rest.get("resource") or []:
                    found[res.get("type")] = res.get("conditionalCreate") is True
            self._capabilities[base] = found
        return self._capabilities[base].get(kind, False)

    def _settle_unknown(self, db: Session, row: Any, resource: dict[str, Any], client: Any,
                        profile: EhrProfile, stats: RunStats) -> bool:
        """Resolve an unknown outcome by searching. True = proved absent (send it); False = handled here
        (found -> written; search failed for now -> retry later; cannot tell -> "check the chart")."""
        found, verdict = self._look_for(row, resource, client, profile)
        if verdict == "found":
            log.info("outbox %s: %s found at the EHR after an unknown outcome; not sent again", row.id, row.kind)
            server_id, version = found.get("id"), (found.get("meta") or {}).get("versionId")
            self._written(db, row, server_id, version, resource, client, stats, returned=None)
            return False
        if verdict == "absent":
            row.outcome_unknown = False
            return True
        if verdict.startswith("retry:") and row.attempts < row.max_attempts:
            self._retry_later(db, row, "looking for an earlier send failed (" + verdict[6:] + "); will look again",
                              retry.backoff(self.settings, row.attempts), stats)
            return False
        self._check(db, row, verdict.split(":", 1)[-1], stats)
        return False

    def _look_for(self, row: Any, resource: dict[str, Any], client: Any,
                  profile: EhrProfile) -> tuple[dict[str, Any], str]:
        """Search the EHR for this write: ('found', resource) / 'absent' (proved) / 'retry:<why>' /
        'undecidable:<why>'. By business identifier where the EHR keeps and searches it (and every hit is
        checked to carry it: an EHR may ignore the parameter); otherwise a note is found by patient + type
        + date + the reference code its text carries."""
        try:
            if profile.search_by_identifier:
                ident = f"{row.identifier_system}|{row.identifier_value}"
                for hit in client.search(row.kind, {"identifier": ident}):
                    if _has_identifier(hit, row.identifier_system, row.identifier_value):
                        return hit, "found"
                return {}, "absent"
            if row.kind != "DocumentReference":
                return {}, "undecidable:this EHR cannot be searched for it"
            code = reference_code(row.referral_id)
            # Filed at consent time (DocumentReference.date / context.period.end) or, where the EHR sets the
            # date itself, when it filed it: never before the row was stored.
            since = (aware(row.created_at) - timedelta(minutes=10)).isoformat(timespec="seconds")
            params = {"patient": (resource.get("subject") or {}).get("reference", "").split("/")[-1],
                      "type": _token(resource.get("type")), profile.search_date_param: f"ge{since}",
                      "_count": "100"}
            params = {k: v for k, v in params.items() if v}
            if hasattr(client, "search_pages"):
                hits, complete = client.search_pages("DocumentReference", params)
            else:
                hits, complete = client.search("DocumentReference", params), True
            unreadable = 0
            for hit in hits:
                text = _note_text(hit, client)
                if text is None:
                    unreadable += 1
                elif f"Ref. {code}" in text:
                    return hit, "found"
            if unreadable:
                return {}, "undecidable:a note in the chart could not be read to compare"
            if not complete:
                return {}, "undecidable:too many notes to compare"
            return {}, "absent"
        except FhirError as exc:
            if exc.retryable or isinstance(exc, FhirUnavailable):
                return {}, "retry:" + retry.reason(exc)
            return {}, "undecidable:the EHR did not allow the search (" + retry.reason(exc) + ")"

    def _check(self, db: Session, row: Any, why: str, stats: RunStats) -> None:
        """Outcome unknown and not findable: a person checks the chart; the app never sends it again."""
        now = utcnow()
        row.status, row.claimed_by, row.lease_until = CHECK, None, None
        row.last_error = f"{CHECK_TEXT} ({why})"
        row.updated_at = now
        db.commit()
        stats.failed += 1
        log.warning("outbox %s: %s outcome unknown; marked check-the-chart", row.id, row.kind)

    def _send_transaction(self, db: Session, rid: str, group: list[Any], client_for: ClientFor,
                          stats: RunStats) -> None:

        # A transaction is only safe to replay where the EHR honours ifNoneExist; otherwise single creates,
        # each with the search-before-re-send rule.
        try:
            probe = client_for(group[0])
        except AuthGone:
            probe = None
        if probe is not None:
            profile = self.profile(group[0].profile)
            if not all(self.honours_conditional_create(profile, probe, r.kind) for r in group):
                for row in group:
                    self._send_single(db, row, client_for, stats)
                return
        entries, rows, resources = [], [], []
        in_bundle = {r.full_url for r in group}
        for row in group:
            try:
                resource = decrypt_json(row.resource_enc, where="outbox write")
            except Undecryptable:
                self._unreadable(db, row, stats)
                in_bundle.discard(row.full_url)
                continue
            if resource is None:
                self._fail(db, row, "the stored write has no content", None, stats)
                in_bundle.discard(row.full_url)
                continue
            state = self._resolve(db, row, resource, in_bundle)
            if state == "defer":
                self._defer(db, row, stats)
                in_bundle.discard(row.full_url)
                continue
            if state and state.startswith("fail:"):
                self._fail(db, row, f"needs the {state[5:]}, which was not written", None, stats)
                in_bundle.discard(row.full_url)
                continue
            rows.append(row)
            resources.append(resource)
        if not rows:
            return
        # A reference to a row that left the bundle (deferred/failed) must not dangle.
        for resource in resources:
            for urn in {r.full_url for r in group} - in_bundle:
                _drop_reference(resource, urn)
        for row, resource in zip(rows, resources, strict=True):
            entries.append({"fullUrl": row.full_url, "resource": resource,
                            "request": {"method": "POST", "url": row.kind,
                                        "ifNoneExist": f"identifier={row.identifier_system}|{row.identifier_value}"}})
        try:
            client = client_for(rows[0])
        except AuthGone as exc:
            for row in rows:
                self._fail(db, row, str(exc) + "; nothing was written", None, stats)
            return
        if not all(self._still_mine(db, row) for row in rows):
            return
        # As for a single create: once sent, each entry may be filed, whoever makes the next attempt.
        for row in rows:
            row.outcome_unknown = True
        db.commit()
        stats.sends += 1
        try:
            result = client.bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        except FhirError as exc:
            refused = not retry.maybe_applied(exc)  # refused as a whole before anything was filed
            for row in rows:
                if refused:
                    row.outcome_unknown = False
                self._error(db, row, exc, stats)
            return
        out = result.get("entry") or []
        for i, (row, resource) in enumerate(zip(rows, resources, strict=True)):
            entry = out[i] if i < len(out) else {}
            response = entry.get("response") or {}
            server_id, version = _ids(entry.get("resource"), response.get("location"))
            if not server_id:
                self._error(db, row, FhirError(502, "transaction response without a location"), stats)
                continue
            # The entry's stored resource (Prefer: return=representation) spares a read-back, as for a create.
            self._written(db, row, server_id, version, resource, client, stats, returned=entry.get("resource"))

    # outcomes ------------------------------------------------------------------------------------------
    def _written(self, db: Session, row: Any, server_id: str | None, version: str | None,
                 resource: dict[str, Any], client: FhirClient, stats: RunStats,
                 returned: dict[str, Any] | None = None) -> None:
        now = utcnow()
        row.status, row.server_id, row.server_version = WRITTEN, server_id, version
        row.written_at = row.updated_at = now
        row.claimed_by = row.lease_until = None
        row.last_error = None
        row.outcome_unknown = False
        profile = self.profile(row.profile)
        expected = (resource.get("meta") or {}).get("security") or []
        if profile.labels_kept == "dropped":
            # Known to be dropped: nothing to read back; the note's protection is its restricted type.
            row.label_status = "note_type" if row.kind == "DocumentReference" else "unchecked"
            row.label_detail = "this EHR does not keep security labels"
        elif returned and returned.get("resourceType") == row.kind and "meta" in returned:
            # Prefer: return=representation honoured: the stored resource is in hand, no read-back.
            self._judge_labels(row, expected, returned, stats)
        elif profile.read_back and server_id:
            self._check_labels(row, resource, client, stats)
        else:
            row.label_status = None
        self._audit_written(db, row)
        db.commit()
        stats.written += 1
        stats.ids.append(row.id)
        log.info("outbox %s: %s written", row.id, row.kind)

    def _audit_written(self, db: Session, row: Any) -> None:
        """Access audit: which user's launch caused this chart write (committed with the write's state)."""
        record = db.get(LaunchRecord, row.launch_id) if row.launch_id else None
        launch = Launch(record) if record is not None else None
        resources = [f"{row.kind}/{row.server_id}"] if row.server_id else None
        record_audit("write_resource", launch=launch, iss=row.iss, object_id=row.referral_id, detail=row.kind,
                     resources=resources, db=db, app=self.app)

    def _check_labels(self, row: Any, sent: dict[str, Any], client: FhirClient, stats: RunStats) -> None:
        """Bounded read-back: 401/403/404 = could not check (no retry); other failures retried a few times
        with backoff (the profile's read_back.max_attempts), then "could not check"."""
        expected = (sent.get("meta") or {}).get("security") or []
        row.label_attempts = (row.label_attempts or 0) + 1
        try:
            stored = client.read(row.kind, row.server_id)
        except FhirError as exc:
            limit = self.profile(row.profile).read_back_attempts
            if exc.status in (401, 403, 404) or row.label_attempts >= limit:
                row.label_status = "unchecked"
                row.label_detail = "labels could not be checked: " + retry.reason(exc)
            else:
                row.label_status = "unverified"
                row.label_detail = "read-back failed: " + retry.reason(exc)
                row.next_attempt_at = utcnow() + timedelta(seconds=retry.backoff(self.settings, row.label_attempts))
            return
        self._judge_labels(row, expected, stored, stats)

    def _judge_labels(self, row: Any, expected: list[dict[str, Any]], stored: dict[str, Any],
                      stats: RunStats) -> None:
        check = verify_labels(expected, stored)
        row.label_status = "ok" if check.ok else "flagged"
        row.label_detail = check.summary()
        if not check.ok:
            stats.label_flags += 1
            # Resource type + outbox id + label codes only: no PHI in logs.
            log.warning("outbox %s: EHR did not keep the security labels of the %s (%s)",
                        row.id, row.kind, check.summary())

    def verify_pending_labels(self, db: Session, *, client_for: ClientFor | None, stats: RunStats,
                              referral_id: str | None = None, limit: int = 25) -> None:
        """Retry read-backs that failed earlier (a read is idempotent: no claim needed)."""
        q = select(OutboxItem).where(OutboxItem.status == WRITTEN, OutboxItem.label_status == "unverified",
                                     OutboxItem.next_attempt_at <= utcnow())
        if referral_id is not None:
            q = q.where(OutboxItem.referral_id == referral_id)
        rows = list(db.scalars(q.limit(limit)))
        if not rows:
            return
        provider = client_for or launch_client_provider(self.timeout)
        for row in rows:
            try:
                client = provider(row)
            except AuthGone:
                row.label_status, row.label_detail = "unchecked", "labels could not be checked: sign-in ended"
                db.commit()
                continue
            try:
                sent = decrypt_json(row.resource_enc, where="outbox write") or {}
            except Undecryptable:
                continue  # checked once the key is back
            self._check_labels(row, sent, client, stats)
            db.commit()

    def _defer(self, db: Session, row: Any, stats: RunStats) -> None:
        """A resource it points at is still on its way: wait without spending a try."""
        row.status, row.claimed_by, row.lease_until = PENDING, None, None
        row.attempts = max(0, row.attempts - 1)
        row.next_attempt_at = utcnow() + timedelta(seconds=min(1.0, self.settings.base_delay))
        db.commit()
        stats.deferred += 1

    def _error(self, db: Session, row: Any, exc: FhirError, stats: RunStats) -> None:
        reason = retry.reason(exc)
        row.last_status = exc.status or None
        transient = retry.transient(exc)
        if row.final_retry:
            self._fail(db, row, reason, exc.status, stats)
        elif transient and row.attempts < row.max_attempts:
            self._retry_later(db, row, reason, retry.backoff(self.settings, row.attempts, exc.retry_after), stats)
        else:
            # Refused, or tries used up: keep it and try exactly once more.
            row.final_retry = True
            what = "the EHR refused it" if not transient else "the EHR could not take it"
            self._retry_later(db, row, f"{what} ({reason}); one more try is scheduled",
                              self.settings.final_retry_delay, stats)
            log.warning("outbox %s: %s %s (%s); final retry scheduled", row.id, row.kind,
                        "refused" if not transient else "not taken", reason)

    def _unreadable(self, db: Session, row: Any, stats: RunStats) -> None:
        """No configured key decrypts the stored write: never fail or drop it (the content is intact, a key is
        missing); keep it pending without spending a try, and say why, until the key is back."""
        now = utcnow()
        row.status, row.claimed_by, row.lease_until = PENDING, None, None
        row.attempts = max(0, row.attempts - 1)
        row.last_error = "cannot be decrypted with the configured keys: add the previous TOKEN_ENCRYPTION_KEY back"
        row.next_attempt_at = now + timedelta(seconds=self.settings.max_delay)
        row.updated_at = now
        db.commit()
        stats.deferred += 1
        log.error("outbox %s: %s kept pending: no configured key decrypts it", row.id, row.kind)

    def _retry_later(self, db: Session, row: Any, reason: str, delay: float, stats: RunStats) -> None:
        now = utcnow()
        row.status, row.claimed_by, row.lease_until = PENDING, None, None
        row.last_error = reason
        row.next_attempt_at = now + timedelta(seconds=delay)
        row.updated_at = now
        db.commit()
        stats.retrying += 1

    def _fail(self, db: Session, row: Any, reason: str, status: int | None, stats: RunStats) -> None:
        if row.outcome_unknown:
            # An earlier send may have been filed: "not written" could be false. A person checks the chart.
            row.last_status = status or row.last_status
            self._check(db, row, reason, stats)
            return
        now = utcnow()
        row.status, row.claimed_by, row.lease_until = FAILED, None, None
        row.last_error = reason
        row.last_status = status or row.last_status
        row.updated_at = now
        db.commit()
        stats.failed += 1
        log.warning("outbox %s: %s failed (%s)", row.id, row.kind, reason)


# -- helpers ------------------------------------------------------------------------------------------------
def _ids(resource: dict[str, Any] | None, location: str | None) -> tuple[str | None, str | None]:
    """Server id and version from the returned resource or the Location (``Type/id/_history/v``)."""
    if resource and resource.get("id"):
        return resource["id"], (resource.get("meta") or {}).get("versionId")
    if location:
        parts = location.rstrip("/").split("/")
        if "_history" in parts:
            i = parts.index("_history")
            return parts[i - 1], parts[i + 1] if i + 1 < len(parts) else None
        return parts[-1], None
    return None, None


def _replace_reference(node: Any, urn: str, reference: str) -> None:
    if isinstance(node, dict):
        if node.get("reference") == urn:
            node["reference"] = reference
        for value in node.values():
            _replace_reference(value, urn, reference)
    elif isinstance(node, list):
        for value in node:
            _replace_reference(value, urn, reference)


def _drop_reference(node: Any, urn: str) -> None:
    """Remove optional links to a resource that was not written (lists shrink, empty keys go)."""
    if isinstance(node, dict):
        for key in list(node):
            value = node[key]
            if isinstance(value, dict) and value.get("reference") == urn:
                del node[key]
            elif isinstance(value, list):
                node[key] = [v for v in value if not (isinstance(v, dict) and v.get("reference") == urn)]
                if not node[key]:
                    del node[key]
                else:
                    _drop_reference(node[key], urn)
            else:
                _drop_reference(value, urn)
                if isinstance(value, dict) and not value:
                    del node[key]  # e.g. DocumentReference.context left empty
    elif isinstance(node, list):
        for value in node:
            _drop_reference(value, urn)


def _has_identifier(resource: dict[str, Any], system: str, value: str) -> bool:
    idents = resource.get("identifier")
    idents = idents if isinstance(idents, list) else [idents] if idents else []
    return any(i.get("system") == system and i.get("value") == value for i in idents)


def _token(concept: dict[str, Any] | None) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("code"):
            return f"{coding.get('system', '')}|{coding['code']}"
    return None


def _note_text(doc: dict[str, Any], client: Any) -> str | None:
    """The note's text from its attachment (inline data, or the Binary its url points at); None if unreadable."""
    texts = []
    for content in doc.get("content") or []:
        att = content.get("attachment") or {}
        data = att.get("data")
        if data is None and att.get("url") and hasattr(client, "read_reference"):
            try:
                binary = client.read_reference(att["url"])
            except FhirError:
                return None
            data = binary.get("data")
        if data is None:
            return None
        try:
            texts.append(base64.b64decode(data).decode("utf-8", errors="replace"))
        except (ValueError, TypeError):
            return None
    return "\n".join(texts) if texts else None
