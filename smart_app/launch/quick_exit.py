"""Quick exit and the end of a launch, server side.

- ``POST /exit`` (CSRF token required): end this browser's launches, revoke their tokens at
  the EHR (RFC 7009) once the response has gone, clear the session. A GET, or a POST without a
  valid token (a forged cross-site request), only sends the window to the neutral page and changes nothing.
- ``POST /l/<lid>/close``: the last tab of a launch closed (a beacon): the launch ends after a
  short grace unless a page of it is used again (a reload sends ``/alive``).
- ``POST /l/<lid>/alive``: the page is in use (typing, a reload), so the idle timeout starts again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, abort, current_app, redirect, request, session
from flask_wtf.csrf import CSRFError, validate_csrf
from sqlalchemy import select
from wtforms.validators import ValidationError

from config.current import current_settings
from smart_app.launch.resume import stamp
from smart_app.launch.revocation import revoke_later
from smart_app.launch.state import load_launch, touch
from smart_app.ops.security import csrf
from smart_app.store.db import get_session
from smart_app.store.models import LaunchRecord

bp = Blueprint("exit", __name__)


def _csrf_ok() -> bool:
    if not current_app.config.get("WTF_CSRF_ENABLED", True):
        return True
    try:
        validate_csrf(request.form.get("csrf_token"))
    except (ValidationError, CSRFError):
        return False
    return True


def _neutral() -> Response:
    return redirect(current_settings().neutral_exit_url)


@bp.route("/exit", methods=["POST", "GET"])
@csrf.exempt  # checked below: a failed check must still take the window away, only without changing state
def quick_exit() -> Response:
    if request.method != "POST" or not _csrf_ok():
        return _neutral()
    bid = session.get("bid")
    ended: list[str] = []
    if bid:
        db = get_session()
        records = db.scalars(select(LaunchRecord).where(
            LaunchRecord.browser_id == bid, LaunchRecord.status.in_(("pending", "active")))).all()
        for record in records:
            # An active launch may be continued for a few minutes: one column, no reads.
            if record.status == "active":
                stamp(record)
            record.status = "ended"
            if record.tokens_enc:
                ended.append(record.id)
        db.commit()
    session.clear()
    response = _neutral()
    # Ask the browser to drop anything it kept of this origin.
    response.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
    if ended:
        revoke_later(response, ended)
    return response


@bp.post("/l/<lid>/close")
def close_launch(lid: str) -> tuple[str, int]:
    """The last tab of this launch closed: end it after CLOSE_GRACE_SECONDS unless it is used again."""
    launch = load_launch(lid, refresh=False)
    grace = datetime.now(UTC) + timedelta(seconds=current_settings().close_grace_seconds)
    expires = launch.record.expires_at
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if grace < expires:
        launch.record.expires_at = grace
        launch.save()
    return "", 204


@bp.post("/l/<lid>/alive")
def launch_alive(lid: str) -> tuple[str, int]:
    """The page of this launch is in use: the idle timeout starts again."""
    launch = load_launch(lid, refresh=False)
    touch(launch.record, force=True)
    return "", 204


@bp.errorhandler(405)
def _method(_exc: Exception) -> Response:
    abort(404)
