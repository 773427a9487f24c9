"""Consent and chart write-back: the patient decides, the outbox writes, the clinician sees each result.

No consent: nothing is written and nothing is queued. Consent: the resources are built
(fhir/builders.py), stored in the outbox first (fhir/outbox.py), then sent at once with a short
timeout; whatever the EHR did not take stays queued for the worker. The confirmation page shows
each resource as written / queued for retry / failed (with a PHI-free reason) and the label check.
Also registers the ``outbox-worker`` and ``outbox-run-once`` CLI commands.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.wrappers import Response

from fhir.builders import EhrProfile, WritebackInput, note_text, plan_writeback
from smart_app.crypto import encrypt_json
from smart_app.db import get_session
from smart_app.i18n import use_launch_locale
from smart_app.launch_state import launch_required
from smart_app.models import OutboxItem, ReferralRecord
from smart_app.outbox import OutboxSettings, OutboxWorker, enqueue

bp = Blueprint("writeback", __name__, url_prefix="/l/<lid>", cli_group=None)

CHANNELS = ("none", "phone", "text", "email", "portal", "in_person")
SITE_SYSTEM = "urn:ipv-sandbox:site"


def channel_label(channel: str) -> str:
    return {
        "none": _("No contact is safe: the patient will reach out"),
        "phone": _("Phone"), "text": _("Text message"), "email": _("Email"),
        "portal": _("Patient portal"), "in_person": _("In person at a visit"),
    }.get(channel, channel)


def kind_label(kind: str) -> str:
    return {
        "DocumentReference": _("Referral note"), "ServiceRequest": _("Referral"),
        "Observation": _("Screening score"), "QuestionnaireResponse": _("Screening answers"),
        "Task": _("Follow-up task"),
    }.get(kind, kind)


def current_profile() -> EhrProfile:
    name = current_app.config.get("EHR_PROFILE") or current_app.config["DEPLOYMENT"].ehr_profile
    return EhrProfile.load(name)


def site_key(context: dict[str, Any], referral: dict[str, Any]) -> str | None:
    """The referral's site (site key), else the encounter location's site identifier."""
    if referral.get("site"):
        return referral["site"]
    encounter = context.get("encounter") or {}
    for loc in encounter.get("locations") or []:
        for ident in loc.get("identifiers") or []:
            if ident.get("system") == SITE_SYSTEM and ident.get("value"):
                return ident["value"]
    return None


def _safe_contact(referral: dict[str, Any]) -> dict[str, Any]:
    sc = dict(referral.get("safe_contact") or {})
    if sc.get("channel") not in CHANNELS:
        sc["channel"] = "none"  # unknown = not safe
    return sc


def _input(launch: Any, profile: EhrProfile, referral_key: str, *, resources: list[str], note_mode: str,
           detail_text: str | None, safe_contact: dict[str, Any]) -> WritebackInput:
    ctx, data = launch.context, launch.data
    screening = data.get("screening") or {}
    user = ctx.get("user") or {}
    return WritebackInput(
        referral_key=referral_key, patient_id=(ctx.get("patient") or {}).get("id"),
        encounter_id=(ctx.get("encounter") or {}).get("id"), author_reference=user.get("reference"),
        author_name=user.get("name"), screening=screening, referral=data.get("referral") or {},
        resources=resources, note_mode=note_mode, detail_text=detail_text, safe_contact=safe_contact,
        urgent=bool(screening.get("danger")),
    )


@bp.route("/consent", methods=["GET"])
@launch_required
def consent() -> Response | str:
    done = (g.launch.data.get("writeback") or {}).get("referral_id")
    if done:
        return redirect(url_for("writeback.confirmation", lid=g.launch.id))
    use_launch_locale(g.launch)
    profile = current_profile()
    referral = g.launch.data.get("referral") or {}
    sc = _safe_contact(referral)
    preview = note_text(_input(g.launch, profile, "preview", resources=list(profile.resources), note_mode="minimal",
                               detail_text=None, safe_contact=sc))
    return render_template("writeback/consent.html", lid=g.launch.id, profile=profile, preview=preview,
                           safe_contact=sc, channels=CHANNELS, channel_label=channel_label, kind_label=kind_label,
                           has_patient=bool((g.launch.context.get("patient") or {}).get("id")))


@bp.route("/consent", methods=["POST"])
@launch_required
def consent_post() -> Response | tuple[str, int] | str:
    launch = g.launch
    use_launch_locale(g.launch)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if request.form.get("consent") != "yes":
        # No consent: nothing is built, queued or sent.
        launch.update_data(consent={"status": "declined", "at": now})
        launch.save()
        return render_template("writeback/declined.html", lid=launch.id)
    existing = (launch.data.get("writeback") or {}).get("referral_id")
    if existing:  # double submit: never a second referral
        return redirect(url_for("writeback.confirmation", lid=launch.id))
    patient = launch.context.get("patient") or {}
    if not patient.get("id"):
        return render_template("error.html", title=_("No patient"),
                               message=_("This launch has no patient, so nothing can be written.")), 400
    profile = current_profile()
    referral = launch.data.get("referral") or {}
    sc = _safe_contact(referral)
    if request.form.get("channel") in CHANNELS:
        sc = {"channel": request.form["channel"], "note": (request.form.get("contact_note") or "").strip() or None}
    detailed = profile.detailed_note_allowed and request.form.get("detailed") == "yes"
    detail_text = (request.form.get("detail_text") or "").strip() if detailed else None
    chosen = [r for r in request.form.getlist("resources") if r in profile.offered]
    if "DocumentReference" in profile.offered and "DocumentReference" not in chosen:
        chosen.append("DocumentReference")  # the note is what consent is about; always written
    db = get_session()
    record = ReferralRecord(launch_id=launch.id, iss=launch.iss, profile=profile.name,
                            site=site_key(launch.context, referral),
                            urgent=bool((launch.data.get("screening") or {}).get("danger")), status="new")
    db.add(record)
    db.flush()
    inp = _input(launch, profile, record.id, resources=chosen, note_mode="detailed" if detailed else "minimal",
                 detail_text=detail_text, safe_contact=sc)
    plans = plan_writeback(inp, profile)
    record.summary_enc = encrypt_json(_summary(launch, referral, sc, [p.kind for p in plans]))
    enqueue(db, referral_id=record.id, launch_id=launch.id, iss=launch.iss, profile=profile,
            plans=plans, settings=OutboxSettings.for_app(current_app, profile))
    launch.update_data(consent={"status": "given", "at": now, "detailed": bool(detailed)},
                       writeback={"referral_id": record.id},
                       referral={**referral, "safe_contact": sc})
    db.commit()  # durable before anything is sent
    send_now(record.id)
    return redirect(url_for("writeback.confirmation", lid=launch.id))


def send_now(referral_id: str) -> None:
    """One quick try while the clinician waits; the worker takes over what is left."""
    app = current_app._get_current_object()
    timeout = float(app.config.get("WRITEBACK_SEND_TIMEOUT", 5.0))
    worker = OutboxWorker(app, client_for=None, timeout=timeout)
    try:
        worker.run_once(referral_id=referral_id, limit=10)
    except Exception as exc:  # rows stay durable in the outbox
        current_app.logger.warning("write-back: immediate send failed (%s)", type(exc).__name__)


def _summary(launch: Any, referral: dict[str, Any], sc: dict[str, Any], kinds: list[str]) -> dict[str, Any]:
    """What social work needs to follow up — no screening answers or score."""
    ctx = launch.context
    patient = ctx.get("patient") or {}
    results = {r.get("service_id"): r for r in referral.get("results") or []}
    programs = [{"name": results[s].get("program") or results[s].get("name"), "phone": results[s].get("phone")}
                for s in referral.get("selected") or [] if s in results]
    return {"patient_name": patient.get("name"), "mrn": patient.get("mrn"), "patient_id": patient.get("id"),
            "language": patient.get("language"), "programs": programs, "safe_contact": sc,
            "clinician": (ctx.get("user") or {}).get("name"), "kinds": kinds}


def row_view(row: OutboxItem) -> dict[str, Any]:
    """Plain-language status of one outbox row (clinician page and social-work queue)."""
    view = {"id": row.id, "kind": row.kind, "label": kind_label(row.kind), "status": row.status,
            "reason": row.last_error, "label_status": row.label_status, "label_detail": row.label_detail}
    if row.status == "written":
        view["text"] = _("Written to the chart")
    elif row.status == "failed":
        view["text"] = _("Not written to the chart")
    elif row.final_retry:
        view["text"] = _("The EHR did not take it. It is kept and will be tried once more; if that fails too, "
                         "social work is told and the note must be documented by hand.")
    elif row.attempts:
        view["text"] = _("Queued: the app will retry automatically")
    else:
        view["text"] = _("Queued to be written")
    view["state"] = "written" if row.status == "written" else "failed" if row.status == "failed" else "queued"
    return view


def referral_rows(referral_id: str) -> list[OutboxItem]:
    from fhir.builders import SEND_ORDER

    rows = list(get_session().scalars(select(OutboxItem).where(OutboxItem.referral_id == referral_id)))
    rows.sort(key=lambda r: SEND_ORDER.get(r.kind, 99))
    return rows


@bp.route("/consent/done", methods=["GET"])
@launch_required
def confirmation() -> Response | str:
    rid = (g.launch.data.get("writeback") or {}).get("referral_id")
    if not rid:
        return redirect(url_for("writeback.consent", lid=g.launch.id))
    use_launch_locale(g.launch)
    views = [row_view(r) for r in referral_rows(rid)]
    return render_template("writeback/confirmation.html", lid=g.launch.id, rows=views,
                           any_failed=any(v["state"] == "failed" for v in views),
                           any_queued=any(v["state"] == "queued" for v in views),
                           any_flagged=any(v["label_status"] == "flagged" for v in views))


@bp.route("/consent/retry", methods=["POST"])
@launch_required
def retry_now() -> Response:
    """'Try again now' on the confirmation page: sends what is due for this referral only."""
    rid = (g.launch.data.get("writeback") or {}).get("referral_id")
    if rid:
        send_now(rid)
    return redirect(url_for("writeback.confirmation", lid=g.launch.id))


# -- CLI ------------------------------------------------------------------------------------------------------
@bp.cli.command("outbox-run-once")
@click.option("--drain", is_flag=True, help="Keep going until nothing is pending (or --max-seconds).")
@click.option("--max-seconds", default=60.0, show_default=True)
def outbox_run_once(drain: bool, max_seconds: float) -> None:
    """Send the due chart writes once (cron-friendly)."""
    app = current_app._get_current_object()
    worker = OutboxWorker(app, client_for=None, timeout=app.config.get("HTTP_TIMEOUT_SECONDS"))
    stats = worker.drain(max_seconds=max_seconds) if drain else worker.run_once()
    click.echo(f"claimed={stats.claimed} written={stats.written} retrying={stats.retrying} "
               f"failed={stats.failed} deferred={stats.deferred} label_flags={stats.label_flags}")


@bp.cli.command("outbox-worker")
@click.option("--idle-sleep", default=1.0, show_default=True, help="Seconds to wait when nothing is due.")
def outbox_worker(idle_sleep: float) -> None:
    """Run the outbox worker until interrupted (run several: rows are claimed, never sent twice)."""
    app = current_app._get_current_object()
    worker = OutboxWorker(app, client_for=None, timeout=app.config.get("HTTP_TIMEOUT_SECONDS"))
    click.echo(f"outbox worker {worker.worker_id} running")
    try:
        worker.loop(idle_sleep=idle_sleep)
    except KeyboardInterrupt:
        click.echo("stopped")

