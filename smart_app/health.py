"""Liveness and readiness for load balancers and orchestrators: ``/healthz`` and ``/readyz``.

JSON only, no PHI, no session (nothing here touches ``session``, so no cookie is ever set), never cached.
``/healthz`` answers 200 while the process serves requests. ``/readyz`` answers 200 only when every check
passes and 503 otherwise, naming each check: a load balancer stops sending clinicians to an instance
whose database is gone or whose schema was not migrated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text

from smart_app import migrate

bp = Blueprint("health", __name__)

# name -> check(app) returning (ok, detail); detail is a short non-PHI string or number.
CHECKS: dict[str, Callable[[Flask], tuple[bool, Any]]] = {}


def check(name: str) -> Callable:
    def register(fn: Callable[[Flask], tuple[bool, Any]]) -> Callable:
        CHECKS[name] = fn
        return fn

    return register


@check("database")
def _database(app: Flask) -> tuple[bool, Any]:
    with app.extensions["db_engine"].connect() as conn:
        conn.execute(text("SELECT 1"))
    return True, "reachable"


@check("schema")
def _schema(app: Flask) -> tuple[bool, Any]:
    head = app.extensions.setdefault("db_heads", migrate.heads())
    with app.extensions["db_engine"].connect() as conn:
        current = migrate.current_revisions(conn)
    if app.config.get("DB_CREATE_ALL", app.testing) and not current:
        return True, "create_all (tests)"
    ok = set(current) == set(head)
    return ok, ",".join(current) if ok else "not at head: run `flask --app smart_app db upgrade`"


@bp.get("/healthz")
def healthz():
    return _json({"status": "ok"}, 200)


@bp.get("/readyz")
def readyz():
    app = current_app._get_current_object()
    results: dict[str, dict[str, Any]] = {}
    for name, fn in CHECKS.items():
        try:
            ok, detail = fn(app)
        except Exception as exc:  # a check that cannot run is a failed check; type only (no PHI)
            ok, detail = False, type(exc).__name__
        results[name] = {"ok": ok, "detail": detail}
    ready = all(r["ok"] for r in results.values())
    return _json({"status": "ready" if ready else "not ready", "checks": results}, 200 if ready else 503)


def _json(body: dict[str, Any], status: int):
    resp = jsonify(body)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
