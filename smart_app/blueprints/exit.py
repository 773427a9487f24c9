"""Quick exit, server side: end this browser's launches and clear its session."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, session
from sqlalchemy import update

from smart_app.db import get_session
from smart_app.models import LaunchRecord
from smart_app.security import csrf

bp = Blueprint("exit", __name__)


@bp.route("/exit", methods=["POST", "GET"])
@csrf.exempt  # sendBeacon cannot carry a CSRF token; the worst a forged call does is end a session
def quick_exit() -> Response:
    bid = session.get("bid")
    if bid:
        db = get_session()
        db.execute(
            update(LaunchRecord)
            .where(LaunchRecord.browser_id == bid, LaunchRecord.status.in_(("pending", "active")))
            .values(status="ended")
        )
        db.commit()
    session.clear()
    response = redirect(current_app.config["NEUTRAL_EXIT_URL"])
    # Ask the browser to drop anything it kept of this origin.
    response.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
    return response
