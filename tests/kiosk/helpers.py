"""Driving the tablet mode over HTTP: a clinician's launch past the private gate, a tablet's own browser."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from smart_app.store.db import get_session
from smart_app.store.models import KioskSession

GATE = {"gate": {"status": "confirmed", "at": "2026-12-07T06:00:00+00:00"}}
SECRET = re.compile(r'data-testid="tablet-(?:code|pin)">([0-9 ]+)<')
HITS_ANSWERS = {"hurt": "LA6270-8", "insult": "LA6270-8", "threaten": "LA6270-8", "scream": "LA6270-8"}


def secret_on(page: str) -> str:
    found = SECRET.search(page)
    assert found, "no code or PIN on the clinician's page"
    return found.group(1).replace(" ", "")


def start(client, lid: str, mode: str, instrument: str = "hits") -> str:
    """The clinician chooses the tablet mode; returns the code (paired) or PIN (same device) shown to them."""
    r = client.post(f"/l/{lid}/tablet", data={"mode": mode, "instrument": instrument})
    assert r.status_code == 302, r.status_code
    page = client.get(f"/l/{lid}/tablet/status").get_data(as_text=True)
    return secret_on(page)


def answer_all(tablet, answers: dict[str, str]) -> None:
    tablet.post("/tablet/q", data={"action": "start"})
    for link_id, code in answers.items():
        r = tablet.post("/tablet/q", data={"action": "answer", "item": link_id, "code": code})
        assert r.status_code == 303


def kiosk_row(app, lid: str) -> KioskSession | None:
    with app.test_request_context():
        row = get_session().query(KioskSession).filter_by(launch_id=lid).first()
        if row is not None:
            get_session().expunge(row)
        return row


def age(app, lid: str, **fields: Any) -> None:
    """Move a kiosk session's clocks into the past (idle tablets, expired codes) without waiting."""
    with app.test_request_context():
        db = get_session()
        row = db.query(KioskSession).filter_by(launch_id=lid).one()
        for name, seconds in fields.items():
            setattr(row, name, datetime.now(UTC) - timedelta(seconds=seconds))
        db.commit()


def session_of(app, client) -> dict[str, Any]:
    """The decoded session cookie of ``client`` ({} when it has none)."""
    cookie = client.get_cookie("ipv_session")
    if cookie is None:
        return {}
    return dict(app.session_interface.get_signing_serializer(app).loads(cookie.value))
