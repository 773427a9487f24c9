"""The launch's languages: the patient's (from Patient.communication, switchable with ``?lang=`` and kept for the
launch) and the clinician's (the deployment's)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import g, request

from smart_app.launch.state import Launch, launch_required
from smart_app.ops.i18n import SUPPORTED, clinician_locale, patient_locale


def use_launch_locale(launch: Launch) -> None:
    """Render in the launch's language: ``?lang=`` switches it and is kept for the rest of the launch."""
    asked = request.args.get("lang")
    if asked in SUPPORTED and asked != launch.data.get("locale"):
        launch.update_data(locale=asked)
        launch.save()
    chosen = launch.data.get("locale")
    g.locale = chosen if chosen in SUPPORTED else patient_locale(launch.context)
    g.patient_locale = g.locale


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
