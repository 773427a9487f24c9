"""The clinician's side of the tablet mode, on the launch (``/l/<lid>/tablet``), after the private gate.

"Patient answers on a tablet": on this device (a hand-over screen with a PIN for the hand-back, then the patient's
pages in this browser, whose launch pages stay locked until the PIN is typed) or on a paired tablet (a single-use
code shown only here; this page follows the tablet's progress, counts only, and "Show the result" is the
hand-back: the tablet wipes itself). The code and the PIN wait in the launch's encrypted state until used.
"""

from __future__ import annotations

import secrets

from flask import Blueprint, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from smart_app.kiosk import sessions
from smart_app.launch.locale import launch_view
from smart_app.screening.record import registry
from smart_app.store.db import get_session

bp = Blueprint("kiosk_staff", __name__, template_folder="templates", url_prefix="/l/<lid>/tablet")
MODES = ("device", "paired")
SECRET_KEY = "tablet_secret"  # the code or PIN not yet used, in the launch's encrypted state


def _gate_ok() -> bool:
    return (g.launch.data.get("gate") or {}).get("status") == "confirmed"


def _instruments() -> list:
    reg = registry()
    return [reg["instruments"][k] for k in reg["offered"]]


@bp.route("", methods=["GET"])
@launch_view
def choose() -> Response | str:
    if not _gate_ok():
        return redirect(url_for("screening.start", lid=g.launch.id))
    row = sessions.of_launch(g.launch.id)
    if sessions.live(row):
        return redirect(url_for("kiosk_staff.status", lid=g.launch.id))
    return render_template(
        "kiosk/choose.html",
        lid=g.launch.id,
        instruments=_instruments(),
        default=registry()["default"],
        plang=g.patient_locale,
        done=bool(g.launch.data.get("screening")),
    )


@bp.route("", methods=["POST"])
@launch_view
def begin() -> Response:
    lid = g.launch.id
    if not _gate_ok():
        return redirect(url_for("screening.start", lid=lid))
    mode = request.form.get("mode")
    key = request.form.get("instrument")
    if mode not in MODES or key not in registry()["offered"]:
        return redirect(url_for("kiosk_staff.choose", lid=lid))
    _row, secret = sessions.start(lid, mode, key, g.patient_locale)
    g.launch.update_data(**{SECRET_KEY: secret})
    g.launch.save()
    return redirect(url_for("kiosk_staff.status", lid=lid))


@bp.route("/status", methods=["GET"])
@launch_view
def status() -> Response | str:
    """Hand-over (same device: the PIN) or pairing (the code), then the tablet's progress."""
    lid = g.launch.id
    row = sessions.of_launch(lid)
    state = sessions.state_for_clinician(row)
    if state["status"] == "none":
        return redirect(url_for("kiosk_staff.choose", lid=lid))
    secret = g.launch.data.get(SECRET_KEY)
    if secret and state["status"] != "waiting":
        g.launch.pop_data(SECRET_KEY)  # used (or expired): shown no more
        g.launch.save()
        secret = None
    total = len(registry()["instruments"][_instrument_of(row)].questions) if row else 0
    return render_template(
        "kiosk/status.html",
        lid=lid,
        state=state,
        secret=secret,
        total=total,
        has_result=bool(g.launch.data.get("screening")),
        refresh=state["status"] in ("waiting", "answering") and state["mode"] == "paired",
    )


def _instrument_of(row) -> str:
    progress = sessions.Progress.load(row)
    return progress.instrument if progress else registry()["default"]


@bp.route("/handover", methods=["POST"])
@launch_view
def handover() -> Response:
    """Same device: this browser becomes the tablet. The launch is bound to no browser until the PIN is typed, so
    Back or a typed launch URL shows the patient nothing of the clinician's pages."""
    lid = g.launch.id
    row = sessions.of_launch(lid)
    if row is None or row.mode != "device" or row.status != "waiting":
        return redirect(url_for("kiosk_staff.choose", lid=lid))
    g.launch.pop_data(SECRET_KEY)
    sessions.bind_tablet(row)
    g.launch.record.browser_id = secrets.token_urlsafe(24)
    get_session().commit()
    return redirect(url_for("kiosk.screen"), code=303)


@bp.route("/unlock", methods=["POST"])
@launch_view
def unlock() -> Response:
    """Paired: the clinician takes the result on their own launch; the tablet wipes itself at its next look."""
    lid = g.launch.id
    row = sessions.of_launch(lid)
    if row is not None and row.mode == "paired":
        row.status = "handed_back"
        row.tablet_hash = None  # the tablet's token now finds nothing: it wipes itself
        get_session().commit()
    if g.launch.data.get("screening"):
        return redirect(url_for("screening.result", lid=lid))
    return redirect(url_for("kiosk_staff.choose", lid=lid))


@bp.route("/cancel", methods=["POST"])
@launch_view
def cancel() -> Response:
    """Stop the tablet mode: the session and anything answered go; a paired tablet wipes itself at its next look."""
    lid = g.launch.id
    row = sessions.of_launch(lid)
    if row is not None:
        get_session().delete(row)
    g.launch.pop_data(SECRET_KEY)
    g.launch.save()
    return redirect(url_for("screening.questions", lid=lid))
