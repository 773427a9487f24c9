"""A completed screen as the launch keeps it: one shape in ``data["screening"]`` whoever asked the questions (the
clinician on the instrument page, or the patient alone on a clinic tablet), so the result, referral and consent
pages read either the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app

from fhir.questionnaires import Instrument, ScreenResult
from smart_app.launch.state import Launch
from smart_app.launch.visit_memory import record_screen
from smart_app.report import events
from smart_app.store.db import get_session


def registry() -> dict[str, Any]:
    """The instruments loaded at start-up: ``instruments``, ``offered``, ``default``, ``danger_check``."""
    return current_app.extensions["screening"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def screen_state(inst: Instrument, result: ScreenResult, language: str) -> dict[str, Any]:
    """``data["screening"]`` for a scored screen; ``language`` is the one the questions were read or shown in."""
    return {
        "instrument": inst.key,
        "questionnaire": inst.url,
        "version": inst.version,
        "language": language,
        "answers": {k: a.code for k, a in result.answers.items()},
        # The same answers as codings (system, code, English display, score) for a QuestionnaireResponse.
        "answer_codings": result.answers_state(),
        "score": result.score,
        "interpretation": result.interpretation,
        "danger": result.danger,
        "danger_items": list(result.danger_items),
        "physical_violence": result.physical_violence,
        "completed_at": now_iso(),
        # Physical violence reported: /result asks the danger check (DA-5) before it shows the result.
        "danger_check_due": bool(result.physical_violence) and bool(registry()["danger_check"]),
    }


def store_screen(launch: Launch, inst: Instrument, result: ScreenResult, language: str, **extra: Any) -> dict[str, Any]:
    """Keep a scored screen in the launch (not committed): its state, the visit's "screened" date and the count.
    ``extra`` adds keys to the screen's state (how it was administered)."""
    first_screen_done = bool(launch.data.get("screening"))
    launch.update_data(screening={**screen_state(inst, result, language), **extra})
    launch.pop_data("danger_check")
    if not first_screen_done:
        record_screen(get_session(), launch.iss, launch.context)  # date only: memory across launches
    # Counted in the same transaction as the result it counts (one UPDATE of the launch, one commit).
    events.screened(launch, launch.data["screening"])
    return launch.data["screening"]
