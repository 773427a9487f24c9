"""Private screening: gate, instrument, score, result (urgent path first when in danger).

Nothing here writes to the chart or logs answers: the result lives only in the
launch's encrypted server-side state (``data["screening"]``) for referral and write-back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from flask import Blueprint, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from smart_app.i18n import SUPPORTED
from smart_app.launch_state import launch_required

bp = Blueprint("screening", __name__, url_prefix="/l/<lid>")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def patient_locale(context: dict[str, Any]) -> str:
    """The patient's language from Patient.communication when we have it in en/es."""
    patient = context.get("patient") or {}
    for lang in [patient.get("language"), *(patient.get("languages") or [])]:
        base = (lang or "").split("-")[0].lower()
        if base in SUPPORTED:
            return base
    return "en"


def screening_view(view: Callable) -> Callable:
    """launch_required + the launch's language in g.locale before anything renders."""

    @launch_required
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        data = g.launch.data
        g.locale = data.get("locale") if data.get("locale") in SUPPORTED else patient_locale(g.launch.context)
        return view(*args, **kwargs)

    return wrapper


@bp.route("/", methods=["GET"])
@screening_view
def start() -> str:
    """The private gate: nothing is asked before the clinician confirms the patient is alone."""
    return render_template("screening/gate.html", lid=g.launch.id, gate=g.launch.data.get("gate"))


@bp.route("/gate", methods=["POST"])
@screening_view
def gate() -> Response | tuple[str, int]:
    lid = g.launch.id
    if request.form.get("action") == "not_now":
        # Only the app's own state remembers this, so the app can remind the clinician later.
        g.launch.update_data(gate={"status": "not_now", "at": _now()})
        g.launch.save()
        return redirect(url_for("screening.not_now", lid=lid))
    if request.form.get("alone") != "yes" or request.form.get("no_family_interpreter") != "yes":
        return render_template("screening/gate.html", lid=lid, gate=g.launch.data.get("gate"),
                               gate_error=True), 400
    g.launch.update_data(gate={"status": "confirmed", "at": _now()})
    g.launch.save()
    return redirect(url_for("screening.start", lid=lid))


@bp.route("/not-now", methods=["GET"])
@screening_view
def not_now() -> str:
    return render_template("screening/not_now.html", lid=g.launch.id)
