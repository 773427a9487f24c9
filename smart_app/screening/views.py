"""Private screening: gate, instrument, score, danger check, result (urgent path first when in danger).

Nothing here writes to the chart or logs answers: the result lives only in the
launch's encrypted server-side state (``data["screening"]``) for referral and write-back.
Answers travel only in POST bodies (POST, then redirect), never in a URL.

Instruments are FHIR Questionnaire files (``fhir/questionnaires``); every page is rendered
from the file, so no code here knows one instrument from another. They are loaded and
checked when the blueprint is registered (inside ``create_app``): a malformed file stops
start-up with ``InstrumentError`` naming the file and the problem.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, abort, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from config.current import current_settings, settings_of
from fhir.questionnaires import DEFAULT_DIR, IncompleteAnswers, Instrument, load_instruments
from referrals.store import store_for
from referrals.visit import Visit
from smart_app.launch import resume
from smart_app.launch.locale import launch_view
from smart_app.launch.state import reads_with_launch
from smart_app.launch.visit_memory import WITH_FOLLOWUPS, WITH_RECENT, gate_memory, open_followups
from smart_app.ops.audit import record_audit
from smart_app.ops.i18n import instrument_note
from smart_app.report import events
from smart_app.screening import education, handoff
from smart_app.screening.record import store_screen
from smart_app.screening.summary import check_summary, next_step, screen_summary
from smart_app.screening.urgent import urgent_box
from smart_app.store.db import get_session

bp = Blueprint("screening", __name__, template_folder="templates", url_prefix="/l/<lid>")
log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]

# The on-site advocate programs as the seed resource page gives them; used only when the
# referral directory cannot be read (the directory is the source of truth).
SEED_ADVOCATES: tuple[dict[str, Any], ...] = (
    {"program": "Passageway at BWH", "main": "1-617-732-8753", "pager": "1-617-732-5520 ext. 31808",
     "sites": {"bwh", "bw-faulkner", "sjphc", "brookside", "whittier"},
     "orgs": {"brigham and women s hospital", "brigham and women s faulkner hospital", "brigham health",
              "mass general brigham"}},
    {"program": "HAVEN at MGH", "main": "1-617-724-0054", "pager": "1-617-726-2241",
     "sites": {"mgh", "mgh-chelsea", "mgh-revere"},
     "orgs": {"massachusetts general hospital", "mgh", "mass general hospital"}},
)


# ---------------------------------------------------------------------------- start-up


class ScreeningConfigError(RuntimeError):
    """The deployment names an instrument that is not there; the message says which setting."""


def _record(state: Any) -> None:
    init_instruments(state.app)


bp.record_once(_record)


def init_instruments(app: Flask) -> None:
    """Load every instrument and check the deployment's choice; raise with a clear message if wrong."""
    settings = settings_of(app)
    dirs: list[Path] = [DEFAULT_DIR]
    for d in settings.instrument_dirs:
        p = Path(d)
        dirs.append(p if p.is_absolute() else ROOT / p)
    # The bundled Questionnaires are validated against the FHIR R4 model by the test suite; doing it again at every
    # start would import and build that model in every process. A site's own files are validated here.
    instruments = apply_cutoffs(load_instruments(dirs, validate_bundled=False), settings.cutoffs)
    screens = {k for k, i in instruments.items() if i.role == "screen"}
    offered = list(settings.offered_instruments or sorted(screens))
    default = settings.default_instrument or offered[0]
    known = ", ".join(sorted(screens))
    for key in offered:
        if key not in screens:
            raise ScreeningConfigError(f"offered_instruments: offered instrument {key!r} "
                                       f"not found among screening Questionnaires ({known})")
    if default not in offered:
        offered.insert(0, default)
        if default not in screens:
            raise ScreeningConfigError(f"default_instrument: default instrument "
                                       f"{default!r} not found among screening Questionnaires ({known})")
    checks = [k for k, i in instruments.items() if i.role == "danger-check"]
    danger = settings.danger_check or (checks[0] if checks else "")
    if danger and danger not in checks:
        raise ScreeningConfigError(f"danger_check: {danger!r} is not a Questionnaire with instrument-role "
                                   "danger-check")
    app.extensions["screening"] = {"instruments": instruments, "offered": offered, "default": default,
                                   "danger_check": danger or None}


def apply_cutoffs(instruments: dict[str, Instrument], cutoffs: Mapping[str, float]) -> dict[str, Instrument]:
    """A deployment's ``cutoffs: {e-hits: 9}`` replaces an instrument's declared threshold (same comparator).
    The file keeps the default and says why; a site may choose a published alternative (E-HITS: Chan 2010's
    >= 9 instead of Iverson 2015's >= 7)."""
    out = dict(instruments)
    for key, value in cutoffs.items():
        if key not in out:
            raise ScreeningConfigError(f"cutoffs: {key!r} is not an instrument ({', '.join(sorted(out))})")
        inst = out[key]
        out[key] = replace(inst, rule=replace(inst.rule, threshold=float(value)))
    return out


def _registry() -> dict[str, Any]:
    return current_app.extensions["screening"]


def _instrument(key: str | None) -> Instrument:
    reg = _registry()
    if key not in reg["offered"]:
        key = reg["default"]
    return reg["instruments"][key]


# ---------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _gate_ok() -> bool:
    return (g.launch.data.get("gate") or {}).get("status") == "confirmed"


def _answers_from_form(inst: Instrument) -> dict[str, str]:
    return {q.link_id: request.form.get(f"q-{q.link_id}", "") for q in inst.questions}


def _render_form(inst: Instrument, action: str, *, answers: dict[str, str] | None = None,
                 missing: list[str] | None = None, status: int = 200) -> tuple[str, int]:
    reg = _registry()
    others = [reg["instruments"][k] for k in reg["offered"] if k != inst.key] if inst.role == "screen" else []
    summary = None
    plang = g.get("patient_locale") or g.locale
    screening = g.launch.data.get("screening")
    if inst.role == "danger-check" and screening:
        summary = (screen_summary(reg["instruments"].get(screening["instrument"]), screening) + " "
                   + next_step(screening, None if screening.get("physical_violence") else {}))
    return render_template(
        "screening/instrument.html", lid=g.launch.id, inst=inst, lang=g.locale, action=action,
        answers=answers or {}, missing=missing or [], others=others, summary=summary, plang=plang,
        translation_line=instrument_note(inst.translation_status.get(plang) if inst.has_version(plang) else None,
                                         plang),
        questions=None if answers or missing else question_html(inst, g.locale, plang),
    ), status


def question_html(inst: Instrument, lang: str, plang: str) -> Markup:
    """The instrument's questions and answer choices with nothing marked, rendered once per instrument and
    languages (the same for every patient: no answers, no launch) and reused by every blank form."""
    cache: dict[tuple[str, str, str], Markup] = _registry().setdefault("question_html", {})
    key = (inst.key, lang, plang)
    html = cache.get(key)
    if html is None:
        html = cache[key] = Markup(render_template("screening/_questions.html", inst=inst, lang=lang, plang=plang,
                                                   answers={}, missing=[]))
    return html


def site_advocates(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The advocate program(s) serving this encounter's site, with main line and after-hours pager.

    Read from the referral directory (the same store and site matching as the referral page);
    falls back to the seed's two programs when the directory cannot be read. Without any encounter
    site we list every program we know; a site that matches none (a hospital outside these networks)
    gets none rather than another hospital's pager."""
    encounter = context.get("encounter") or {}
    ids, names = set(), set()
    for loc in encounter.get("locations") or []:
        ids.update(f"{i.get('system')}|{i.get('value')}" for i in loc.get("identifiers") or [])
        if loc.get("name"):
            names.add(loc["name"])
    provider = (encounter.get("service_provider") or {}).get("name")
    placed = bool(ids or names or provider)
    try:
        return _advocates_from_directory(context, placed)
    except Exception as exc:  # noqa: BLE001 - the urgent path must render even without the directory
        log.warning("referral directory unavailable for the advocate pager: %s", type(exc).__name__)
    return _advocates_from_seed(ids, provider, placed)


def _advocate_entry(service: Any) -> dict[str, Any] | None:
    pager = service.after_hours_phone()
    if pager is None or pager.channel != "pager":
        return None
    main = service.main_phone()
    return {"program": service.program, "name": service.name, "main": main.dial() if main else None,
            "pager": pager.dial(), "pager_label": pager.label}


def _advocates_from_directory(context: dict[str, Any], placed: bool) -> list[dict[str, Any]]:
    index = store_for(current_app).index
    site_map = current_settings().site_map or None
    _site, service, _on_site = index.match_site(Visit.from_context(context), site_map)
    if service is not None:
        entry = _advocate_entry(service)
        return [entry] if entry else []
    if placed:
        return []
    return [e for e in (_advocate_entry(s) for s in index.directory.services) if e]


def _advocates_from_seed(ids: set[str], provider: str | None, placed: bool) -> list[dict[str, Any]]:
    keys = {i.split("|", 1)[1] for i in ids if "|" in i}
    prov = " ".join("".join(c if c.isalnum() else " " for c in (provider or "").lower()).split())
    entries = [dict(a, name={"en": a["program"]}, pager_label={}) for a in SEED_ADVOCATES]
    matched = [e for e in entries if e["sites"] & keys or prov in e["orgs"]]
    return matched if placed else entries


# ---------------------------------------------------------------------------- views


@bp.route("/", methods=["GET"])
@launch_view
@reads_with_launch(WITH_RECENT, WITH_FOLLOWUPS)
def start() -> str:
    """The private gate: nothing is asked before the clinician confirms the patient is alone. Universal education
    comes first, for every patient; an open follow-up of this patient (a positive self-screen with no response
    recorded) is asked for above everything."""
    events.checkin(g.launch)  # the launches universal education is counted against
    screened = bool(g.launch.data.get("screening"))
    # The patient's earlier referral or screen (shown until this launch screens) and open follow-ups: read with the
    # launch, in its statement (fresh each request); else, for a launch without keys, in one read of their own.
    earlier, followups = gate_memory(get_session(), g.launch.iss, g.launch.context, g.launch.id,
                                     with_recent=not screened, read=g.launch.read)
    return render_template("screening/gate.html", lid=g.launch.id, gate=g.launch.data.get("gate"),
                           done=screened, resume_offer=bool(g.launch.data.get("resume_offer")),
                           resume_minutes=resume.RESUME_WINDOW // timedelta(minutes=1),
                           earlier=earlier, followups=followups, **_education(alone=True))


def _followups() -> list[Any]:
    return open_followups(get_session(), g.launch.iss, g.launch.context, g.launch.id, read=g.launch.read)


def _education(*, alone: bool) -> dict[str, Any]:
    """The universal-education step's template values: the lines to read (made where the page renders them, not
    once they are kept), whether it was offered, its sources."""
    return {"edu_lines": education.script, "edu_offered": education.offered(g.launch.data),
            "edu_sources": education.sources(), "edu_alone": alone}


# Where "Offered" returns: the page the step was on.
EDUCATION_BACK = {"start": "screening.start", "not_now": "screening.not_now"}


@bp.route("/education", methods=["POST"])
@launch_view
def education_offered() -> Response:
    """The clinician offered the words and the card: recorded once for this launch, never the patient's answer."""
    if not education.offered(g.launch.data):
        g.launch.update_data(education={"offered": True})
        events.education_offered(g.launch)  # commits the launch's state with the count
    back = EDUCATION_BACK.get(request.form.get("back") or "", EDUCATION_BACK["start"])
    return redirect(url_for(back, lid=g.launch.id) + "#education")


@bp.route("/gate", methods=["POST"])
@launch_view
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
    return redirect(url_for("screening.questions", lid=lid))


@bp.route("/resume", methods=["POST"])
@launch_view
def resume_choice() -> Response:
    """The gate's offer after an accidental quick exit: continue the ended launch's screening here, or start
    over. Either way the ended launch's answers are deleted now (smart_app/launch/resume.py)."""
    lid = g.launch.id
    old_id = g.launch.pop_data("resume_offer")
    db = get_session()
    if old_id and request.form.get("action") == "continue":
        carried = resume.take_over(db, old_id, g.launch.iss, g.launch.context)
        if carried:
            g.launch.update_data(**carried)
    elif old_id:
        resume.start_over(db, old_id, g.launch.iss, g.launch.context)
    g.launch.save()
    data = g.launch.data
    if data.get("screening"):
        return redirect(url_for("screening.result", lid=lid))
    if (data.get("gate") or {}).get("status") == "confirmed":
        return redirect(url_for("screening.questions", lid=lid))
    return redirect(url_for("screening.start", lid=lid))


@bp.route("/not-now", methods=["GET"])
@launch_view
def not_now() -> str:
    """Not alone: nothing is asked, and the card is still offered, with its neutral line only."""
    events.checkin(g.launch)
    return render_template("screening/not_now.html", lid=g.launch.id, **_education(alone=False))


def _score_posted(inst: Instrument, action: str) -> tuple[Any, tuple[str, int] | None]:
    """Score the posted form: (result, None), or (None, the form again with a 400) when answers are missing."""
    declined = request.form.get("action") == "decline"
    answers = {} if declined else _answers_from_form(inst)
    try:
        if not declined and not any(answers.values()):
            # "Done" with nothing marked is a slip, not a refusal: declining has its own button.
            raise IncompleteAnswers([q.link_id for q in inst.questions])
        return inst.score(answers, declined=declined), None
    except IncompleteAnswers as exc:
        return None, _render_form(inst, action, answers=answers, missing=exc.missing, status=400)


@bp.route("/screen", methods=["GET", "POST"])
@launch_view
def questions() -> Response | tuple[str, int]:
    """The chosen instrument, rendered from its Questionnaire. POST scores it (or the danger check: both
    post here, so the access log shows the same paths whatever the answers)."""
    lid = g.launch.id
    if not _gate_ok():
        return redirect(url_for("screening.start", lid=lid))
    if request.method == "GET":
        inst = _instrument(request.args.get("instrument"))
        events.offered(g.launch, inst.key, g.get("patient_locale") or g.locale)  # the language asked in
        return _render_form(inst, url_for("screening.questions", lid=lid))
    if request.form.get("instrument") and request.form.get("instrument") == _registry()["danger_check"]:
        return _danger_posted()
    inst = _instrument(request.form.get("instrument"))
    result, ask_again = _score_posted(inst, url_for("screening.questions", lid=lid))
    if ask_again is not None:
        return ask_again
    store_screen(g.launch, inst, result, g.get("patient_locale") or g.locale)  # the language asked in
    g.launch.save()
    # No answers, score or interpretation in logs: with the access log's launch path, even
    # "positive" would tie a disclosure to a patient.
    log.info("screening completed")
    # Whatever the answers, the next page is /result: when the DA-5 follows (physical violence
    # reported: Snider 2009; Messing 2017) /result itself asks it first, so the URL sequence never tells.
    return redirect(url_for("screening.result", lid=lid))


def _danger_pending() -> bool:
    """A positive screen just posted whose danger check has not been answered (or declined) yet."""
    screening = g.launch.data.get("screening") or {}
    return (bool(screening.get("danger_check_due")) and bool(_registry()["danger_check"])
            and not g.launch.data.get("danger_check"))


def _danger_form() -> tuple[str, int]:
    inst = _registry()["instruments"][_registry()["danger_check"]]
    return _render_form(inst, url_for("screening.questions", lid=g.launch.id))


def _danger_posted() -> Response | tuple[str, int]:
    lid = g.launch.id
    screening = g.launch.data.get("screening")
    key = _registry()["danger_check"]
    if not screening or not key:
        return redirect(url_for("screening.start", lid=lid))
    inst = _registry()["instruments"][key]
    result, ask_again = _score_posted(inst, url_for("screening.questions", lid=lid))
    if ask_again is not None:
        return ask_again
    screening = dict(screening)
    items = sorted(set(screening.get("danger_items") or []) | set(result.danger_items))
    screening.update(danger=bool(screening.get("danger")) or result.danger, danger_items=items)
    g.launch.update_data(screening=screening, danger_check={
        "instrument": inst.key, "questionnaire": inst.url, "version": inst.version,
        "answers": {k: a.code for k, a in result.answers.items()}, "score": result.score,
        "interpretation": result.interpretation, "danger": result.danger, "completed_at": _now(),
    })
    events.screened(g.launch, screening)  # same transaction as the answers it counts
    handoff.offered(g.launch)  # high danger: the call to the advocate is offered (counted once)
    g.launch.save()
    return redirect(url_for("screening.result", lid=lid))


# A neutral path, reached only by the clinician's own choice from the result page ("Concerned anyway?"),
# after a negative screen as well as a positive one. Its form posts to /screen.
@bp.route("/more", methods=["GET", "POST"])
@launch_view
def danger() -> Response | tuple[str, int]:
    """The danger check (weapons, strangulation, fear for life, escalation) on the clinician's request."""
    lid = g.launch.id
    if not g.launch.data.get("screening") or not _registry()["danger_check"]:
        return redirect(url_for("screening.start", lid=lid))
    if request.method == "POST":
        return _danger_posted()
    return _danger_form()


@bp.route("/result", methods=["GET"])
@launch_view
@reads_with_launch(WITH_FOLLOWUPS)
def result() -> Response | str:
    lid = g.launch.id
    screening = g.launch.data.get("screening")
    if not screening:
        return redirect(url_for("screening.start", lid=lid))
    if _danger_pending():
        return _danger_form()
    reg = _registry()
    inst = reg["instruments"].get(screening["instrument"])
    check = g.launch.data.get("danger_check")
    db = get_session()
    # Read with the launch, in its statement (fresh each request: the tablet may open one at any moment); else, for a
    # launch without keys, in the transaction that read it, which the audit's commit ends.
    followups = _followups()
    record_audit("view_result", detail=screening["instrument"], db=db)
    db.commit()  # audited now, even if the page fails later (the request's session: no second connection)
    check_inst = reg["instruments"].get(check["instrument"]) if check else None
    plang = g.get("patient_locale") or g.locale
    advocates = site_advocates(g.launch.context)
    return render_template(
        "screening/result.html", lid=lid, s=screening, inst=inst, lang=g.locale, check=check,
        check_inst=check_inst, advocates=advocates, resources_key=_resources_key(advocates, g.locale),
        can_check=bool(reg["danger_check"]) and not check,
        summary=screen_summary(inst, screening),
        check_line=check_summary(check_inst, check, list(screening.get("danger_items") or []), g.locale)
        if check else None,
        next_line=next_step(screening, check),
        urgent=urgent_box(g.launch, plang),
        strangulation="strangulation" in (screening.get("danger_items") or []), plang=plang,
        followups=followups, followup_pending=request.args.get("pending") == "followup",
    )


def _resources_key(advocates: list[dict[str, Any]], lang: str) -> tuple[tuple[str, str | None], ...]:
    """What the resources list shows of the site's programs (directory facts): the key of its rendered HTML."""
    return tuple(((a["name"].get(lang) or a["program"]), a["main"]) for a in advocates)


# Where the urgent box's buttons return: the page the box was on.
STEP_BACK = {"result": "screening.result", "referrals": "referral.index"}


# One neutral path for the urgent box's two buttons, so the access log never says which was pressed.
@bp.route("/step", methods=["POST"])
@launch_view
def step() -> Response:
    """"I judge this urgent" (the warm hand-off is offered from now on) and the hand-off's outcome (how the call to
    the advocate ended). POST, then back to the page the box was on; nothing goes in a URL."""
    lid = g.launch.id
    if not g.launch.data.get("screening"):
        return redirect(url_for("screening.start", lid=lid))
    action = request.form.get("action")
    if action == "urgent":
        handoff.judge_urgent(g.launch)
    elif action == "outcome":
        box = urgent_box(g.launch, g.get("patient_locale") or g.locale)
        if not handoff.record_outcome(g.launch, request.form.get("outcome") or "", box.advocate if box else None):
            abort(400, description="Choose how the call ended; the call is offered only at high danger or when "
                                   "you judge it urgent.")
    else:
        abort(400)
    g.launch.save()
    back = STEP_BACK.get(request.form.get("back") or "", STEP_BACK["result"])
    if back not in current_app.view_functions:
        back = STEP_BACK["result"]
    return redirect(url_for(back, lid=lid) + "#urgent")


@bp.route("/finish", methods=["POST"])
@launch_view
def finish() -> Response | str:
    """"Done — back to the chart": ends this launch (its pages stop working); chart writes already queued are
    still sent by the outbox worker. The page left behind says nothing about the visit. Not while a follow-up of
    this patient waits for its response in this launch: back to the result, which asks for it (one press, "Not
    safe to discuss now", is always enough)."""
    if any(not f.answered_here for f in _followups()):
        return redirect(url_for("screening.result", lid=g.launch.id, pending="followup") + "#followup")
    g.launch.record.status = "ended"
    g.launch.save()
    return render_template("screening/finished.html")
