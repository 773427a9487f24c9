"""What a launch page shows of its patient beyond this launch is read with the launch, on every request: the result
page's open follow-ups, the referral page's "a referral exists for this visit" and the gate's latest referral, screen
mark and open follow-ups come in the launch's own statement, joined on the launch row's keys
(docs/decisions/0017-launch-patient-key.md), so another launch's change (the clinic tablet's follow-up, another
clinician's referral) shows on the next GET. A launch without keys (made before they were kept) and a patient with
keys of an older owner (an ``ehrs`` block) are read by every key, as before. On SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select, update

from smart_app import create_app
from smart_app.launch.visit_memory import _key, patient_key
from smart_app.store.db import session_scope
from smart_app.store.models import FollowupItem, LaunchRecord, PatientMark, ReferralRecord
from tests.conftest import app_config
from tests.followup.support import NEGATIVE, POSITIVE, tablet_done
from tests.worklist.support import EHR1, clinician_context, make_referral, referral_data, with_deployment

pytestmark = pytest.mark.kiosk

PANEL = 'data-testid="followup-panel"'
SECOND = 'data-testid="second-referral-question"'
EARLIER = 'data-testid="gate-earlier"'


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, tmp_path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" \
        else f"sqlite:///{tmp_path / 'app.db'}"
    app = create_app(app_config(url))
    yield app
    app.extensions["db_engine"].dispose()


def _screened(app, make_launch, patient: str, encounter: str = "enc-1", **launch):
    """A clinician's launch whose (negative) screen is done, so its result page shows."""
    client = app.test_client()
    lid = make_launch(client, context=clinician_context("bwh", patient, "Rosa Fresh", encounter=encounter), **launch)
    assert tablet_done(app, client, lid, NEGATIVE, administered=None) is None
    return client, lid


def _tablet_item(app, make_launch, patient: str, encounter: str = "enc-1", **launch) -> tuple[object, str, str]:
    """Another launch of the patient (the clinic tablet's) whose positive self-screen opens a follow-up."""
    client = app.test_client()
    lid = make_launch(client, context=clinician_context("bwh", patient, "Rosa Fresh", encounter=encounter), **launch)
    item_id = tablet_done(app, client, lid, POSITIVE)
    assert item_id is not None
    return client, lid, item_id


def _forget_keys(app, lid: str) -> None:
    """As a launch made before the launch row kept its patient's keys."""
    with app.app_context(), session_scope(app) as db:
        db.execute(update(LaunchRecord).where(LaunchRecord.id == lid).values(patient_key=None, encounter_key=None))
        db.commit()


def test_the_launch_row_keeps_the_key_its_patients_follow_ups_carry_and_no_id(app, make_launch):
    client, lid = _screened(app, make_launch, "p-keys", iss=EHR1)
    _, _, item_id = _tablet_item(app, make_launch, "p-keys", iss=EHR1)
    with app.app_context(), session_scope(app) as db:
        launch = db.get(LaunchRecord, lid)
        item = db.get(FollowupItem, item_id)
        assert launch.patient_key == item.patient_key and launch.encounter_key == item.encounter_key
        assert "p-keys" not in launch.patient_key and "enc-1" not in launch.encounter_key


@pytest.mark.parametrize("keys", ["kept", "missing"])
def test_a_follow_up_opened_by_another_launch_shows_on_the_next_result_get_and_goes_once_recorded(
        app, make_launch, keys):
    client, lid = _screened(app, make_launch, "p-fresh", iss=EHR1)
    if keys == "missing":
        _forget_keys(app, lid)
    assert PANEL not in client.get(f"/l/{lid}/result").get_data(as_text=True)
    tablet, tablet_lid, item_id = _tablet_item(app, make_launch, "p-fresh", iss=EHR1)
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert PANEL in page and f'value="{item_id}"' in page
    # Recorded in the tablet's launch: gone from this launch's next GET.
    tablet.post(f"/l/{tablet_lid}/followup", data={"item": item_id, "response": "discussed_declined",
                                                   "back": "result"})
    assert PANEL not in client.get(f"/l/{lid}/result").get_data(as_text=True)


def test_another_patients_follow_up_does_not_show(app, make_launch):
    client, lid = _screened(app, make_launch, "p-one", iss=EHR1)
    _tablet_item(app, make_launch, "p-two", iss=EHR1)
    _tablet_item(app, make_launch, "p-one", iss=EHR1 + "2")  # the same id in another EHR: another patient
    assert PANEL not in client.get(f"/l/{lid}/result").get_data(as_text=True)


@pytest.mark.parametrize("keys", ["kept", "missing"])
def test_a_referral_made_by_another_launch_for_the_visit_shows_on_the_next_referral_page_get(
        app, make_launch, keys):
    client = app.test_client()
    ctx = clinician_context("bwh", "p-visit", "Mona Fresh", encounter="enc-visit")
    lid = make_launch(client, context=ctx, data={"referral": referral_data("bwh")["referral"]}, iss=EHR1)
    if keys == "missing":
        _forget_keys(app, lid)
    assert SECOND not in client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    # Another visit of the patient, then another patient's referral in this encounter id: still nothing.
    make_referral(app, make_launch, "bwh", "p-visit", "Mona Fresh", encounter="enc-other")
    make_referral(app, make_launch, "bwh", "p-else", "Someone Else", encounter="enc-visit")
    assert SECOND not in client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    make_referral(app, make_launch, "bwh", "p-visit", "Mona Fresh", encounter="enc-visit")
    assert SECOND in client.get(f"/l/{lid}/referrals").get_data(as_text=True)


def test_this_launchs_own_referral_is_not_an_earlier_one(app, make_launch):
    from tests.writeback.support import consent

    client = app.test_client()
    ctx = clinician_context("bwh", "p-own", "Ona Own", encounter="enc-own")
    lid = make_launch(client, context=ctx, data=referral_data("bwh"), iss=EHR1)
    assert consent(client, lid, channel="phone").status_code == 302
    assert SECOND not in client.get(f"/l/{lid}/referrals").get_data(as_text=True)


def test_with_an_ehrs_block_a_follow_up_under_the_older_iss_key_is_still_found(app, make_launch):
    """An item opened before the deployment named the EHR is keyed by the plain iss; the launch row's key is the
    EHR identity's, so the page reads by every key of the patient."""
    with_deployment(app, ehrs={"bwh": {"name": "Brigham EHR", "iss": [EHR1]}}, routing={})
    client, lid = _screened(app, make_launch, "p-old", iss=EHR1)
    _, _, item_id = _tablet_item(app, make_launch, "p-old", iss=EHR1)
    with app.app_context(), session_scope(app) as db:
        older = _key("patient", EHR1, "p-old")
        assert older != patient_key(EHR1, {"patient": {"id": "p-old"}})
        db.execute(update(FollowupItem).where(FollowupItem.id == item_id).values(patient_key=older))
        db.commit()
        assert db.scalar(select(LaunchRecord.patient_key).where(LaunchRecord.id == lid)) != older
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert PANEL in page and f'value="{item_id}"' in page


def test_an_item_of_another_visit_is_ended_by_the_result_page_read_with_the_launch(app, make_launch):
    client, lid = _screened(app, make_launch, "p-ended", encounter="enc-2", iss=EHR1)
    _, _, item_id = _tablet_item(app, make_launch, "p-ended", encounter="enc-1", iss=EHR1)
    assert PANEL in client.get(f"/l/{lid}/result").get_data(as_text=True)
    with app.app_context(), session_scope(app) as db:
        ended = db.scalar(select(FollowupItem.visit_ended_at).where(FollowupItem.id == item_id))
        assert ended is not None and (ended.replace(tzinfo=UTC) if ended.tzinfo is None else ended) \
            <= datetime.now(UTC)


def _earlier(page: str) -> str | None:
    """The gate's line of this patient's earlier referral or screen, None when it shows none."""
    return page.split(EARLIER)[1].split("</p>")[0] if EARLIER in page else None


def _gate(app, make_launch, patient: str, encounter: str = "enc-gate") -> tuple[object, str]:
    client = app.test_client()
    lid = make_launch(client, context=clinician_context("bwh", patient, "Gia Gate", encounter=encounter), iss=EHR1)
    return client, lid


@pytest.mark.parametrize("keys", ["kept", "missing"])
def test_another_launchs_screen_referral_and_follow_up_show_on_the_next_gate_get(app, make_launch, keys):
    client, lid = _gate(app, make_launch, "p-gate")
    if keys == "missing":
        _forget_keys(app, lid)
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert _earlier(page) is None and PANEL not in page
    # Another patient's screen and referral, and this patient's in another EHR: still nothing.
    _screened(app, make_launch, "p-gate-else", iss=EHR1)
    make_referral(app, make_launch, "bwh", "p-gate-else", "Someone Else", encounter="enc-gate")
    _screened(app, make_launch, "p-gate", iss=EHR1 + "2")
    assert _earlier(client.get(f"/l/{lid}/").get_data(as_text=True)) is None
    # Another launch screens this patient in another visit: the next GET says so.
    _screened(app, make_launch, "p-gate", encounter="enc-before", iss=EHR1)
    line = _earlier(client.get(f"/l/{lid}/").get_data(as_text=True))
    assert line is not None and "screened, no referral" in line and "(this visit)" not in line
    # Another launch refers the patient in this visit: the referral is preferred to the screen.
    make_referral(app, make_launch, "bwh", "p-gate", "Gia Gate", encounter="enc-gate")
    line = _earlier(client.get(f"/l/{lid}/").get_data(as_text=True))
    assert line is not None and "referral open" in line and "not contacted yet" in line and "(this visit)" in line
    # The clinic tablet opens a follow-up: it shows on the next GET.
    _, _, item_id = _tablet_item(app, make_launch, "p-gate", iss=EHR1)
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert PANEL in page and f'value="{item_id}"' in page


def test_a_screen_or_referral_older_than_the_window_does_not_show_on_the_gate(app, make_launch):
    client, lid = _gate(app, make_launch, "p-old-gate")
    _screened(app, make_launch, "p-old-gate", encounter="enc-before", iss=EHR1)
    make_referral(app, make_launch, "bwh", "p-old-gate", "Gia Gate", encounter="enc-before")
    assert _earlier(client.get(f"/l/{lid}/").get_data(as_text=True)) is not None
    with app.app_context(), session_scope(app) as db:
        long_ago = datetime(2020, 1, 1, tzinfo=UTC)
        db.execute(update(PatientMark).values(at=long_ago))
        db.execute(update(ReferralRecord).values(created_at=long_ago))
        db.commit()
    assert _earlier(client.get(f"/l/{lid}/").get_data(as_text=True)) is None


@pytest.mark.parametrize(("keys", "statements"), [("kept", 1), ("missing", 2)])
def test_the_gate_reads_its_patient_in_the_launchs_statement_when_the_launch_has_keys(
        app, make_launch, keys, statements):
    client, lid = _gate(app, make_launch, "p-count")
    _screened(app, make_launch, "p-count", iss=EHR1)
    if keys == "missing":
        _forget_keys(app, lid)
    for _ in range(2):  # the first GETs count the check-in and start the idle timeout again
        client.get(f"/l/{lid}/")
    seen: list[str] = []
    engine = app.extensions["db_engine"]

    def count(_conn, _cursor, statement, *_args):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        page = client.get(f"/l/{lid}/").get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert _earlier(page) is not None
    assert len(seen) == statements, seen


def test_with_an_ehrs_block_a_screen_under_the_older_iss_key_still_shows_on_the_gate(app, make_launch):
    with_deployment(app, ehrs={"bwh": {"name": "Brigham EHR", "iss": [EHR1]}}, routing={})
    client, lid = _gate(app, make_launch, "p-old-key")
    _screened(app, make_launch, "p-old-key", encounter="enc-before", iss=EHR1)
    with app.app_context(), session_scope(app) as db:
        db.execute(update(PatientMark).values(patient_key=_key("patient", EHR1, "p-old-key")))
        db.commit()
    line = _earlier(client.get(f"/l/{lid}/").get_data(as_text=True))
    assert line is not None and "screened, no referral" in line
