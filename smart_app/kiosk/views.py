"""The tablet's side (``/tablet``): neutral URLs, no launch id, no patient identifier, no EHR call.

The browser holds one random token (smart_app/kiosk/sessions.py); every page is rendered from the instrument file
and the patient's language only. Answers go one per POST and are never shown back. A tablet whose token finds no
live session (handed back, cancelled, locked, another patient's turn) is wiped: session cleared and a
``Clear-Site-Data`` header, then the idle screen. "Exit" (and the hidden gesture, smart_app/kiosk/static/kiosk.js)
deletes the answers so far and shows a decoy page of health tips.
"""

from __future__ import annotations

import logging

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from config.current import current_settings
from smart_app.kiosk import audio, questions, sessions
from smart_app.kiosk.hook import after_self_screen
from smart_app.kiosk.languages import choices, direction, valid
from smart_app.launch.resume import stamp
from smart_app.launch.state import Launch, browser_id, touch
from smart_app.ops.i18n import clinician_locale
from smart_app.screening.record import registry, store_screen
from smart_app.store.db import get_session
from smart_app.store.models import KioskSession, LaunchRecord

bp = Blueprint(
    "kiosk",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
    url_prefix="/tablet",
)
log = logging.getLogger(__name__)
WIPE = '"cache", "cookies", "storage"'
WIPE_KEEP_COOKIES = '"cache", "storage"'  # same device: the clinician's session cookie holds their launches
# Exit is in a hurry: every page and file here is sent no-store, so there is no cache to clear, and asking Chromium
# to clear it delays the decoy page.
WIPE_FAST = '"cookies", "storage"'


def _wiped(target: str, header: str = WIPE) -> Response:
    session.clear()
    response = redirect(target, code=303)
    response.headers["Clear-Site-Data"] = header
    return response


def _launch(row: KioskSession) -> Launch | None:
    record = get_session().get(LaunchRecord, row.launch_id)
    return Launch(record) if record is not None and record.status == "active" else None


def _render(template: str, lang: str, status: int = 200, **values) -> tuple[str, int]:
    """A tablet page: what the patient reads in ``lang`` (``p_``), what staff read (``_``: the code and PIN
    forms) in the clinician's language, as on every page of the app."""
    g.patient_locale = lang
    g.locale = staff = clinician_locale()
    page = render_template(
        template,
        lang=lang,
        dir=direction(lang),
        staff_lang=staff,
        staff_dir=direction(staff),
        idle_seconds=_idle_seconds(),
        **values,
    )
    return page, status


def _idle_seconds() -> int:
    return current_settings().tablet_idle_seconds


@bp.route("", methods=["GET"])
def idle() -> Response | tuple[str, int]:
    row = sessions.for_tablet(touch=False)
    if row is not None and sessions.live(row):
        return redirect(url_for("kiosk.screen"))
    return _render("kiosk/idle.html", clinician_locale())


@bp.route("", methods=["POST"])
def pair() -> Response | tuple[str, int]:
    if session.get(sessions.TABLET_KEY):
        session.clear()  # whatever this browser held before: one patient at a time
    row = sessions.redeem(request.form.get("code") or "")
    if row is None:
        get_session().rollback()
        return _render("kiosk/idle.html", clinician_locale(), status=400, code_error=True)
    get_session().commit()
    return redirect(url_for("kiosk.screen"), code=303)


def _gone(row: KioskSession | None) -> Response | tuple[str, int] | None:
    """Where a tablet goes when it is not answering: wiped to idle, or (same device) the hand-back screen."""
    if row is None:
        return _wiped(url_for("kiosk.idle"))
    progress = sessions.Progress.load(row)
    lang = progress.language if progress else clinician_locale()
    if row.status == "finished" or (row.status == "locked" and row.mode == "device"):
        return _render("kiosk/hand_back.html", lang, device=row.mode == "device", locked=row.status == "locked")
    if row.status != "answering":
        return _wiped(url_for("kiosk.idle"))
    return None


@bp.route("/q", methods=["GET"])
def screen() -> Response | tuple[str, int]:
    if not session.get(sessions.TABLET_KEY):
        return redirect(url_for("kiosk.idle"))
    row = sessions.for_tablet()
    elsewhere = _gone(row)
    if elsewhere is not None:
        return elsewhere
    progress = sessions.Progress.load(row)
    launch = _launch(row)
    if progress is None or launch is None:
        return _wiped(url_for("kiosk.idle"))
    touch(launch.record)
    get_session().commit()
    inst = registry()["instruments"][progress.instrument]
    if not progress.started:
        return _render("kiosk/welcome.html", progress.language, languages=choices())
    current = questions.screen_at(inst, progress)
    audio_file = audio.file_for(progress.language, current.listen) if current else None
    return _render(
        "kiosk/question.html",
        progress.language,
        s=current,
        audio_url=url_for("kiosk.static", filename=f"audio/{audio_file.name}")
        if audio_file and audio_file.exists()
        else None,
    )


@bp.route("/q", methods=["POST"])
def answer() -> Response | tuple[str, int]:
    row = sessions.for_tablet()
    elsewhere = _gone(row)
    if elsewhere is not None:
        return elsewhere
    progress = sessions.Progress.load(row)
    launch = _launch(row)
    if progress is None or launch is None:
        return _wiped(url_for("kiosk.idle"))
    inst = registry()["instruments"][progress.instrument]
    action = request.form.get("action")
    if action == "lang" and valid(request.form.get("lang")):
        progress.language = request.form["lang"]
    elif action == "start":
        progress.started = True
    elif action == "back":
        questions.step_back(inst, progress)
    elif action == "answer":
        questions.answer(inst, progress, request.form.get("item") or "", request.form.get("code") or "")
    if action == "decline" or (progress.started and questions.screen_at(inst, progress) is None):
        _complete(row, launch, inst, progress, declined=action == "decline")
    else:
        progress.save(row)
    get_session().commit()
    return redirect(url_for("kiosk.screen"), code=303)


def _complete(row: KioskSession, launch: Launch, inst, progress: sessions.Progress, *, declined: bool) -> None:
    """The patient's last answer: the screen goes into the launch as the clinician's would, marked self-administered;
    the tablet keeps nothing of it."""
    result = questions.score(inst, progress, declined=declined)
    if result is None:
        return
    store_screen(launch, inst, result, progress.language, administered="self")
    launch.update_data(administered="self")
    row.status = "finished"
    row.progress_enc = None
    sessions.Progress(instrument=inst.key, language=progress.language, started=True).save(row)
    get_session().commit()  # the screen is kept whatever the follow-up does with its own transaction
    after_self_screen(launch)
    log.info("self-administered screening completed")


@bp.route("/lock", methods=["GET"])
def lock() -> Response | tuple[str, int]:
    """The tablet's own idle timer ends here (the server locks too, at the next request)."""
    row = sessions.for_tablet(touch=False)
    if row is not None and row.status == "answering":
        sessions.lock(row)
        get_session().commit()
    return _gone(row) or _wiped(url_for("kiosk.idle"))


@bp.route("/exit", methods=["POST"])
def exit_() -> Response:
    """Exit: the answers so far go, the tablet is wiped and shows health tips. On the clinician's own device the
    launch ends as at a quick exit (the clinician may continue it from the chart for a few minutes)."""
    row = sessions.for_tablet(touch=False)
    lang = request.form.get("lang")
    if row is not None:
        row.progress_enc = None
        row.tablet_hash = None
        row.status = "exited"
        if row.mode == "device":
            record = get_session().get(LaunchRecord, row.launch_id)
            if record is not None and record.status == "active":
                stamp(record)
                record.status = "ended"
        get_session().commit()
    return _wiped(url_for("kiosk.tips", l=lang if valid(lang) else None), WIPE_FAST)


@bp.route("/tips", methods=["GET"])
def tips() -> tuple[str, int]:
    lang = request.args.get("l")
    return _render("kiosk/tips.html", lang if valid(lang) else clinician_locale())


@bp.route("/unlock", methods=["POST"])
def unlock() -> Response | tuple[str, int]:
    """Same device: the clinician's PIN gives the launch back to this browser and shows the result."""
    row = sessions.for_tablet(touch=False)
    if row is None or row.mode != "device" or row.status not in ("finished", "locked"):
        return _wiped(url_for("kiosk.idle"))
    record = get_session().get(LaunchRecord, row.launch_id)
    if not sessions.pin_ok(row, request.form.get("pin") or ""):
        if row.pin_tries < sessions.PIN_TRIES or record is None:
            get_session().commit()
            progress = sessions.Progress.load(row)
            return _render(
                "kiosk/hand_back.html",
                progress.language if progress else clinician_locale(),
                status=400,
                device=True,
                locked=row.status == "locked",
                pin_error=True,
            )
        stamp(record)
        record.status = "ended"
        get_session().delete(row)
        get_session().commit()
        return _wiped(url_for("kiosk.idle"))
    record.browser_id = browser_id()
    row.status = "handed_back"
    row.tablet_hash = None
    sessions.forget_tablet()
    get_session().commit()
    target = "screening.result" if Launch(record).data.get("screening") else "kiosk_staff.status"
    response = redirect(url_for(target, lid=record.id), code=303)
    response.headers["Clear-Site-Data"] = WIPE_KEEP_COOKIES
    return response
