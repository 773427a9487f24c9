"""Liveness and readiness for load balancers and orchestrators: ``/healthz`` and ``/readyz``.

JSON only, no PHI, no session (nothing here touches ``session``, so no cookie is ever set), never cached.
``/healthz`` answers 200 while the process serves requests. ``/readyz`` answers 200 only when every check
passes and 503 otherwise, naming each check: a load balancer stops sending clinicians to an instance
whose database is gone, whose schema was not migrated, or that cannot read its directory or keys.

Two checks concern the whole deployment rather than this instance: the outbox backlog (oldest unsent chart
write younger than tuning.readyz_outbox_max_age seconds) and the worker heartbeat (freshest outbox worker stamp
younger than tuning.readyz_heartbeat_max_age). Taking every web instance out of the load balancer because the
worker died would stop screening too, so by default they are reported (``"status": "degraded"``, alerting
via /metrics) with 200; tuning.readyz_strict makes them fail readiness as well. A check registered with
``strict=False`` is never critical, even then: the referral alerts (smart_app/worklist/alerts.py) say that a
person is waiting, and taking instances out of rotation would keep social workers from the very queue that
clears them (docs/decisions/0007-readyz-degraded-alerts.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import func, select, text

from config.current import settings_of
from fhir.smart.client_auth import ClientAuth
from referrals.store import store_for
from smart_app.store import create_all, migrate
from smart_app.store.models import OutboxItem, WorkerHeartbeat

bp = Blueprint("health", __name__)

@dataclass(frozen=True)
class Check:
    """``run(app)`` returns (ok, detail), detail a short non-PHI string, number or mapping of counts.
    ``critical``: a failure makes the instance not ready (503); ``strict``: tuning.readyz_strict makes it critical."""

    run: Callable[[Flask], tuple[bool, Any]]
    critical: bool = True
    strict: bool = True


CHECKS: dict[str, Check] = {}


def check(name: str, *, critical: bool = True, strict: bool = True) -> Callable:
    def register(fn: Callable[[Flask], tuple[bool, Any]]) -> Callable:
        CHECKS[name] = Check(fn, critical, strict)
        return fn

    return register


def _age(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - dt).total_seconds())


@check("database")
def _database(app: Flask) -> tuple[bool, Any]:
    with app.extensions["db_engine"].connect() as conn:
        conn.execute(text("SELECT 1"))
    return True, "reachable"


@check("schema")
def _schema(app: Flask) -> tuple[bool, Any]:
    head = app.extensions.get("db_heads")
    if head is None:  # read the scripts once per process (not per probe)
        head = app.extensions["db_heads"] = migrate.heads()
    with app.extensions["db_engine"].connect() as conn:
        current = migrate.stored_revisions(conn)
    if create_all(app) and not current:
        return True, "create_all (tests)"
    ok = set(current) == set(head)
    return ok, ",".join(current) if ok else "not at head: run `flask --app smart_app db upgrade`"


@check("directory")
def _directory(app: Flask) -> tuple[bool, Any]:
    store = store_for(app)
    services = len(store.index.directory.services)
    # The version: the database's directory import this process serves (0: the files only), the same on every host
    # within tuning.directory_check_seconds of an import.
    return services > 0, f"{services} services, version {store.version}"


@check("keys")
def _keys(app: Flask) -> tuple[bool, Any]:
    keys = app.extensions.get("fernet_keys") or ([app.extensions["fernet"]] if "fernet" in app.extensions else [])
    if not keys:
        return False, "no encryption key"
    settings = settings_of(app)
    ClientAuth.from_deployment(settings)  # raises when the signing key or secret is missing or unreadable
    return True, f"{len(keys)} encryption key(s), client auth {settings.client_auth}"


@check("outbox_backlog", critical=False)
def _outbox(app: Flask) -> tuple[bool, Any]:
    with app.extensions["db_sessionmaker"]() as db:
        oldest = db.scalar(select(func.min(OutboxItem.created_at)).where(OutboxItem.status.in_(("pending", "sending"))))
    age = _age(oldest)
    limit = settings_of(app).readyz_outbox_max_age
    return (age is None or age <= limit), {"oldest_age_seconds": None if age is None else round(age),
                                          "limit_seconds": limit}


@check("worker_heartbeat", critical=False)
def _worker(app: Flask) -> tuple[bool, Any]:
    with app.extensions["db_sessionmaker"]() as db:
        newest = db.scalar(select(func.max(WorkerHeartbeat.beat_at)))
    age = _age(newest)
    limit = settings_of(app).readyz_heartbeat_max_age
    return (age is not None and age <= limit), {"age_seconds": None if age is None else round(age),
                                               "limit_seconds": limit}


@bp.get("/healthz")
def healthz():
    return _json({"status": "ok"}, 200)


@bp.get("/readyz")
def readyz():
    app = current_app._get_current_object()
    strict = settings_of(app).readyz_strict
    results: dict[str, dict[str, Any]] = {}
    for name, entry in CHECKS.items():
        try:
            ok, detail = entry.run(app)
        except Exception as exc:  # a check that cannot run is a failed check; type only (no PHI)
            ok, detail = False, type(exc).__name__
        results[name] = {"ok": ok, "critical": entry.critical or (strict and entry.strict), "detail": detail}
    ready = all(r["ok"] for r in results.values() if r["critical"])
    status = "not ready" if not ready else "ready" if all(r["ok"] for r in results.values()) else "degraded"
    return _json({"status": status, "checks": results}, 200 if ready else 503)


def _json(body: dict[str, Any], status: int):
    resp = jsonify(body)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
