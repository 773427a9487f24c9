"""End to end through the clinic tablet's own pages: the patient answers alone, the clinician unlocks the result,
the forced response is asked there, and the CDS Hooks card for the patient says a follow-up is waiting until it is
recorded (then falls silent: the patient was screened in this visit)."""

from __future__ import annotations

import pytest

from smart_app.store.db import session_scope
from smart_app.store.models import FollowupItem
from tests.cds.test_cds_hooks import FORBIDDEN_WORDS, call, cards, hook_body, new_patient
from tests.conftest import launch_for
from tests.followup.support import POSITIVE
from tests.kiosk.helpers import GATE, answer_all, start
from tests.worklist.support import clinician_context

pytestmark = pytest.mark.kiosk


def _through_the_tablet(app, make_launch, *, iss: str, patient: str) -> tuple[object, str]:
    """A clinician's launch past the gate; a paired tablet answers; the clinician unlocks the result."""
    client = app.test_client()
    lid = make_launch(client, context=clinician_context("bwh", patient, "Rosa Tablet"), data=GATE, iss=iss)
    tablet = app.test_client()
    assert tablet.post("/tablet", data={"code": start(client, lid, "paired")}).status_code == 303
    answer_all(tablet, POSITIVE)
    last = tablet.get("/tablet/q").get_data(as_text=True)
    assert 'data-testid="tablet-hand-back"' in last and "followup" not in last  # nothing of it on the tablet
    unlocked = client.post(f"/l/{lid}/tablet/unlock")
    assert unlocked.headers["Location"].endswith(f"/l/{lid}/result")
    return client, lid


def _item(app, lid: str) -> FollowupItem:
    with app.app_context(), session_scope(app) as db:
        item = db.query(FollowupItem).filter_by(launch_id=lid).one()
        db.expunge(item)
        return item


def test_after_hand_back_the_result_asks_for_the_response_and_done_waits(app, make_launch):
    client, lid = _through_the_tablet(app, make_launch, iss="http://ehr.test/fhir", patient="p-tab")
    result = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert 'data-testid="followup-panel"' in result and "answers on the tablet are positive" in result
    assert client.post(f"/l/{lid}/finish").headers["Location"].endswith("/result?pending=followup#followup")
    item = _item(app, lid)
    client.post(f"/l/{lid}/followup", data={"item": item.id, "response": "not_safe_now", "back": "result"})
    assert 'data-testid="followup-reminder"' in client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert client.post(f"/l/{lid}/finish").status_code == 200
    assert _item(app, lid).status == "open"  # asked again at the next launch for this patient


@pytest.mark.cds
def test_the_cds_card_says_a_follow_up_waits_until_it_is_recorded(cds_app, sandbox):
    pid = new_patient(sandbox)
    client = cds_app.test_client()
    lid = launch_for(cds_app, client, clinician_context("bwh", pid, "Rosa Tablet"), data=GATE, iss=sandbox.iss)
    tablet = cds_app.test_client()
    assert tablet.post("/tablet", data={"code": start(client, lid, "paired")}).status_code == 303
    answer_all(tablet, POSITIVE)
    client.post(f"/l/{lid}/tablet/unlock")
    got = cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid)))
    assert len(got) == 1 and got[0]["summary"] == "Check-in follow-up to record"
    assert got[0]["links"][0]["url"] == "https://ipv.example.test/launch"
    text = " ".join([got[0]["summary"], got[0]["detail"], got[0]["source"]["label"]]).lower()
    for word in FORBIDDEN_WORDS:
        assert word not in text, word
    # Another patient of the same EHR: no follow-up card.
    other = cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, new_patient(sandbox))))
    assert all(c["summary"] != "Check-in follow-up to record" for c in other)
    item = _item(cds_app, lid)
    client.post(f"/l/{lid}/followup", data={"item": item.id, "response": "discussed_declined", "back": "result"})
    assert cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid))) == []  # recorded, and screened here
