"""Language: English, Spanish and Portuguese (Brazil). The patient's language comes from
Patient.communication (read at launch) and can be switched on the page (one switch).

Two languages at once on the screening and referral pages (``launch_view``): the clinician's own text in
the deployment's language (``clinician_language``, default English), everything said, read aloud or printed
for the patient in the patient's language (``p_()``, content files, instrument text), with the clinician's
language beneath each question."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, current_app, g, request
from flask_babel import Babel, force_locale, gettext

from smart_app.launch_state import Launch, launch_required

SUPPORTED = ("en", "es", "pt")
babel = Babel()


def select_locale() -> str:
    # Bilingual pages: the page is in the clinician's language whatever ?lang= (the patient's) says.
    if g.get("bilingual") and g.get("locale") in SUPPORTED:
        return g.locale
    # A view may fix the language (the launch's chosen one); ?lang= switches it.
    lang = request.args.get("lang") if request else None
    if lang in SUPPORTED:
        return lang
    chosen = g.get("locale")
    if chosen in SUPPORTED:
        return chosen
    return "en"


def patient_locale(context: dict[str, Any]) -> str:
    """The patient's language from Patient.communication (read at launch) when we have it; else English."""
    patient = context.get("patient") or {}
    for lang in [patient.get("language"), *(patient.get("languages") or [])]:
        base = (lang or "").split("-")[0].lower()
        if base in SUPPORTED:
            return base
    return "en"


def use_launch_locale(launch: Launch) -> None:
    """Render in the launch's language: ``?lang=`` switches it and is kept for the rest of the launch."""
    asked = request.args.get("lang")
    if asked in SUPPORTED and asked != launch.data.get("locale"):
        launch.update_data(locale=asked)
        launch.save()
    chosen = launch.data.get("locale")
    g.locale = chosen if chosen in SUPPORTED else patient_locale(launch.context)
    g.patient_locale = g.locale


def clinician_locale() -> str:
    """The deployment's language for the clinician's own text (``clinician_language``; default English)."""
    extra = getattr(current_app.config.get("DEPLOYMENT"), "extra", None) or {}
    lang = str(extra.get("clinician_language") or "en")
    return lang if lang in SUPPORTED else "en"


def use_bilingual_locale(launch: Launch) -> None:
    """``g.patient_locale``: the launch's patient language (``?lang=`` switches it, kept for the launch);
    ``g.locale``: the clinician's language."""
    use_launch_locale(launch)
    g.patient_locale = g.locale
    g.locale = clinician_locale()
    g.bilingual = True


def launch_view(view: Callable) -> Callable:
    """``launch_required`` + both languages (clinician's in ``g.locale``, patient's in ``g.patient_locale``)."""

    @launch_required
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        use_bilingual_locale(g.launch)
        return view(*args, **kwargs)

    return wrapper


def patient_gettext(message: str, **params: Any) -> str:
    """``p_()``: a patient-facing string (read aloud, printed, said) in the patient's language, whatever the
    page's language. Extracted like ``_()`` (``pybabel extract -k p_``)."""
    lang = g.get("patient_locale") or g.get("locale") or "en"
    with force_locale(lang):
        return gettext(message, **params)


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.globals["p_"] = patient_gettext
