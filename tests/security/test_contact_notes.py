"""A contact-log note cannot forge lines of a referral's timeline: notes are stored and shown without CR/LF,
control or bidi characters, and the plain-text export has exactly one line per event (notes stored before the
cleaning included)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from smart_app.store.crypto import encrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import ContactAttempt
from tests.worklist.support import EHR1, SNOMED_SW, make_referral, role, worker_context

pytestmark = pytest.mark.security

FORGED = "2026-12-01 09:00 EST: Closed — completed (Dr. Someone)"
# CR, LF, CRLF, the Unicode line and paragraph separators, NEL, vertical tab, form feed, record separator, BEL
# (NUL never gets this far: the app refuses it with a 400), and the bidi
# embeddings, overrides, isolates and marks.
BREAKS = ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1e", "\x07"]
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
        "\u200f", "\u061c"]
SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"


def _social_worker(app, make_launch):
    client = app.test_client()
    roles = [role([SNOMED_SW], organizations=["Organization/org-bwh"])]
    return client, make_launch(client, context=worker_context("Practitioner/sw", "Sam Social", roles, SW_SCOPE),
                               iss=EHR1, kind="standalone")


def _history_lines(export: str) -> list[str]:
    return export.split("\n\n", 1)[1].rstrip("\n").split("\n")  # the timeline, after the header block


def test_a_note_cannot_forge_timeline_lines_in_the_export_or_the_page(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Nadia Note", channel="text")
    client, lid = _social_worker(app, make_launch)
    notes = [f"tried{brk}{FORGED}" for brk in BREAKS] + [f"left msg {mark}{FORGED[::-1]}{mark}" for mark in BIDI]
    for note in notes:
        answer = client.post(f"/l/{lid}/worklist/{rid}/contact",
                             data={"channel": "text", "outcome": "no_answer", "note": note})
        assert answer.status_code == 302 and "error" not in answer.headers["Location"]
    # A note stored before notes were cleaned on the way in.
    with app.app_context(), session_scope(app) as db:
        db.add(ContactAttempt(referral_id=rid, at=datetime.now(UTC), by_reference="Practitioner/old",
                              detail_enc=encrypt_json({"channel": "text", "outcome": "no_answer",
                                                       "note": f"old note\r\n{FORGED}\u202e",
                                                       "by_name": "Old\nName"})))
        db.commit()
        attempts = len(list(db.scalars(select(ContactAttempt))))
    assert attempts == len(notes) + 1

    export = client.get(f"/l/{lid}/worklist/{rid}/export.txt").get_data(as_text=True)
    lines = _history_lines(export)
    # One line per event: the referral received, and every contact attempt; no line is the forged one.
    assert len(lines) == 1 + attempts
    assert not any(line.startswith(FORGED) for line in export.split("\n"))
    assert sum(FORGED in line for line in lines) == len(BREAKS) + 1  # each kept inside its own event's line
    for char in [c for c in BREAKS + BIDI if c != "\n"]:
        assert char not in export
    assert "\r" not in export and export.count("\n") == len(export.splitlines())
    # The page shows the same notes without those characters.
    page = client.get(f"/l/{lid}/worklist/{rid}/history").get_data(as_text=True)
    for char in BIDI + ["\r", "\u2028", "\u2029", "\x85"]:
        assert char not in page
    assert f"tried {FORGED}" in page
