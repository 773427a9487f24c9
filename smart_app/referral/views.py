"""Referral after screening: ranked programs for this visit, 209A information, a safety-planning
checklist, the safe-contact question, and a discreet printable handout.

The safe ZIP is asked for (never taken from the chart), posted, kept only in the launch's
encrypted state, and never put in a URL (POST-redirect-GET). Nothing here sends anything anywhere.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, wraps
from typing import Any

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, url_for
from flask_babel import get_locale
from markupsafe import Markup
from werkzeug.wrappers import Response

from config import languages as registry
from config.current import current_settings
from referrals.content import load_content, localise
from referrals.geography import normalise_zip
from referrals.model import ASKED_NEEDS, text_in
from referrals.ranking import Ranking, Reason, describe_hours
from referrals.store import store_for
from smart_app.launch.locale import launch_view
from smart_app.launch.state import launch_required, reads_with_launch
from smart_app.launch.visit_memory import WITH_VISIT_REFERRAL, visit_referral
from smart_app.ops.i18n import SUPPORTED, clinician_locale, label_for, patient_locale
from smart_app.ops.i18n import gettext as _
from smart_app.referral.channels import CHANNELS
from smart_app.referral.programs import BY_DEFAULT, language_of, ranking_for, stored
from smart_app.screening.urgent import urgent_box
from smart_app.store.db import get_session

bp = Blueprint("referral", __name__, template_folder="templates", url_prefix="/l/<lid>")

MAX_NOTE = 200


@bp.record_once
def _load_directory(state: Any) -> None:
    # Load at start so a broken directory file is reported when the app starts, not mid-visit.
    store_for(state.app).index  # noqa: B018


@lru_cache(maxsize=8)
def content_in(lang: str) -> dict[str, Any]:
    """The 209A, safety-planning and handout texts in ``lang``, localised once per language and process (a static
    file, the same for every patient; the referral page localised the whole tree on every request)."""
    return localise(load_content(), lang)


def patient_info_html(plang: str, *, full: bool = True) -> Markup:
    """The patient section (209A and safety ideas) as HTML, rendered once per language and app.

    Its only inputs are the static content in ``plang`` and ``full``: rendered from the bare template (no
    context processors, so nothing from the request or the launch can enter it) and kept in the app's
    extensions, at most ``len(SUPPORTED) * 2`` entries; a language outside SUPPORTED is rendered, not kept."""
    cache: dict[tuple[str, bool], Markup] = current_app.extensions.setdefault("ipv_patient_info_html", {})
    html = cache.get((plang, full))
    if html is None:
        content = content_in(plang)
        template = current_app.jinja_env.get_template("referral/_patient_info.html")
        html = Markup(template.render(po=content["protective_orders"], ideas=content["safety_ideas"], full=full))
        if plang in SUPPORTED:
            cache[(plang, full)] = html
    return html


def channel_labels() -> dict[str, str]:
    return {"none": _("No channel is safe: the patient will make contact"), "phone": _("Phone call"),
            "text": _("Text message"), "email": _("Email"), "portal": _("Patient portal message"),
            "in_person": _("In person only")}


def need_labels() -> dict[str, str]:
    return {"legal": _("Legal help and protective orders (209A)"), "shelter": _("A safe place to stay (shelter)"),
            "counselling": _("Counselling and support groups"), "sexual-assault": _("Help after sexual assault")}


# Module-level tables of lambdas: a reason's words are translated when shown, and only the one shown (the
# referral page asks for six reasons; building every translation for each cost 70 gettext calls a page).
_SHORT_NEEDS: dict[str, Callable[[], str]] = {
    "legal help and protective orders (209A)": lambda: _("legal help and protective orders (209A)"),
    "shelter": lambda: _("shelter"), "counselling": lambda: _("counselling"),
    "sexual assault": lambda: _("sexual assault"), "housing": lambda: _("housing"),
    "court accompaniment": lambda: _("court accompaniment"),
}
_LANGUAGE_NAMES: dict[str, Callable[[], str]] = {
    "Spanish": lambda: _("Spanish"), "Portuguese": lambda: _("Portuguese"), "English": lambda: _("English"),
    "Haitian Creole": lambda: _("Haitian Creole"), "Chinese": lambda: _("Chinese"),
    "Vietnamese": lambda: _("Vietnamese"),
}


def _short_need(need: str) -> str:
    return label_for(_SHORT_NEEDS, need)


def _language_name(language: str) -> str:
    return label_for(_LANGUAGE_NAMES, language)


_REASON_TEXTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "on_site": lambda p: _("On site at this hospital"),
    "on_site_health_center": lambda p: _("On site at this health center"),
    "serves_site": lambda p: _("Serves this hospital"),
    "default_program": lambda p: _("Program of this hospital system (the visit's site is not known)"),
    "holiday": lambda p: _("Closed today (%(name)s)", name=p.get("name", "")),
    "always": lambda p: _("24/7"),
    "open_now": lambda p: _("Open now"),
    "after_hours": lambda p: _("After hours: call the pager %(phone)s", phone=p.get("phone", "")),
    "closed": lambda p: _("Closed now"),
    "speaks": lambda p: _("Speaks %(language)s", language=_language_name(p.get("language", ""))),
    "interpreters": lambda p: _("Interpreters available"),
    "needs": lambda p: _("Helps with %(needs)s", needs=", ".join(
        _short_need(n.strip()) for n in p.get("needs", "").split(", "))),
    "distance_zip": lambda p: _("%(miles)s miles from %(zip)s", miles=p.get("miles"), zip=p.get("zip")),
    "distance_site": lambda p: _("%(miles)s miles from this hospital", miles=p.get("miles")),
    "distance_site_health_center": lambda p: _("%(miles)s miles from this health center", miles=p.get("miles")),
}


def reason_text(reason: Reason) -> str:
    words = _REASON_TEXTS.get(reason.code)
    return words(reason.params) if words else reason.text()


PROGRAMS_KEPT = 256
_programs_lock = threading.Lock()


@dataclass(frozen=True)
class ProgramsHtml:
    call_now: Markup
    results: Markup


def programs_html(ranking: Ranking, selected: list[str], lang: str) -> ProgramsHtml:
    """The page's "Call now" section and ranked programs as HTML, rendered once per directory version, page
    language, ranking and ticked programs, and kept (at most PROGRAMS_KEPT, the least recently used dropped).

    Clinicians at one site at one hour see the same list, so most pages reuse one rendering (what the page spent
    most of its rendering on). Only what the key holds goes in: the ranking's programs, sites, numbers and reasons
    (the directory's own objects, whose identity stands for them while that directory is loaded), the hour's
    states, the language and the ticked programs; the templates are rendered bare (no context processors), so
    nothing of the request or the launch can enter a kept page."""
    index = store_for(current_app).index
    listed = {r.service.id for r in ranking.results}
    ticked = tuple(sorted(set(selected) & listed))
    key = (id(index), lang, str(get_locale() or ""), ticked, ranking.placed,
           id(ranking.site), id(ranking.site_service), tuple(id(e) for e in ranking.emergency),
           tuple((id(c.service), id(c.phone), c.state, c.closure) for c in ranking.call_now),
           tuple((id(r.service), id(r.site), id(r.call),
                  tuple((x.code, tuple(sorted(x.params.items()))) for x in r.reasons)) for r in ranking.results))
    kept: OrderedDict[tuple, tuple[Any, ProgramsHtml]] = current_app.extensions.setdefault(
        "ipv_programs_html", OrderedDict())
    with _programs_lock:
        hit = kept.get(key)
        if hit is not None and hit[0] is index:
            kept.move_to_end(key)
            return hit[1]
    values = {"ranking": ranking, "lang": lang, "selected": ticked, "text_in": text_in,
              "describe_hours": describe_hours, "reason_text": reason_text}
    env = current_app.jinja_env
    html = ProgramsHtml(Markup(env.get_template("referral/_call_now.html").render(values)),
                        Markup(env.get_template("referral/_results.html").render(values)))
    with _programs_lock:
        kept[key] = (index, html)
        while len(kept) > PROGRAMS_KEPT:
            kept.popitem(last=False)
    return html


def handout_view(view: Callable) -> Callable:
    """The handout is in the patient's language (Patient.communication), whatever the page language;
    ``?lang=`` prints it in another one without changing the launch's page language. Its controls (print,
    layout, QR) are the clinician's, in the deployment's clinician language (``g.locale``); the printed part is
    in ``g.patient_locale``."""

    @launch_required
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        asked = request.args.get("lang")
        chosen = g.launch.data.get("locale")  # the patient's language as switched on the pages
        g.patient_locale = asked if asked in SUPPORTED else chosen if chosen in SUPPORTED \
            else patient_locale(g.launch.context)
        g.locale = clinician_locale()
        g.bilingual = True
        return view(*args, **kwargs)

    return wrapper


def patient_language() -> str:
    """The patient's language for ranking ('es' speakers get Spanish-speaking programs first)."""
    if g.get("patient_locale"):
        return g.patient_locale
    return language_of(g.launch.context, g.get("locale") or "en")


def current_ranking(ref: dict[str, Any], now: datetime | None = None) -> Ranking:
    return ranking_for(g.launch, ref, patient_language(), now)


def _store(ref: dict[str, Any], ranking: Ranking) -> dict[str, Any]:
    ref = stored(ref, ranking)
    g.launch.update_data(referral=ref)
    g.launch.save()
    return ref


@bp.route("/referrals", methods=["GET"])
@launch_view
@reads_with_launch(WITH_VISIT_REFERRAL)
def index() -> str:
    ref = dict(g.launch.data.get("referral") or {})
    ranking = current_ranking(ref)
    if "selected" not in ref:  # nothing chosen yet: the site's program is ticked (and kept) by default
        ref = _store(ref, ranking)
    lang = g.locale
    plang = g.get("patient_locale") or lang
    screening = g.launch.data.get("screening") or {}
    urgent = urgent_box(g.launch, plang)
    # Asked here, before the conversation with the patient, not after consent.
    earlier = visit_referral(get_session(), g.launch.iss, g.launch.context, exclude_launch=g.launch.id,
                             read=g.launch.read) if not ref.get("second_referral") else None
    return render_template(
        "referral/index.html", lid=g.launch.id, ref=ref, ranking=ranking, lang=lang, plang=plang, earlier=earlier,
        programs=programs_html(ranking, ref.get("selected") or [], lang),
        patient_info=patient_info_html(plang, full=True), urgent=urgent,
        strangulation="strangulation" in (screening.get("danger_items") or []),
        needs=ASKED_NEEDS, need_labels=need_labels(),
        channels=CHANNELS, channel_labels=channel_labels(), reason_text=reason_text, text_in=text_in,
        describe_hours=describe_hours, zip_error=request.args.get("zip_error") == "1",
        saved=request.args.get("saved") == "1")


@bp.route("/referrals", methods=["POST"])
@launch_view
def submit() -> Response:
    lid = g.launch.id
    ref = dict(g.launch.data.get("referral") or {})
    action = request.form.get("action", "search")
    if action == "search":
        raw_zip = (request.form.get("safe_zip") or "").strip()
        safe_zip = normalise_zip(raw_zip)
        ref["safe_zip"] = safe_zip
        ref["needs"] = [n for n in request.form.getlist("needs") if n in ASKED_NEEDS]
        _store(ref, current_ranking(ref))
        # The ZIP itself never goes into a URL: only the fact that it was not understood.
        if raw_zip and not safe_zip:
            return redirect(url_for("referral.index", lid=lid, zip_error=1) + "#find")
        return redirect(url_for("referral.index", lid=lid) + "#results")
    if action == "second_referral":  # the clinician's answer to "a referral already exists for this visit"
        ref["second_referral"] = True
        _store(ref, current_ranking(ref))
        return redirect(url_for("referral.index", lid=lid) + "#next")
    if action == "clear_zip":
        ref["safe_zip"] = None
        _store(ref, current_ranking(ref))
        return redirect(url_for("referral.index", lid=lid) + "#find")
    # action == "save": chosen programs. The safe-contact question is asked once, on the consent page,
    # where its answer is shown in the note it goes into.
    ranking = current_ranking(ref)
    listed = {r.service.id for r in ranking.results}
    ref["selected"] = [s for s in request.form.getlist("selected") if s in listed]
    ref.pop(BY_DEFAULT, None)  # chosen by the clinician now
    _store(ref, ranking)
    return redirect(url_for("referral.index", lid=lid, saved=1) + "#next")


def qr_data_uri(url: str) -> str | None:
    """An SVG QR code as a data: URI (drawn here; no request leaves the server)."""
    try:
        import qrcode
        import qrcode.image.svg
    except ImportError:  # optional: the handout works without it
        return None
    img = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buf = io.BytesIO()
    img.save(buf)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def handout_programs(ranking: Ranking, selected: set[str]) -> list[Any]:
    """The ticked programs; with none ticked, this site's program (or the deployment's default programs
    when the site is not known) and the 24/7 line, never whatever happens to rank first elsewhere."""
    chosen = [r for r in ranking.results if r.service.id in selected]
    if chosen:
        return chosen
    wanted = {c.service.id for c in ranking.call_now}
    return [r for r in ranking.results if r.service.id in wanted]


def qr_target() -> str | None:
    """The neutral page a handout's QR code opens, chosen by the site (deployment ``handout_qr_url``); none = no QR."""
    return current_settings().handout_qr_url


@bp.route("/handout", methods=["GET"])
@handout_view
def handout() -> str:
    """Discreet printable handout from any result: neutral title and names, the patient's language,
    a wallet card (or the full page with 209A and safety planning ideas), QR only when asked and set up."""
    ref = dict(g.launch.data.get("referral") or {})
    ranking = current_ranking(ref)
    chosen = handout_programs(ranking, set() if ref.get(BY_DEFAULT) else set(ref.get("selected") or []))
    lang = g.patient_locale
    content = content_in(lang)
    layout = "page" if request.args.get("layout") == "page" else "card"
    target = qr_target()
    show_qr = request.args.get("qr") == "1" and target is not None
    return render_template("referral/handout.html", lid=g.launch.id, items=chosen, lang=lang, clang=g.locale,
                           content=content["handout"], po=content["protective_orders"], ideas=content["safety_ideas"],
                           layout=layout, full=layout == "page", qr=qr_data_uri(target) if show_qr else None,
                           show_qr=show_qr, qr_target=target, text_in=text_in, describe_hours=describe_hours,
                           emergency=ranking.emergency,
                           languages=[(each.code, each.name) for each in registry.languages()])


def warm_up(_app: Flask) -> None:
    """The referral page's patient texts in every language, parsed once at start, not by the first pages."""
    for lang in SUPPORTED:
        content_in(lang)
