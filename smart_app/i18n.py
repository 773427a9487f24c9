"""Language: English and Spanish first. The patient's language comes from
Patient.communication (read at launch) and can be switched on the page."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, g, request
from flask_babel import Babel, force_locale, gettext

from smart_app.launch_state import Launch, launch_required

SUPPORTED = ("en", "es")
babel = Babel()


def select_locale() -> str:
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


def launch_view(view: Callable) -> Callable:
    """``launch_required`` + the launch's language in ``g.locale`` before anything renders."""

    @launch_required
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        use_launch_locale(g.launch)
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
