"""Consent and chart write-back: the patient decides, the outbox writes, the clinician sees each result.

Consent = payload: the consent page is rendered from the very payload that goes to the outbox
(``plan_writeback`` with this launch's referral key): each resource in plain words, the exact note text
(decoded from the planned DocumentReference) and the script read to the patient. Any change on the page
(channel, channel note, detail option, resources) re-renders the preview -- live through
``/l/<lid>/consent/preview`` (static/consent_preview.js; CSP allows only 'self' scripts) or with the
"Update preview" button without JavaScript. The page carries a digest of what it shows; the POST is
refused (nothing written, page shown again) when the server's plan differs.

Order: consent only after a completed screen in this launch (or the clinician's explicit "the patient
asks for a referral" after a negative/declined screen); otherwise 409. One referral per launch by a
database constraint (ReferralRecord.launch_id unique, the referral key as primary key).

The POST only stores the outbox rows and returns: the worker (``flask outbox-worker``; a thread in
``make demo``) does all sending, and the confirmation page polls ``/l/<lid>/progress`` (a neutral,
PHI-free JSON status) until each write is written, failed or "check the chart".
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from config.current import current_settings
from config.ehr_profile import EhrProfile
from config.ehrs import ehr_id_for
from fhir.builders import ALL_RESOURCES, Offer, WritebackInput, WriteRules, plan_writeback, reference_code, writable
from smart_app.launch.locale import use_bilingual_locale
from smart_app.launch.state import launch_required
from smart_app.launch.visit_memory import encounter_key, patient_key, visit_referral
from smart_app.ops.i18n import ReadAloud
from smart_app.ops.i18n import gettext as _
from smart_app.ops.i18n import read_aloud as p_  # read-aloud lines: extracted with ``-k p_``, shown in both languages
from smart_app.ops.profiles import current_profile, profile_for
from smart_app.outbox.enqueue import enqueue
from smart_app.outbox.settings import OutboxSettings
from smart_app.outbox.state import utcnow
from smart_app.outbox.status import kind_label, referral_rows, row_view
from smart_app.ranking.memo import clock as app_clock
from smart_app.referral.channels import CHANNELS, channel_label
from smart_app.referral.programs import language_of, ranking_for, stored
from smart_app.report import events
from smart_app.screening import handoff
from smart_app.store.crypto import encrypt_json
from smart_app.store.db import get_session
from smart_app.store.models import OutboxItem, ReferralRecord
from smart_app.worklist import interpreter
from smart_app.worklist.due import due_for_referral
from smart_app.worklist.routing import COVERAGE, FALLBACK, routing_of, team_named
from smart_app.worklist.scope import (
    add_site_keys,
    program_keys_of,
    program_rows,
    referral_site_keys,
    site_display_name,
)
from smart_app.worklist.search import mrn_key_of
from smart_app.writeback.note import with_note
from smart_app.writeback.plain import words_for

warmup_log = logging.getLogger("ipv.warmup")
bp = Blueprint("writeback", __name__, template_folder="templates", url_prefix="/l/<lid>")

SITE_SYSTEM = "urn:ipv-sandbox:site"
MAX_NOTE = 200
MAX_DETAIL = 2000




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


# -- order ---------------------------------------------------------------------------------------------------
def screen_state(launch: Any) -> str:
    """'positive' (consent may be asked), 'other' (negative/declined: only if the patient asks), 'none'."""
    screening = launch.data.get("screening") or {}
    if not screening.get("completed_at"):
        return "none"
    if screening.get("interpretation") == "positive" or screening.get("danger"):
        return "positive"
    return "other"


def _out_of_order(message: str) -> tuple[str, int]:
    return render_template("error.html", title=_("Not yet"), message=message), 409


# -- the plan shown = the plan written -------------------------------------------------------------------------
def granted_scope(launch: Any) -> str:
    """The token's granted scope; a token response without ``scope`` grants what was asked (RFC 6749 5.1)."""
    scope = launch.typed_context.scope or str(launch.tokens.get("scope") or "")
    if not scope.strip():
        settings = current_settings()
        scope = settings.scopes_ehr if launch.kind == "ehr" else settings.scopes_standalone
    return scope


SITE_RULES_ENTRIES = 16  # settings x profiles of one app, with room (tests replace the settings)


def site_rules(profile: EhrProfile) -> WriteRules:
    """What this site writes to this EHR: the profile's rules, with the broadly visible kinds (a problem list entry,
    the score row) only where the deployment turns them on (config/deployment.py BroadlyVisible).

    Made once per app, settings and profile (the consent page asks twice a request, and building the rules from
    the profile's models is most of the cost); kept beside the objects they came from, so settings replaced or
    another profile make new rules. The rules are frozen and hold nothing of a launch."""
    settings = current_settings()
    cache: dict[tuple[int, int], tuple[Any, EhrProfile, WriteRules]] = \
        current_app.extensions.setdefault("ipv_site_rules", {})
    kept = cache.get((id(settings), id(profile)))
    if kept is not None and kept[0] is settings and kept[1] is profile:
        return kept[2]
    rules = settings.broadly_visible.narrow(profile.write_rules)
    if len(cache) >= SITE_RULES_ENTRIES:
        cache.clear()
    cache[(id(settings), id(profile))] = (settings, profile, rules)
    return rules


def offer_for(launch: Any, profile: EhrProfile) -> Offer:
    ctx = launch.typed_context
    screening = launch.data.get("screening") or {}
    return writable(site_rules(profile), granted_scope(launch), has_encounter=bool(ctx.encounter_id),
                    has_author=bool(ctx.user.reference),
                    has_screening=bool(screening.get("completed_at")))


def referral_key(launch: Any) -> str:
    """This launch's referral id, fixed before consent: the note's reference code and every business
    identifier derive from it, so the preview and the outbox hold the same payload."""
    key = (launch.data.get("writeback_plan") or {}).get("key")
    if not key:
        key = secrets.token_urlsafe(24)
        launch.update_data(writeback_plan={"key": key})
        launch.save()
    return key


def choices_from(form: Any, profile: EhrProfile, offer: Offer) -> dict[str, Any]:
    """The page's choices from a form (or nothing posted yet: the defaults -- no channel, optional off)."""
    posted = form.get("shown") == "1"
    channel = form.get("channel") if form.get("channel") in CHANNELS else None
    note = (form.get("contact_note") or "").strip()[:MAX_NOTE] or None
    detailed = profile.detailed_note_allowed and form.get("detailed") == "yes"
    detail_text = (form.get("detail_text") or "").strip()[:MAX_DETAIL] if detailed else ""
    if posted:
        chosen = [k for k in form.getlist("resources") if k in offer.kinds]
    else:
        chosen = [k for k in profile.resources if k in offer.kinds]
    if "DocumentReference" in offer.kinds and "DocumentReference" not in chosen:
        chosen.append("DocumentReference")  # the note is what consent is about; always written where possible
    return {"channel": channel, "contact_note": note if channel and channel != "none" else None,
            "detailed": detailed, "detail_text": detail_text,
            "resources": [k for k in offer.kinds if k in chosen],
            "patient_asks": form.get("patient_asks") == "yes"}


def _input(launch: Any, key: str, choices: dict[str, Any]) -> WritebackInput:
    ctx, data = launch.typed_context, launch.data
    screening = data.get("screening") or {}
    inp = WritebackInput(
        referral_key=key, patient_id=ctx.patient_id, encounter_id=ctx.encounter_id,
        author_reference=ctx.user.reference, author_name=ctx.user.name, screening=screening,
        referral=data.get("referral") or {},
        resources=list(choices["resources"]),
        safe_contact={"channel": choices["channel"], "note": choices["contact_note"]},
        urgent=handoff.urgent_now(data), patient_asked=choices["patient_asks"],
    )
    return with_note(inp, choices["detail_text"] if choices["detailed"] else None)


def describe(plans: list[Any], launch: Any, profile: EhrProfile) -> list[dict[str, str]]:
    """Each planned resource in plain words (what the clinician reads, what the digest covers)."""
    screening = launch.data.get("screening") or {}
    out = [{"kind": plan.kind, "label": kind_label(plan.kind), "words": words_for(plan.kind, plan.resource, screening)}
           for plan in plans]
    return out


def script_for(kinds: list[str]) -> list[ReadAloud]:
    """What the clinician reads to the patient, in the patient's language with the clinician's beneath: it names
    every resource that will be written."""
    lines = []
    if "DocumentReference" in kinds:
        lines.append(p_("“May I add a short, confidential note to your health record saying that you were "
                        "referred for support? It will not describe what happened to you.”"))
    else:
        lines.append(p_("“May I record that you were referred for support, so that social work can follow up?”"))
    if "ServiceRequest" in kinds:
        lines.append(p_("“A referral order to the program will also be recorded.”"))
    if "Observation" in kinds:
        lines.append(p_("“A screening score will be recorded.”"))
    if "QuestionnaireResponse" in kinds:
        lines.append(p_("“Your answers to the screening questions will be recorded.”"))
    if "Task" in kinds:
        lines.append(p_("“A follow-up task for social work will be recorded.”"))
    if "Condition" in kinds:
        lines.append(p_("“It will also be listed among your health problems, which appear in visit summaries.”"))
    return lines


def note_from(plans: list[Any]) -> str | None:
    """The exact note text, decoded from the planned DocumentReference (what the EHR will store)."""
    for plan in plans:
        if plan.kind == "DocumentReference":
            return base64.b64decode(plan.resource["content"][0]["attachment"]["data"]).decode("utf-8")
    return None


def not_offered_words(offer: Offer, profile: EhrProfile) -> list[dict[str, str]]:
    out = []
    for kind, (reason, detail) in offer.not_offered.items():
        if reason == "ehr" and kind not in ("DocumentReference", "ServiceRequest"):
            continue  # not something this EHR takes from apps at all: no need to list every one
        text = {
            "ehr": _("this EHR does not accept it from apps"),
            "scope": _("the EHR did not give this app permission to write it (needs %(scope)s)", scope=detail),
            "encounter": _("this EHR needs the visit's encounter, and this launch has none"),
            "author": _("this EHR needs the signed-in clinician as the note's author, and the launch did not "
                        "say who is signed in"),
            "screen": _("there is no completed screen to record"),
            "referral": _("it needs the referral order, which is not offered"),
        }.get(reason, reason)
        out.append({"kind": kind, "label": kind_label(kind), "why": text})
    return out


def protection_words(profile: EhrProfile) -> str:
    note_type = profile.document_type.get("display") or profile.document_type.get("code")
    if profile.labels_protect:
        return _("Everything written is marked restricted and sensitive (security labels), so the EHR can keep it "
                 "out of the patient portal and other shared views.")
    return _("This EHR does not keep confidentiality labels, so the note is filed as the site's restricted note "
             "type “%(type)s”, which only authorised staff can open.", type=note_type)


def view_model(launch: Any, profile: EhrProfile, choices: dict[str, Any], offer: Offer | None = None) -> dict[str, Any]:
    """Everything the consent page shows, built from the planned payload, and its digest."""
    offer = offer or offer_for(launch, profile)
    plans = plan_writeback(_input(launch, referral_key(launch), choices), site_rules(profile)) \
        if choices["resources"] else []
    items = describe(plans, launch, profile)
    note = note_from(plans)
    kinds = [p.kind for p in plans]
    script = [line.as_data() for line in script_for(kinds)]
    # Both languages of every read-aloud line are in the digest: consent is to the words said and shown.
    shown = {"items": [[i["kind"], i["words"]] for i in items], "note": note, "script": script,
             "channel": choices["channel"], "contact_note": choices["contact_note"]}
    digest = hashlib.sha256(json.dumps(shown, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return {"plans": plans, "plan_items": items, "note": note, "script": script, "script_kinds": kinds,
            "digest": digest, "not_offered": not_offered_words(offer, profile), "offer": offer, "choices": choices,
            "protection": protection_words(profile)}


def _render_consent(launch: Any, profile: EhrProfile, vm: dict[str, Any], *, error: str | None = None,
                    status: int = 200) -> tuple[str, int]:
    form = request.form if request.method == "POST" else request.args
    return render_template(
        "writeback/consent.html", lid=launch.id, profile=profile, vm=vm, c=vm["choices"], error=error,
        interp_ask=interpreter.from_ehr(launch.context) is None,
        interp=interpreter.answer(form, launch.context, launch.data.get("interpreter")),
        interp_own=interpreter.own_option(launch.context), interp_listed=interpreter.listed_options(),
        interp_choice=_interp_choice(form, launch),
        channels=CHANNELS, channel_label=channel_label, kind_label=kind_label,
        ask_channel=p_("“If a program or the clinic needs to reach you, which way is safe, if any?”"),
        screen=screen_state(launch), has_patient=bool(launch.typed_context.patient_id)), status


def _interp_choice(form: Any, launch: Any) -> str | None:
    return form.get("interpreter") or (launch.data.get("interpreter") or {}).get("choice")


def with_programs(launch: Any) -> bool:
    """The referral's programs: reached before the programs page, the site's program (as that page ticks it by
    default). False when none is chosen (the clinician cleared them, or the visit has none): nothing is written."""
    ref = launch.data.get("referral") or {}
    if "selected" not in ref:
        language = g.get("patient_locale") or language_of(launch.context, g.get("locale") or "en")
        ref = stored(ref, ranking_for(launch, ref, language))
        launch.update_data(referral=ref)
        launch.save()
    return bool(ref.get("selected"))


def no_program_words() -> str:
    return _("Choose the program this referral goes to on the programs page (this site's program is ticked there "
             "unless it was cleared). Nothing was written.")


# -- pages -----------------------------------------------------------------------------------------------------
@bp.route("/consent", methods=["GET"])
@launch_required
def consent() -> Response | tuple[str, int] | str:
    if (g.launch.data.get("writeback") or {}).get("referral_id"):
        return redirect(url_for("writeback.confirmation", lid=g.launch.id))
    use_bilingual_locale(g.launch)
    if screen_state(g.launch) == "none":
        return _out_of_order(_("Consent to write to the chart is asked after the screening is completed in this "
                               "visit. Start or finish the screening first."))
    has_program = with_programs(g.launch)
    profile = current_profile()
    offer = offer_for(g.launch, profile)
    vm = view_model(g.launch, profile, choices_from(request.args, profile, offer), offer)
    return _render_consent(g.launch, profile, vm, error=None if has_program else no_program_words())


@bp.route("/consent/preview", methods=["POST"])
@launch_required
def preview() -> Response:
    """Live preview for the page's script: the same view model, as JSON (POST body, nothing in the URL)."""
    use_bilingual_locale(g.launch)
    with_programs(g.launch)
    profile = current_profile()
    offer = offer_for(g.launch, profile)
    vm = view_model(g.launch, profile, choices_from(request.form, profile, offer), offer)
    return jsonify({"note": vm["note"], "items": vm["plan_items"], "script": vm["script"], "digest": vm["digest"]})


@bp.route("/consent", methods=["POST"])
@launch_required
def consent_post() -> Response | tuple[str, int] | str:
    launch = g.launch
    use_bilingual_locale(launch)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if (launch.data.get("writeback") or {}).get("referral_id"):  # double submit: never a second referral
        return redirect(url_for("writeback.confirmation", lid=launch.id))
    action = request.form.get("consent") or request.form.get("action")
    if action == "no":
        # No consent: nothing is built, queued or sent.
        launch.update_data(consent={"status": "declined", "at": now})
        launch.save()
        return render_template("writeback/declined.html", lid=launch.id)
    state = screen_state(launch)
    if state == "none":
        return _out_of_order(_("Nothing was written: consent can only be recorded after the screening is "
                               "completed in this visit."))
    if not launch.typed_context.patient_id:
        return render_template("error.html", title=_("No patient"),
                               message=_("This launch has no patient, so nothing can be written.")), 400
    db = get_session()
    has_program = with_programs(launch)
    profile = current_profile()
    offer = offer_for(launch, profile)
    choices = choices_from(request.form, profile, offer)
    vm = view_model(launch, profile, choices, offer)
    if action != "yes":  # "Update preview" (works without JavaScript)
        return _render_consent(launch, profile, vm)
    earlier = visit_referral(db, launch.iss, launch.context, exclude_launch=launch.id)
    second = request.form.get("second_referral") == "yes" or bool((launch.data.get("referral") or {})
                                                                   .get("second_referral"))
    if earlier is not None and not second:  # answered on the programs page, before the conversation
        # Another launch already referred this patient for this visit: a second one only by explicit choice.
        return render_template("worklist/second_referral.html", lid=launch.id, earlier=earlier,
                               form=request.form), 409
    if state == "other" and not choices["patient_asks"]:
        return _out_of_order(_("Nothing was written: after a negative or declined screen, a referral is recorded "
                               "only when the patient asks for one. Go back and tick “The patient asks for a "
                               "referral”."))
    if not choices["channel"]:
        return _render_consent(launch, profile, vm, status=422, error=_(
            "Ask the patient how the program may contact them safely (or that no contact is safe) before "
            "asking consent. Nothing was written."))
    if not has_program:
        return _render_consent(launch, profile, vm, status=422, error=no_program_words())
    if request.form.get("digest") != vm["digest"]:
        return _render_consent(launch, profile, vm, status=409, error=_(
            "What you were about to agree to changed. Nothing was written. Read the updated page with the "
            "patient and ask again."))
    referral = launch.data.get("referral") or {}
    sc = {"channel": choices["channel"], "note": choices["contact_note"]}
    plans = vm["plans"]
    interp = interpreter.answer(request.form, launch.context, launch.data.get("interpreter"))
    summary = _summary(launch, referral, sc, [p.kind for p in plans], interp)
    # The summary goes in with the row's INSERT (set after the flush, it cost a second statement, an UPDATE).
    rid = referral_key(launch)
    site = site_key(launch.context, referral)
    site_keys = referral_site_keys(launch.context, site)
    deployment = current_settings()
    route = routing_of(deployment).route(ehr_id_for(launch.iss, deployment), site_keys)
    created, urgent = app_clock(), handoff.urgent_now(launch.data)
    due = due_for_referral(current_app, created, urgent, route.team.program if route.team else None, launch.context)
    programs = program_rows(rid, summary["programs"])  # the queue's program filter and counts without the summary
    record = ReferralRecord(id=rid, launch_id=launch.id, iss=launch.iss, profile=profile.ref,
                            site=site, site_name=site_display_name(launch.context),
                            ehr=route.ehr, route_kind=route.kind, route_team=route.team_id,
                            patient_key=patient_key(launch.iss, launch.context),
                            encounter_key=encounter_key(launch.iss, launch.context),
                            reference_code=reference_code(rid), mrn_key=mrn_key_of(launch.context),
                            program_keys=program_keys_of(p.key for p in programs),
                            urgent=urgent, handoff=handoff.referral_code(launch.data), created_at=created,
                            due_at=due, status="requested", summary_enc=encrypt_json(summary))
    db.add(record)
    try:
        db.flush()  # the unique constraint decides between concurrent consent POSTs
    except IntegrityError:
        db.rollback()
        return redirect(url_for("writeback.confirmation", lid=launch.id))
    add_site_keys(db, record.id, site_keys)
    db.add_all(programs)
    enqueue(db, referral_id=record.id, launch_id=launch.id, iss=launch.iss, profile=profile,
            plans=plans, settings=OutboxSettings.for_app(current_app, profile))
    launch.update_data(consent={"status": "given", "at": now, "detailed": bool(choices["detailed"]),
                                "patient_asked": bool(choices["patient_asks"]), "digest": vm["digest"]},
                       writeback={"referral_id": record.id}, interpreter=interpreter.kept_form(interp),
                       referral={**referral, "safe_contact": sc})
    events.referral_made(launch, record)  # counted in the referral's own transaction
    try:
        db.commit()  # one commit, durable; the worker sends. No EHR call in this request.
    except IntegrityError:
        db.rollback()
    return redirect(url_for("writeback.confirmation", lid=launch.id))


def _summary(launch: Any, referral: dict[str, Any], sc: dict[str, Any], kinds: list[str],
             interp: interpreter.Answer) -> dict[str, Any]:
    """What social work needs to follow up — no screening answers or score."""
    ctx = launch.context
    patient = ctx.get("patient") or {}
    results = {r.get("service_id"): r for r in referral.get("results") or []}
    programs = [{"id": s, "name": results[s].get("program") or results[s].get("name"),
                 "phone": results[s].get("phone")}
                for s in referral.get("selected") or [] if s in results]
    encounter = ctx.get("encounter") or {}
    return {"patient_name": patient.get("name"), "mrn": patient.get("mrn"), "patient_id": patient.get("id"),
            "language": patient.get("language"), "languages": patient.get("languages") or [],
            **interpreter.summary_part(interp), "encounter_start": encounter.get("start"),
            "programs": programs, "safe_contact": sc,
            "clinician": (ctx.get("user") or {}).get("name"), "kinds": kinds,
            "handoff": handoff.summary_part(launch.data)}


def _status_payload(rows: list[OutboxItem]) -> dict[str, Any]:
    views = [row_view(r) for r in rows]
    done = all(v["state"] != "queued" for v in views)
    return {"rows": views, "done": done, "settled": done and all(v["label_status"] != "unverified" for v in views),
            "any_failed": any(v["state"] == "failed" for v in views),
            "any_check": any(v["state"] == "check" for v in views),
            "any_queued": any(v["state"] == "queued" for v in views),
            "any_flagged": any(v["label_status"] == "flagged" for v in views)}


@bp.route("/consent/done", methods=["GET"])
@launch_required
def confirmation() -> Response | str:
    rid = (g.launch.data.get("writeback") or {}).get("referral_id")
    if not rid:
        return redirect(url_for("writeback.consent", lid=g.launch.id))
    use_bilingual_locale(g.launch)
    status = _status_payload(referral_rows(rid))
    profile = current_profile()
    return render_template("writeback/confirmation.html", lid=g.launch.id, status=status,
                           who_sees=who_sees(get_session().get(ReferralRecord, rid)),
                           protection=protection_words(profile), rows=status["rows"],
                           any_failed=status["any_failed"], any_queued=status["any_queued"],
                           any_check=status["any_check"], any_flagged=status["any_flagged"])


def who_sees(record: ReferralRecord | None) -> str:
    """Who will see this referral, as the route given at creation says: never more than is true."""
    kind = record.route_kind if record is not None else None
    team = team_named(current_settings(), record.route_team) if record is not None else None
    if kind == COVERAGE and team is not None:
        return _("What social work does next: %(team)s sees this referral in the confidential queue, contacts the "
                 "patient only the way the patient chose as safe (never when no way is safe), and records each "
                 "step there. You do not need to do anything else in the app.", team=team.name)
    if kind == COVERAGE:
        return _("What social work does next: the social workers who cover this site see this referral in the "
                 "confidential queue, contact the patient only the way the patient chose as safe (never when no "
                 "way is safe), and record each step there. You do not need to do anything else in the app.")
    if kind == FALLBACK and team is not None:
        return _("What social work does next: %(team)s sees this referral — this site has no assigned team yet. "
                 "They contact the patient only the way the patient chose as safe (never when no way is safe).",
                 team=team.name)
    if record is not None and not record.site and not record.site_name:
        return _("What social work does next: the EHR did not say where this visit is, so no site's team can be "
                 "chosen: this referral waits at the top of the queue of every social worker of this EHR, flagged "
                 "as having no team, until one of them takes it. They contact the patient only the way the patient "
                 "chose as safe (never when no way is safe).")
    return _("What social work does next: this site has no assigned social-work team yet, so this referral waits "
             "at the top of the queue of every social worker of this EHR, flagged as having no team, until one of "
             "them takes it. They contact the patient only the way the patient chose as safe (never when no way is "
             "safe).")


@bp.route("/progress", methods=["GET"])
@launch_required
def progress() -> Response:
    """Live write status for the confirmation page: no PHI (kinds, states, PHI-free reasons), neutral path."""
    use_bilingual_locale(g.launch)
    rid = (g.launch.data.get("writeback") or {}).get("referral_id")
    payload = _status_payload(referral_rows(rid)) if rid else {"rows": [], "done": True, "settled": True}
    for row in payload["rows"]:
        row.pop("label_detail", None)
    return jsonify(payload)


@bp.route("/consent/retry", methods=["POST"])
@launch_required
def retry_now() -> Response:
    """'Try again now': makes this referral's queued writes due at once; the worker sends them."""
    rid = (g.launch.data.get("writeback") or {}).get("referral_id")
    if rid:
        db = get_session()
        db.execute(update(OutboxItem).where(OutboxItem.referral_id == rid, OutboxItem.status == "pending")
                   .values(next_attempt_at=utcnow()))
        db.commit()
    return redirect(url_for("writeback.confirmation", lid=g.launch.id))


def warm_up(app: Flask) -> None:
    _validate_a_made_up_plan(app)


def _validate_a_made_up_plan(app: Flask) -> None:
    """Plan (and so validate) every kind of chart write for an invented visit: the nested models' validators
    (CodeableConcept, Reference, Attachment...) are built here, not in the first consent page of a worker."""
    inp = WritebackInput(referral_key="warm-up", patient_id="warm-up", encounter_id="warm-up",
                         author_reference="Practitioner/warm-up", author_name="Warm-up",
                         screening={"instrument": "warm-up", "questionnaire": "urn:warm-up", "version": "1", "score": 0,
                                    "interpretation": "negative", "answers": {},
                                    "completed_at": "2000-01-01T00:00:00+00:00"},
                         referral={}, resources=list(ALL_RESOURCES))
    inp = with_note(inp)
    try:
        plan_writeback(inp, profile_for(app).write_rules)
    except Exception as exc:  # noqa: BLE001 - a warm-up that cannot run leaves the work to the first request
        warmup_log.warning("warm-up: chart write models not warmed (%s)", type(exc).__name__)
