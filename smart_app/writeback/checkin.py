"""The optional neutral chart line after a negative screen: that a check-in happened and resources were offered.

Nothing about the answers, the instrument or the score: one fixed sentence in the chart's language (the language
of the referral note, ``smart_app/writeback/note.py``). Offered only where the deployment allows it
(``neutral_checkin_record``), after a completed negative screen, where this EHR and this launch's token take a
note; the box is unticked and the line is written only when the clinician ticks it and presses the button.

It is a chart write like the referral note, on the same path: planned by ``fhir/builders.py`` with the note type
and confidentiality labels the note gets (``site_rules``), stored as an outbox row in the request and sent by the
worker (never inside the request), once per launch (a key fixed in the launch and the outbox's unique business
identifier). The row carries the launch's check-in key where a referral's rows carry the referral id; no referral
exists behind it, so nothing reaches the social-work queue.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from config.current import current_settings
from config.ehr_profile import EhrProfile
from fhir.builders import PlannedWrite, WritebackInput, plan_writeback, reference_code
from smart_app.launch.state import launch_required
from smart_app.ops.i18n import gettext as _
from smart_app.ops.profiles import current_profile
from smart_app.outbox.enqueue import enqueue
from smart_app.outbox.settings import OutboxSettings
from smart_app.outbox.status import referral_rows, row_view
from smart_app.store.db import get_session
from smart_app.writeback.views import offer_for, protection_words, site_rules

bp = Blueprint("checkin", __name__, template_folder="templates", url_prefix="/l/<lid>")

# The chart's words: the same for every patient, whatever was answered.
CHECKIN_SENTENCE = "Health and safety check-in done; resources offered."
CHECKIN_TITLE = "Check-in note"


def offered(launch: Any, profile: EhrProfile) -> bool:
    """The box is shown: allowed by the deployment, after a completed negative screen, for a patient whose chart
    this launch may add a note to, and no referral written in this launch (its note already records the visit)."""
    screening = launch.data.get("screening") or {}
    return bool(current_settings().neutral_checkin_record and screening.get("completed_at")
                and screening.get("interpretation") == "negative" and launch.typed_context.patient_id
                and not (launch.data.get("writeback") or {}).get("referral_id")
                and "DocumentReference" in offer_for(launch, profile).kinds)


def checkin_key(launch: Any) -> str:
    """This launch's check-in key, fixed before the page shows the words: the business identifier (and, where the
    EHR cannot be searched by it, the reference code in the text) derive from it, so a launch writes it once."""
    key = (launch.data.get("checkin_record") or {}).get("key")
    if not key:
        key = secrets.token_urlsafe(24)
        launch.update_data(checkin_record={"key": key})
        launch.save()
    return key


def words(key: str, profile: EhrProfile) -> str:
    """The exact text filed. Where the EHR cannot be searched by business identifier the app finds an earlier send
    by the reference code its text carries (``smart_app/outbox/lookup.py``): never a blind re-send."""
    if profile.search_by_identifier:
        return CHECKIN_SENTENCE
    return f"{CHECKIN_SENTENCE}\n\nRef. {reference_code(key)}"


def line_input(key: str, profile: EhrProfile, *, patient_id: str, encounter_id: str | None,
               author_reference: str | None, author_name: str | None) -> WritebackInput:
    """The one note, as the referral note is planned (the site's note type, its category and labels); no
    screening and no referral go in, so nothing of the answers can. The leak check plans it from here too."""
    return WritebackInput(referral_key=key, patient_id=patient_id, encounter_id=encounter_id,
                          author_reference=author_reference, author_name=author_name, screening={}, referral={},
                          resources=["DocumentReference"], note_text=words(key, profile), note_title=CHECKIN_TITLE)


def plans_for(launch: Any, profile: EhrProfile, key: str) -> list[PlannedWrite]:
    ctx = launch.typed_context
    inp = line_input(key, profile, patient_id=ctx.patient_id, encounter_id=ctx.encounter_id,
                     author_reference=ctx.user.reference, author_name=ctx.user.name)
    return plan_writeback(inp, site_rules(profile))


def box(launch: Any) -> dict[str, Any] | None:
    """What the result page shows: the exact words and, once queued, the write's status; None = no box."""
    queued = (launch.data.get("checkin_record") or {}).get("queued_at")
    profile = current_profile()
    if not queued and not offered(launch, profile):
        return None
    key = checkin_key(launch)
    # Named as what it is: the status table's usual name for a note is the referral's.
    rows = [{**row_view(r), "label": _("Check-in note")} for r in referral_rows(key)] if queued else []
    return {"words": words(key, profile), "queued": bool(queued), "rows": rows,
            "protection": protection_words(profile)}


@bp.app_context_processor
def _result_box() -> dict[str, Any]:
    # Called by the result page's template (``smart_app/screening/templates/screening/result.html``) only.
    return {"checkin_box": lambda: box(g.launch) if g.get("launch") is not None else None}


@bp.route("/chart-line", methods=["POST"])
@launch_required
def add_line() -> Response | tuple[str, int]:
    """Store the neutral line as an outbox row (the worker sends it) and go back to the result."""
    launch = g.launch
    back = url_for("screening.result", lid=launch.id) + "#chart-line"
    if (launch.data.get("checkin_record") or {}).get("queued_at"):  # reload, double submit: written once
        return redirect(back)
    profile = current_profile()
    if not offered(launch, profile):
        return render_template("error.html", title=_("Not offered"), message=_(
            "Nothing was written: this line is offered only after a completed negative screen, where this site "
            "allows it.")), 409
    if request.form.get("add_line") != "yes":
        return render_template("error.html", title=_("Nothing was written"), message=_(
            "Nothing was written: tick the box to add the line to the chart, or go back to the result.")), 422
    key = checkin_key(launch)
    db = get_session()
    enqueue(db, referral_id=key, launch_id=launch.id, iss=launch.iss, profile=profile,
            plans=plans_for(launch, profile, key), settings=OutboxSettings.for_app(current_app, profile))
    launch.update_data(checkin_record={"key": key, "queued_at": datetime.now(UTC).isoformat(timespec="seconds")})
    try:
        db.commit()  # one commit, durable; the worker sends. No EHR call in this request.
    except IntegrityError:  # a concurrent submit stored it first
        db.rollback()
    return redirect(back)
