"""Language: English and Spanish first. The patient's language comes from
Patient.communication (read at launch) and can be switched on the page."""

from __future__ import annotations

from flask import Flask, g, request
from flask_babel import Babel

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


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    babel.init_app(app, locale_selector=select_locale)
