"""Referrals stored before routing get what a referral made today has, so each lands in a queue.

A referral made before the routing columns (an install upgraded from before migrations, or from before migration
0012) has no ``ehr`` / ``route_kind`` / ``route_team``, often no ``referral_site`` rows and no program index: the
queue's scope matches none of it and no social worker sees it. Migration 0014 runs ``backfill`` inside
``flask --app smart_app db upgrade`` (in the migrations' transaction, under their advisory lock), through the same
code a new referral goes through:

- site keys (``referral_site``): the plaintext ``referral.site`` (the directory site the referral page matched),
  and every key of the encounter's site when the referral's launch is still stored and its context decrypts
  (``referral_site_keys``); keys already stored are kept;
- the program index (``referral_program`` and ``referral.program_keys``) and ``mrn_key``, from the encrypted
  summary (``program_rows``, ``mrn_key``: the app's Fernet and HMAC keys);
- the route (``routing_of(...).route``): the deployment's team covering a site key, else its coverage, else the
  EHR's fallback team, else the EHR's unrouted queue. Never nothing: a summary or launch no key decrypts still
  routes, on what is in plaintext.

``route_kind IS NULL`` is what marks a referral as not done, and each batch sets it: a second run finds nothing, and
at most ``BATCH`` referrals (their summaries) are in memory at once. The outbox worker runs the same step on its
housekeeping rounds (``route_stragglers``): during a rolling upgrade an instance of the older release still writes
referrals without a route after the migration ran, and those are routed within one round.

The tables are named here with only the columns this step reads and writes (not the models), so a later migration's
new column cannot break this one.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config.current import EXTENSION
from config.ehrs import ehr_id_for, ehrs_of
from smart_app.store.crypto import Undecryptable, decrypt_json
from smart_app.worklist.routing import Routing, routing_of
from smart_app.worklist.scope import program_keys_of, program_rows, referral_site_keys, site_display_name
from smart_app.worklist.search import mrn_key

log = logging.getLogger("ipv.worklist")

BATCH = 500  # referrals (and their decrypted summaries) in memory at once

REFERRAL = sa.table("referral", sa.column("id", sa.String), sa.column("iss", sa.String),
                    sa.column("site", sa.String), sa.column("launch_id", sa.String),
                    sa.column("summary_enc", sa.LargeBinary), sa.column("site_name", sa.String),
                    sa.column("mrn_key", sa.String), sa.column("program_keys", sa.Text),
                    sa.column("ehr", sa.String), sa.column("route_kind", sa.String),
                    sa.column("route_team", sa.String))
SITE = sa.table("referral_site", sa.column("referral_id", sa.String), sa.column("key", sa.String))
PROGRAM = sa.table("referral_program", sa.column("referral_id", sa.String), sa.column("key", sa.String),
                   sa.column("program_enc", sa.LargeBinary))
LAUNCH = sa.table("launch", sa.column("id", sa.String), sa.column("context_enc", sa.LargeBinary))


class BackfillNeedsTheApp(RuntimeError):
    """Referrals wait for routing, and this run has no app (keys, deployment) to route them with."""


@dataclass
class BackfillReport:
    """What one run did (counts only: nothing about a patient)."""

    routes: Counter[str] = field(default_factory=Counter)  # referrals routed, per route kind
    site_keys: int = 0  # referral_site rows added
    from_launch: int = 0  # referrals whose stored launch gave the encounter's site keys
    unreadable: int = 0  # summaries no configured key decrypts: routed, programs and MRN key left unknown

    @property
    def referrals(self) -> int:
        return sum(self.routes.values())

    def text(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.routes.items())) or "none"
        return (f"referrals routed: {self.referrals} ({kinds}); site keys added: {self.site_keys} "
                f"({self.from_launch} from a stored launch); unreadable summaries: {self.unreadable}")


@dataclass
class _Batch:
    """One batch's rows to write, collected before any is written."""

    updates: list[dict[str, Any]] = field(default_factory=list)
    sites: list[dict[str, Any]] = field(default_factory=list)
    programs: list[dict[str, Any]] = field(default_factory=list)


def pending(conn: Connection) -> bool:
    """Whether any referral still waits for its route."""
    return conn.execute(sa.select(REFERRAL.c.id).where(REFERRAL.c.route_kind.is_(None)).limit(1)).first() is not None


def deployment_for_backfill() -> Any:
    """The running app's deployment, or ``BackfillNeedsTheApp`` saying how to run the step that needs it."""
    if not has_app_context() or "fernet" not in current_app.extensions:
        raise BackfillNeedsTheApp(
            "referrals made before routing need the app's keys and deployment to be routed: run "
            "`flask --app smart_app db upgrade` with the app's environment (not the bare alembic command)")
    settings = current_app.extensions.get(EXTENSION)
    if settings is None:
        raise BackfillNeedsTheApp("the settings did not load (`flask check-config` names the problem): referrals "
                                  "made before routing cannot be routed without the deployment")
    return settings


def backfill(conn: Connection, deployment: Any) -> BackfillReport:
    """Route every referral that has no route yet, ``BATCH`` at a time (module docstring). Needs an app context."""
    routing = routing_of(deployment)
    report = BackfillReport()
    last = ""
    while True:
        rows = conn.execute(sa.select(REFERRAL).where(REFERRAL.c.route_kind.is_(None), REFERRAL.c.id > last)
                            .order_by(REFERRAL.c.id).limit(BATCH)).mappings().all()
        if not rows:
            break
        _write(conn, _batch(conn, rows, routing, deployment, report))
        last = rows[-1]["id"]
    if report.referrals:
        log.info("routed referrals stored before routing: %s", report.text())
    return report


def route_stragglers(db: Session) -> dict[str, int]:
    """Housekeeping (``smart_app.ops.housekeeping``, the outbox worker's rounds): route what an older release wrote
    since the upgrade. Commits."""
    if not pending(db.connection()):
        return {"referrals_routed": 0}
    try:
        report = backfill(db.connection(), current_app.extensions[EXTENSION])
        db.commit()
    except IntegrityError:  # another worker routed the same referrals first (their site or program rows)
        db.rollback()
        return {"referrals_routed": 0}
    return {"referrals_routed": report.referrals}


def rekey_ehrs(db: Session) -> dict[str, int]:
    """Housekeeping: referrals keyed on an EHR identity the deployment no longer names (stored on a raw iss before
    an ``ehrs`` block tied it to an EHR, or under an EHR id since renamed) are keyed on the EHR their iss belongs
    to now, so every feature that reads ``referral.ehr`` (the unrouted count, /readyz, the gauge) counts them
    under it; the queue already finds those on an exact iss (``scope.of_ehr``), this also brings in those made
    on a per-launch iss. An iss the deployment ties to no EHR keeps its key. Commits."""
    deployment = current_app.extensions[EXTENSION]
    known = {ehr.id for ehr in ehrs_of(deployment)}
    if not known:
        return {"referrals_rekeyed": 0}
    pairs = db.execute(sa.select(REFERRAL.c.ehr, REFERRAL.c.iss).distinct()
                       .where(REFERRAL.c.ehr.is_not(None), REFERRAL.c.ehr.not_in(sorted(known)))).all()
    moved = 0
    for old, iss in pairs:
        new = ehr_id_for(iss, deployment)
        if new in known:
            moved += db.execute(sa.update(REFERRAL).where(REFERRAL.c.ehr == old, REFERRAL.c.iss == iss)
                                .values(ehr=new)).rowcount or 0
    db.commit()
    if moved:
        log.info("worklist: %s referrals keyed on the EHR their iss now belongs to", moved)
    return {"referrals_rekeyed": moved}


def _batch(conn: Connection, rows: list[Any], routing: Routing, deployment: Any, report: BackfillReport) -> _Batch:
    ids = [r["id"] for r in rows]
    stored_sites: dict[str, list[str]] = {rid: [] for rid in ids}
    for rid, key in conn.execute(sa.select(SITE.c.referral_id, SITE.c.key).where(SITE.c.referral_id.in_(ids))):
        stored_sites[rid].append(key)
    stored_programs: dict[str, list[str]] = {}
    for rid, key in conn.execute(sa.select(PROGRAM.c.referral_id, PROGRAM.c.key)
                                 .where(PROGRAM.c.referral_id.in_(ids))):
        stored_programs.setdefault(rid, []).append(key)
    contexts = _launch_contexts(conn, [r["launch_id"] for r in rows if r["launch_id"]])
    out = _Batch()
    for row in rows:
        rid = row["id"]
        context = contexts.get(row["launch_id"])
        keys = list(dict.fromkeys([*stored_sites[rid], *_site_keys(row["site"], context)]))
        new_keys = [k for k in keys if k not in stored_sites[rid]]
        out.sites += [{"referral_id": rid, "key": k} for k in new_keys]
        report.site_keys += len(new_keys)
        report.from_launch += 1 if context is not None else 0
        route = routing.route(ehr_id_for(row["iss"], deployment), keys)
        report.routes[route.kind] += 1
        values = {"rid": rid, "ehr": route.ehr, "route_kind": route.kind, "route_team": route.team_id,
                  "site_name": row["site_name"] or (site_display_name(context) if context else None),
                  "mrn_key": row["mrn_key"], "program_keys": row["program_keys"]}
        _from_summary(row, stored_programs.get(rid), values, out, report)
        out.updates.append(values)
    return out


def _site_keys(site: str | None, context: dict[str, Any] | None) -> list[str]:
    """The keys a referral made today would have: all of the encounter's when its launch is still stored, else the
    directory site recorded in plaintext."""
    if context is not None:
        return referral_site_keys(context, site)
    return [site] if site else []


def _launch_contexts(conn: Connection, launch_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored contexts of these launches that still exist and decrypt (most are purged once they expire)."""
    out: dict[str, dict[str, Any]] = {}
    if not launch_ids:
        return out
    for lid, blob in conn.execute(sa.select(LAUNCH.c.id, LAUNCH.c.context_enc).where(LAUNCH.c.id.in_(launch_ids))):
        try:
            context = decrypt_json(blob, where="launch context")
        except Undecryptable:
            continue
        if isinstance(context, dict):
            out[lid] = context
    return out


def _from_summary(row: Any, stored_programs: list[str] | None, values: dict[str, Any], out: _Batch,
                  report: BackfillReport) -> None:
    """The program index and MRN key from the encrypted summary; kept as they are when it cannot be read."""
    if values["program_keys"] is not None and values["mrn_key"] is not None:
        return
    if stored_programs is not None and values["program_keys"] is None:
        values["program_keys"] = program_keys_of(stored_programs)  # indexed already: nothing to decrypt
    if values["program_keys"] is not None and values["mrn_key"] is not None:
        return
    try:
        summary = decrypt_json(row["summary_enc"], where="referral summary")
    except Undecryptable:
        report.unreadable += 1
        return
    if not isinstance(summary, dict):
        return  # no summary stored: nothing known about programs or the MRN
    if values["program_keys"] is None:
        rows = program_rows(row["id"], summary.get("programs") or [])
        out.programs += [{"referral_id": r.referral_id, "key": r.key, "program_enc": r.program_enc} for r in rows]
        values["program_keys"] = program_keys_of(r.key for r in rows)
    if values["mrn_key"] is None:
        values["mrn_key"] = mrn_key(summary.get("mrn"))


def _write(conn: Connection, batch: _Batch) -> None:
    if batch.sites:
        conn.execute(sa.insert(SITE), batch.sites)
    if batch.programs:
        conn.execute(sa.insert(PROGRAM), batch.programs)
    # Bound names differ from the column names (SQLAlchemy keeps those for the SET clause).
    columns = ("ehr", "route_kind", "route_team", "site_name", "mrn_key", "program_keys")
    conn.execute(sa.update(REFERRAL).where(REFERRAL.c.id == sa.bindparam("rid"))
                 .values({c: sa.bindparam(f"new_{c}") for c in columns}),
                 [{"rid": u["rid"], **{f"new_{c}": u[c] for c in columns}} for u in batch.updates])
