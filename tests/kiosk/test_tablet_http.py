"""The tablet mode over HTTP: pairing (single use, expiry), what the tablet holds (no token, no identifier), that it
never makes the app call the EHR, the server-side idle lock, exit, hand-back and the same-device PIN."""

from __future__ import annotations

import pytest
import requests

from config.current import settings_of
from tests.kiosk.helpers import GATE, HITS_ANSWERS, age, answer_all, kiosk_row, session_of, start
from tests.screening.helpers import launch_data

pytestmark = pytest.mark.kiosk
POSITIVE = {"hurt": "LA6482-9", "insult": "LA6482-9", "threaten": "LA10082-8", "scream": "LA6482-9"}


@pytest.fixture
def clinician(app, make_launch):
    client = app.test_client()
    lid = make_launch(client, data=GATE)
    return client, lid


@pytest.fixture
def no_ehr(monkeypatch):
    """Any outbound HTTP call fails the test: the tablet's requests must not reach the EHR."""
    calls: list[str] = []

    def refuse(self, request, **kwargs):
        calls.append(request.url)
        raise AssertionError(f"outbound call during a tablet request: {request.method}")

    monkeypatch.setattr(requests.Session, "send", refuse)
    return calls


def test_paired_tablet_answers_and_the_launch_gets_the_screen_as_the_clinician_would(app, clinician, no_ehr):
    client, lid = clinician
    code = start(client, lid, "paired")
    tablet = app.test_client()
    assert tablet.post("/tablet", data={"code": code}).status_code == 303
    welcome = tablet.get("/tablet/q").get_data(as_text=True)
    assert 'data-testid="tablet-welcome"' in welcome
    answer_all(tablet, POSITIVE)
    last = tablet.get("/tablet/q").get_data(as_text=True)
    assert 'data-testid="tablet-hand-back"' in last
    for word in ("positive", "Positive", "score", "Frequently"):
        assert word not in last
    data = launch_data(app, lid)
    assert data["administered"] == "self"
    screening = data["screening"]
    assert screening["administered"] == "self" and screening["instrument"] == "hits"
    assert screening["answers"] == POSITIVE and screening["interpretation"] == "positive"
    assert kiosk_row(app, lid).progress_enc is not None  # language only, for the hand-back screen
    assert no_ehr == []
    # The clinician's result page reads the tablet's screen unchanged.
    assert client.get(f"/l/{lid}/result").status_code == 200


def test_a_pairing_code_works_once(app, clinician):
    client, lid = clinician
    code = start(client, lid, "paired")
    first, second = app.test_client(), app.test_client()
    assert first.post("/tablet", data={"code": code}).status_code == 303
    refused = second.post("/tablet", data={"code": code})
    assert refused.status_code == 400 and 'data-testid="code-error"' in refused.get_data(as_text=True)
    assert second.get("/tablet/q").status_code == 302  # back to the idle screen: no session


def test_an_expired_code_pairs_nothing(app, clinician):
    client, lid = clinician
    code = start(client, lid, "paired")
    age(app, lid, code_expires_at=1)
    assert app.test_client().post("/tablet", data={"code": code}).status_code == 400
    assert 'data-testid="tablet-expired"' in client.get(f"/l/{lid}/tablet/status").get_data(as_text=True)


def test_the_code_is_shown_only_to_the_launchs_own_browser(app, clinician):
    client, lid = clinician
    start(client, lid, "paired")
    assert app.test_client().get(f"/l/{lid}/tablet/status").status_code == 404


def test_the_tablet_holds_no_token_no_identifier(app, clinician):
    client, lid = clinician
    code = start(client, lid, "paired")
    tablet = app.test_client()
    responses = [tablet.get("/tablet"), tablet.post("/tablet", data={"code": code}), tablet.get("/tablet/q")]
    tablet.post("/tablet/q", data={"action": "start"})
    responses.append(tablet.get("/tablet/q"))
    assert set(session_of(app, tablet)) <= {"kt", "csrf_token"}
    for r in responses:
        text = r.get_data(as_text=True) + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        for secret in (lid, "Rosa", "pat-test", "TEST-1", "enc-test", "test-token", "Chelsea"):
            assert secret not in text
        assert r.headers["Cache-Control"].startswith("no-store")


def gone_quiet(app, client, lid: str):
    """A tablet paired with the launch that answered the first question, then stayed idle past the lock time."""
    tablet = app.test_client()
    tablet.post("/tablet", data={"code": start(client, lid, "paired")})
    tablet.post("/tablet/q", data={"action": "start"})
    tablet.post("/tablet/q", data={"action": "answer", "item": "hurt", "code": "LA6482-9"})
    age(app, lid, last_seen_at=settings_of(app).tablet_idle_seconds + 5)
    return tablet


def test_an_idle_tablet_is_locked_by_the_server(app, clinician):
    client, lid = clinician
    tablet = gone_quiet(app, client, lid)
    r = tablet.post("/tablet/q", data={"action": "answer", "item": "insult", "code": "LA6482-9"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/tablet")
    assert "cookies" in r.headers["Clear-Site-Data"]
    row = kiosk_row(app, lid)
    assert row.status == "locked" and row.progress_enc is None and row.tablet_hash is None
    assert "screening" not in launch_data(app, lid)
    assert 'data-testid="tablet-locked"' in client.get(f"/l/{lid}/tablet/status").get_data(as_text=True)


def test_exit_wipes_the_tablet_and_shows_health_tips(app, clinician):
    client, lid = clinician
    tablet = app.test_client()
    tablet.post("/tablet", data={"code": start(client, lid, "paired")})
    tablet.post("/tablet/q", data={"action": "start"})
    tablet.post("/tablet/q", data={"action": "answer", "item": "hurt", "code": "LA6482-9"})
    r = tablet.post("/tablet/exit", data={"lang": "es"})
    assert r.status_code == 303 and "/tablet/tips" in r.headers["Location"]
    assert r.headers["Clear-Site-Data"] == '"cookies", "storage"'
    tips = tablet.get(r.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="tablet-tips"' in tips and 'lang="es"' in tips and "Hábitos saludables" in tips
    assert session_of(app, tablet) == {} or "kt" not in session_of(app, tablet)
    row = kiosk_row(app, lid)
    assert row.status == "exited" and row.progress_enc is None
    assert "screening" not in launch_data(app, lid)
    assert tablet.get("/tablet/q").status_code == 302


def test_hand_back_wipes_the_tablet(app, clinician):
    client, lid = clinician
    tablet = app.test_client()
    tablet.post("/tablet", data={"code": start(client, lid, "paired")})
    answer_all(tablet, HITS_ANSWERS)
    assert 'data-testid="tablet-finished"' in client.get(f"/l/{lid}/tablet/status").get_data(as_text=True)
    shown = client.post(f"/l/{lid}/tablet/unlock")
    assert shown.headers["Location"].endswith(f"/l/{lid}/result")
    r = tablet.get("/tablet/q")
    assert r.status_code == 303 and r.headers["Location"].endswith("/tablet")
    assert r.headers["Clear-Site-Data"] == '"cache", "cookies", "storage"'
    assert "kt" not in session_of(app, tablet)


def test_a_second_patient_on_the_same_tablet_starts_from_nothing(app, make_launch):
    tablet = app.test_client()
    for _patient in range(2):
        client = app.test_client()
        lid = make_launch(client, data=GATE)
        tablet.post("/tablet", data={"code": start(client, lid, "paired")})
        first = tablet.get("/tablet/q").get_data(as_text=True)
        assert 'data-testid="tablet-welcome"' in first
        answer_all(tablet, POSITIVE)
        client.post(f"/l/{lid}/tablet/unlock")
        tablet.get("/tablet/q")


def test_same_device_locks_the_launch_until_the_pin(app, clinician, no_ehr):
    client, lid = clinician
    pin = start(client, lid, "device")
    r = client.post(f"/l/{lid}/tablet/handover")
    assert r.status_code == 303 and r.headers["Location"].endswith("/tablet/q")
    assert client.get(f"/l/{lid}/").status_code == 404  # Back into the clinician's pages: nothing
    assert client.get(f"/l/{lid}/result").status_code == 404
    answer_all(client, POSITIVE)
    assert 'data-testid="unlock-pin"' in client.get("/tablet/q").get_data(as_text=True)
    wrong = client.post("/tablet/unlock", data={"pin": "000000" if pin != "000000" else "111111"})
    assert wrong.status_code == 400
    ok = client.post("/tablet/unlock", data={"pin": pin})
    assert ok.status_code == 303 and ok.headers["Location"].endswith(f"/l/{lid}/result")
    assert ok.headers["Clear-Site-Data"] == '"cache", "storage"'
    assert client.get(f"/l/{lid}/result").status_code == 200
    assert launch_data(app, lid)["screening"]["administered"] == "self"
    assert no_ehr == []


def test_same_device_gives_up_after_too_many_wrong_pins(app, clinician):
    client, lid = clinician
    pin = start(client, lid, "device")
    client.post(f"/l/{lid}/tablet/handover")
    answer_all(client, HITS_ANSWERS)
    wrong = "000000" if pin != "000000" else "111111"
    for _ in range(4):
        assert client.post("/tablet/unlock", data={"pin": wrong}).status_code == 400
    last = client.post("/tablet/unlock", data={"pin": wrong})
    assert last.status_code == 303 and "cookies" in last.headers["Clear-Site-Data"]
    assert client.post("/tablet/unlock", data={"pin": pin}).status_code == 303  # nothing left to unlock
    assert client.get(f"/l/{lid}/result").status_code == 404


def test_tablet_mode_needs_the_private_gate(app, make_launch):
    client = app.test_client()
    lid = make_launch(client)
    r = client.get(f"/l/{lid}/tablet")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/l/{lid}/")


def test_the_worker_locks_a_tablet_that_went_quiet(app, clinician):
    from smart_app.ops import housekeeping
    from smart_app.store.db import get_session

    client, lid = clinician
    gone_quiet(app, client, lid)
    with app.app_context():
        assert housekeeping.run(app, get_session())["kiosk_locked"] == 1
    row = kiosk_row(app, lid)
    assert row.status == "locked" and row.progress_enc is None


def test_the_tablet_speaks_the_patients_language_and_offers_every_language_the_app_has(app, make_launch):
    from config.languages import codes
    from tests.conftest import default_context

    client = app.test_client()
    context = default_context()
    context["patient"] = {**context["patient"], "language": "es", "languages": ["es"]}
    lid = make_launch(client, context=context, data=GATE)
    tablet = app.test_client()
    tablet.post("/tablet", data={"code": start(client, lid, "paired")})
    welcome = tablet.get("/tablet/q").get_data(as_text=True)
    assert '<html lang="es" dir="ltr">' in welcome and "Comenzar" in welcome
    for lang in codes():
        assert f'data-testid="lang-{lang}"' in welcome
    tablet.post("/tablet/q", data={"action": "lang", "lang": "pt"})
    tablet.post("/tablet/q", data={"action": "start"})
    question = tablet.get("/tablet/q").get_data(as_text=True)
    assert '<html lang="pt" dir="ltr">' in question and "Pergunta 1 de 4" in question and 'data-text="' in question


def test_a_right_to_left_language_turns_the_tablet_and_staff_words_stay_the_clinicians(app, clinician):
    from config.languages import direction, language

    client, lid = clinician
    rtl = next((code for code in ("ar",) if language(code) is not None and direction(code) == "rtl"), None)
    if rtl is None:
        pytest.skip("no right-to-left patient language registered")
    pin = start(client, lid, "device")
    client.post(f"/l/{lid}/tablet/handover")
    client.post("/tablet/q", data={"action": "lang", "lang": rtl})
    client.post("/tablet/q", data={"action": "start"})
    page = client.get("/tablet/q").get_data(as_text=True)
    assert f'<html lang="{rtl}" dir="rtl">' in page and "Question 1 of" not in page
    answer_all(client, HITS_ANSWERS)
    hand_back = client.get("/tablet/q").get_data(as_text=True)
    assert 'lang="en" dir="ltr"' in hand_back and "Staff PIN" in hand_back
    assert client.post("/tablet/unlock", data={"pin": pin}).status_code == 303


def test_a_positive_self_screen_opens_the_forced_response_a_negative_does_not(app, make_launch):
    tablet = app.test_client()
    opened = {}
    for name, answers in (("positive", POSITIVE), ("negative", HITS_ANSWERS)):
        client = app.test_client()
        lid = make_launch(client, data=GATE)
        tablet.post("/tablet", data={"code": start(client, lid, "paired")})
        answer_all(tablet, answers)
        opened[name] = "followup" in launch_data(app, lid)
        client.post(f"/l/{lid}/tablet/unlock")
        tablet.get("/tablet/q")
    assert opened == {"positive": True, "negative": False}
