"""The launch state the clinic tablet leaves behind, set as the kiosk package will set it: the answers stored as the
clinician's pages store them (smart_app/screening/views.py ``questions``), ``administered: "self"``, then the call
``smart_app.followup.open_if_positive_self_screen(launch)``. Used until the tablet's own pages drive it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import session

from smart_app.followup import open_if_positive_self_screen
from smart_app.launch.state import load_launch
from smart_app.screening.summary import instrument_of

# HITS (LOINC answers Never 1 .. Frequently 5): the physical item "hurt" answered Never, so no DA-5 is due first.
NEVER, FREQUENTLY, SOMETIMES = "LA6270-8", "LA6482-9", "LA10082-8"
POSITIVE = {"hurt": NEVER, "insult": FREQUENTLY, "threaten": FREQUENTLY, "scream": FREQUENTLY}  # 16 > 10
NEGATIVE = {"hurt": NEVER, "insult": NEVER, "threaten": SOMETIMES, "scream": NEVER}  # 6


def screening_state(answers: dict[str, str], *, instrument: str = "hits", language: str = "en") -> dict[str, Any]:
    """``data["screening"]`` as the clinician's /screen POST stores it (inside an app context)."""
    inst = instrument_of(instrument)
    assert inst is not None
    result = inst.score(answers)
    return {"instrument": inst.key, "questionnaire": inst.url, "version": inst.version, "language": language,
            "answers": {k: a.code for k, a in result.answers.items()}, "answer_codings": result.answers_state(),
            "score": result.score, "interpretation": result.interpretation, "danger": result.danger,
            "danger_items": list(result.danger_items), "physical_violence": result.physical_violence,
            "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "danger_check_due": bool(result.physical_violence)}


def tablet_done(app, client, lid: str, answers: dict[str, str], **overrides: Any) -> str | None:
    """The tablet finished a screen in launch ``lid`` (bound to ``client``'s browser): store the answers, mark the
    screen self-administered, call the hook. Returns the opened item's id, or None."""
    with client.session_transaction() as sess:
        bid = sess["bid"]
    with app.test_request_context():
        session["bid"] = bid
        launch = load_launch(lid)
        screening = {**screening_state(answers), **overrides}
        launch.update_data(gate={"status": "confirmed", "at": screening["completed_at"]}, screening=screening,
                           administered="self")
        launch.save()
        item = open_if_positive_self_screen(launch)
        return item.id if item is not None else None
