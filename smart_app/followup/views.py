"""Recording the response to a positive self-administered screen from a launch page (the result after hand-back,
the first page of a later launch for the patient): POST, then back to the page the panel was on. The item must be
this launch's patient's; anything else is 404. Only the response code is kept and audited, never a word of why."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, g, redirect, request, url_for
from werkzeug.wrappers import Response

from config.current import current_settings
from smart_app.followup import items
from smart_app.launch.locale import launch_view
from smart_app.launch.roles import user_roles
from smart_app.ops.audit import record_audit
from smart_app.store.db import get_session

bp = Blueprint("followup", __name__, template_folder="templates", url_prefix="/l/<lid>/followup")

# Where the panel's form returns: the page it was on.
BACK = {"result": "screening.result", "start": "screening.start"}


@bp.route("", methods=["POST"])
@launch_view
def respond() -> Response:
    db = get_session()
    item = items.of_patient(db, g.launch, request.form.get("item") or "")
    if item is None:
        abort(404, description="This follow-up is not this patient's, or no longer exists.")
    code = request.form.get("response") or ""
    roles = user_roles((g.launch.context or {}).get("user") or {}, current_settings())
    if not items.record_response(db, item, code, role=items.responder_role(roles), launch_id=g.launch.id):
        abort(400, description="Choose one of the three responses.")
    record_audit("followup_response", detail=code, object_id=item.id, db=db)
    db.commit()
    back = BACK.get(request.form.get("back") or "", BACK["result"])
    if back not in current_app.view_functions:
        back = BACK["result"]
    return redirect(url_for(back, lid=g.launch.id) + "#followup")
