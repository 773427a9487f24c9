"""The launch state the clinic tablet leaves behind, set as the kiosk package sets it (smart_app/kiosk/views.py
``_complete``): the screen stored as the clinician's pages store it (smart_app/screening/record.py ``store_screen``)
marked ``administered: "self"`` there and at the top of the launch's state, committed, then the tablet's hook
(smart_app/kiosk/hook.py), which opens the forced-response item. For tests that need many self-screens without
pairing a tablet each time; tests/followup/test_tablet_journey_http.py drives the tablet's own pages."""

from __future__ import annotations

from typing import Any

from flask import session

from smart_app.followup.items import of_launch
from smart_app.kiosk.hook import after_self_screen
from smart_app.launch.state import load_launch
from smart_app.screening.record import store_screen
from smart_app.screening.summary import instrument_of
from smart_app.store.db import get_session

# HITS (LOINC answers Never 1 .. Frequently 5): the physical item "hurt" answered Never, so no DA-5 is due first.
NEVER, FREQUENTLY, SOMETIMES = "LA6270-8", "LA6482-9", "LA10082-8"
POSITIVE = {"hurt": NEVER, "insult": FREQUENTLY, "threaten": FREQUENTLY, "scream": FREQUENTLY}  # 16 > 10
NEGATIVE = {"hurt": NEVER, "insult": NEVER, "threaten": SOMETIMES, "scream": NEVER}  # 6


def tablet_done(app, client, lid: str, answers: dict[str, str], *, administered: str | None = "self",
                **overrides: Any) -> str | None:
    """A screen of ``answers`` finished in launch ``lid`` (bound to ``client``'s browser), as the tablet finishes
    one (``administered=None``: as the clinician's pages do, then the same hook). ``overrides`` change the stored
    screen (a tablet that stored something else). Returns the item's id, or None when none was opened."""
    with client.session_transaction() as sess:
        bid = sess["bid"]
    with app.test_request_context():
        session["bid"] = bid
        launch = load_launch(lid)
        inst = instrument_of("hits")
        extra = {"administered": administered} if administered else {}
        screening = store_screen(launch, inst, inst.score(answers), "en", **extra)
        launch.update_data(gate={"status": "confirmed", "at": screening["completed_at"]},
                           screening={**screening, **overrides}, **extra)
        get_session().commit()
        after_self_screen(launch)
        item = of_launch(get_session(), lid)
        return item.id if item is not None else None
