"""The forced response to a positive self-administered screen, at the level the clinician and social worker meet it:
the launch's result page after hand-back, "Done" held back until a response is recorded, the next launch for the
patient, and the social-work queue once the item is past the visit, scoped by EHR and site."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from smart_app import create_app
from smart_app.store.db import session_scope
from smart_app.store.models import AuditEvent, FollowupItem, ReportEvent
from tests.conftest import app_config
from tests.followup.support import NEGATIVE, POSITIVE, tablet_done
from tests.worklist.support import EHR1, EHR2, SNOMED_SW, clinician_context, role, with_deployment, worker_context

pytestmark = pytest.mark.kiosk


def _item(app, item_id: str) -> FollowupItem:
    with app.app_context(), session_scope(app) as db:
        item = db.get(FollowupItem, item_id)
        db.expunge(item)
        return item


def _count(app, model, *where) -> int:
    with app.app_context(), session_scope(app) as db:
        return db.scalar(select(func.count()).select_from(model).where(*where))


def _launch(app, make_launch, *, patient="p-rosa", encounter=None, site="bwh", iss=EHR1):
    client = app.test_client()
    ctx = clinician_context(site, patient, "Rosa Tablet", encounter=encounter)
    return client, make_launch(client, context=ctx, iss=iss)


# -- opening the item ------------------------------------------------------------------------------------------------


def test_a_positive_self_screen_opens_one_item_however_often_the_tablet_calls(app, make_launch):
    client, lid = _launch(app, make_launch)
    first = tablet_done(app, client, lid, POSITIVE)
    again = tablet_done(app, client, lid, POSITIVE)
    assert first and first == again
    assert _count(app, FollowupItem) == 1
    assert _count(app, ReportEvent, ReportEvent.kind == "self_positive") == 1
    item = _item(app, first)
    assert item.status == "open" and item.response is None and item.site == "bwh"
    # Keyed like referrals: no chart id in any plain column.
    plain = " ".join(str(getattr(item, c)) for c in ("patient_key", "encounter_key", "site_keys", "ehr", "site"))
    assert "p-rosa" not in plain and "enc-p-rosa" not in plain and "MRN-p-rosa" not in plain
    assert item.patient_key and item.encounter_key and "Organization/org-bwh" in item.site_keys


def test_no_item_for_a_negative_self_screen_or_a_screen_the_clinician_asked(app, make_launch):
    client, lid = _launch(app, make_launch, patient="p-neg")
    assert tablet_done(app, client, lid, NEGATIVE) is None
    client, lid = _launch(app, make_launch, patient="p-clin")
    assert tablet_done(app, client, lid, POSITIVE, administered=None) is None  # the clinician read the questions
    client, lid = _launch(app, make_launch, patient="p-self")
    assert tablet_done(app, client, lid, POSITIVE) is not None  # the same answers, self-administered
    assert _count(app, FollowupItem) == 1


def test_positive_is_the_instruments_cut_off_not_the_word_the_tablet_stored(app, make_launch, tmp_path):
    client, lid = _launch(app, make_launch, patient="p-word")
    # A tablet that stored "negative" for answers over the cut-off still opens the item.
    assert tablet_done(app, client, lid, POSITIVE, interpretation="negative") is not None
    # A deployment's own cut-off (HITS > 20) decides too: 16 is not positive there.
    strict = create_app(app_config(f"sqlite:///{tmp_path / 'strict.db'}", CUTOFFS={"hits": 20}))
    try:
        from tests.conftest import launch_for

        c2 = strict.test_client()
        lid2 = launch_for(strict, c2, clinician_context("bwh", "p-strict", "Sam Strict"), iss=EHR1)
        assert tablet_done(strict, c2, lid2, POSITIVE) is None
    finally:
        strict.extensions["db_engine"].dispose()


# -- the launch: result page after hand-back, "Done", the next launch --------------------------------------------------


def test_result_page_asks_for_a_response_and_done_waits_for_it(app, make_launch):
    client, lid = _launch(app, make_launch)
    item_id = tablet_done(app, client, lid, POSITIVE)
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert 'data-testid="followup-panel"' in page and item_id in page
    for code in ("discussed_referred", "discussed_declined", "not_safe_now"):
        assert f'value="{code}"' in page
    # "Done" is held back: the result again, saying why (never trapped: the panel offers "not safe now").
    done = client.post(f"/l/{lid}/finish")
    assert done.status_code == 302 and done.headers["Location"].endswith("/result?pending=followup#followup")
    page = client.get(f"/l/{lid}/result?pending=followup").get_data(as_text=True)
    assert 'data-testid="followup-pending"' in page
    resp = client.post(f"/l/{lid}/followup", data={"item": item_id, "response": "discussed_referred",
                                                   "back": "result"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/l/{lid}/result#followup")
    assert 'data-testid="followup-panel"' not in client.get(f"/l/{lid}/result").get_data(as_text=True)
    item = _item(app, item_id)
    assert (item.status, item.response, item.responder_role) == ("recorded", "discussed_referred", "clinician")
    assert item.responded_at is not None
    assert _count(app, ReportEvent, ReportEvent.kind == "self_responded") == 1
    assert _count(app, AuditEvent, AuditEvent.action == "followup_response",
                  AuditEvent.detail == "discussed_referred") == 1
    assert client.post(f"/l/{lid}/finish").status_code == 200  # the launch ends


def test_an_unknown_response_or_another_patients_item_is_refused(app, make_launch):
    client, lid = _launch(app, make_launch)
    item_id = tablet_done(app, client, lid, POSITIVE)
    assert client.post(f"/l/{lid}/followup", data={"item": item_id, "response": "maybe"}).status_code == 400
    other, other_lid = _launch(app, make_launch, patient="p-other")
    assert other.post(f"/l/{other_lid}/followup", data={"item": item_id, "response": "discussed_declined"}
                      ).status_code == 404
    # The same patient id at another EHR is another patient.
    ehr2, ehr2_lid = _launch(app, make_launch, iss=EHR2)
    assert ehr2.post(f"/l/{ehr2_lid}/followup", data={"item": item_id, "response": "discussed_declined"}
                     ).status_code == 404
    assert _item(app, item_id).status == "open"


def test_not_safe_now_keeps_it_open_for_the_next_launch_for_that_patient(app, make_launch):
    client, lid = _launch(app, make_launch, encounter="enc-1")
    item_id = tablet_done(app, client, lid, POSITIVE)
    client.post(f"/l/{lid}/followup", data={"item": item_id, "response": "not_safe_now", "back": "result"})
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert 'data-testid="followup-reminder"' in page and 'data-testid="followup-panel"' not in page
    assert client.post(f"/l/{lid}/finish").status_code == 200  # answered in this launch: "Done" works
    item = _item(app, item_id)
    assert item.status == "open" and item.response == "not_safe_now" and item.visit_ended_at is None
    # Next visit, another clinician's launch: the gate asks again, first.
    nxt, nxt_lid = _launch(app, make_launch, encounter="enc-2")
    gate = nxt.get(f"/l/{nxt_lid}/").get_data(as_text=True)
    assert 'data-testid="followup-panel"' in gate and "Last time it was not safe to discuss" in gate
    assert gate.index('data-testid="followup-panel"') < gate.index('class="gate"')
    assert _item(app, item_id).visit_ended_at is not None  # another encounter: that visit is over
    resp = nxt.post(f"/l/{nxt_lid}/followup", data={"item": item_id, "response": "discussed_declined",
                                                    "back": "start"})
    assert resp.headers["Location"].endswith(f"/l/{nxt_lid}/#followup")
    assert _item(app, item_id).status == "recorded"
    assert 'data-testid="followup-panel"' not in nxt.get(f"/l/{nxt_lid}/").get_data(as_text=True)
    # Counted once as responded, at the first response.
    assert _count(app, ReportEvent, ReportEvent.kind == "self_responded") == 1


# -- the social-work queue -------------------------------------------------------------------------------------------

WORKERS = {
    "sw_bwh": (EHR1, worker_context("Practitioner/sw-bwh", "Devon Social",
                                    [role([SNOMED_SW], organizations=["Organization/org-bwh"])])),
    "sw_mgh": (EHR1, worker_context("Practitioner/sw-mgh", "Emery Social", [role(texts=["Medical social worker"])])),
    "sw_ehr2": (EHR2, worker_context("Practitioner/sw-bwh", "Devon Social",
                                     [role([SNOMED_SW], organizations=["Organization/org-bwh"])])),
    "pm": (EHR1, worker_context("Practitioner/pm", "Pat Manager", [role(texts=["Program manager"])])),
}


def _queue(app, make_launch, who: str):
    iss, ctx = WORKERS[who]
    client = app.test_client()
    lid = make_launch(client, context=ctx, iss=iss, kind="standalone")
    return client, lid, client.get(f"/l/{lid}/worklist").get_data(as_text=True)


def _rows(page: str) -> set[str]:
    return set(re.findall(r'data-testid="followup-row" data-id="([^"]+)"', page))


def _age(app, item_id: str, hours: float) -> None:
    with app.app_context(), session_scope(app) as db:
        db.get(FollowupItem, item_id).opened_at = datetime.now(UTC) - timedelta(hours=hours)
        db.commit()


def test_the_queue_shows_an_item_left_open_past_the_visit_only_to_that_sites_staff(app, make_launch):
    with_deployment(app, worklist={"coverage": {"users": {"Practitioner/sw-mgh": ["urn:ipv-sandbox:site|mgh"]},
                                                "roles": {"program_manager": ["Organization/org-bwh"]}}},
                    routing={"teams": [{"id": "sw-bwh", "name": "BWH social work", "sites": ["Organization/org-bwh"]},
                                       {"id": "sw-mgh", "name": "MGH social work", "sites": ["Location/loc-mgh"]}]},
                    roles={"social_worker": {"codes": [{"system": SNOMED_SW["system"], "code": SNOMED_SW["code"]}],
                                             "texts": ["social worker"]},
                           "program_manager": {"texts": ["program manager"]}},
                    followup_visit_hours=6)
    client, lid = _launch(app, make_launch, patient="p-bwh", site="bwh")
    bwh = tablet_done(app, client, lid, POSITIVE)
    client, lid = _launch(app, make_launch, patient="p-mgh", site="mgh")
    mgh = tablet_done(app, client, lid, POSITIVE)
    client, lid = _launch(app, make_launch, patient="p-other-ehr", site="bwh", iss=EHR2)
    other_ehr = tablet_done(app, client, lid, POSITIVE)
    # During the visit: nobody's queue.
    assert _rows(_queue(app, make_launch, "sw_bwh")[2]) == set()
    for item_id in (bwh, mgh, other_ehr):
        _age(app, item_id, 7)
    seen = {who: _rows(_queue(app, make_launch, who)[2]) for who in WORKERS}
    assert seen == {"sw_bwh": {bwh}, "sw_mgh": {mgh}, "sw_ehr2": {other_ehr}, "pm": {bwh}}
    # What the social worker reads: the patient's name and MRN, the site, no answers and no score.
    page = _queue(app, make_launch, "sw_bwh")[2]
    start = page.index('data-testid="followups"')
    section = page[start:page.index("</section>", start)]
    assert "Rosa Tablet" in section and "MRN-p-bwh" in section and "Brigham" in section
    assert "LA6482-9" not in section
    # The score (16) nowhere in what is read: text only (a CSRF token or a path may hold any digits), the opened-at
    # time taken out (20:16 is a time, not a score).
    words = re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", " ", re.sub(r"<[^>]+>", " ", section))
    assert not re.search(r"\b16\b", words)
    # The program manager reads, acts on nothing.
    pm_client, pm_lid, pm_page = _queue(app, make_launch, "pm")
    assert 'data-testid="followup-discussed_referred"' not in pm_page
    assert pm_client.post(f"/l/{pm_lid}/worklist/followup/{bwh}", data={"response": "discussed_referred"}
                          ).status_code == 403
    # Another site's social worker cannot act on it either.
    mgh_client, mgh_lid, _page = _queue(app, make_launch, "sw_mgh")
    assert mgh_client.post(f"/l/{mgh_lid}/worklist/followup/{bwh}", data={"response": "discussed_referred"}
                           ).status_code == 404
    sw, sw_lid, _page = _queue(app, make_launch, "sw_bwh")
    resp = sw.post(f"/l/{sw_lid}/worklist/followup/{bwh}", data={"response": "not_safe_now"})
    assert resp.status_code == 302
    assert _rows(sw.get(f"/l/{sw_lid}/worklist").get_data(as_text=True)) == {bwh}  # still open: still listed
    sw.post(f"/l/{sw_lid}/worklist/followup/{bwh}", data={"response": "discussed_referred"})
    assert _rows(sw.get(f"/l/{sw_lid}/worklist").get_data(as_text=True)) == set()
    item = _item(app, bwh)
    assert (item.status, item.response, item.responder_role) == ("recorded", "discussed_referred", "social_worker")


def test_a_later_launch_in_another_encounter_ends_the_visit_before_the_hours_pass(app, make_launch):
    client, lid = _launch(app, make_launch, patient="p-soon", encounter="enc-a")
    item_id = tablet_done(app, client, lid, POSITIVE)
    assert _rows(_queue(app, make_launch, "sw_bwh")[2]) == set()
    nxt, nxt_lid = _launch(app, make_launch, patient="p-soon", encounter="enc-b")
    nxt.get(f"/l/{nxt_lid}/")
    # The BWH site is not routed in this deployment: the unrouted queue, every social worker of the EHR.
    assert _rows(_queue(app, make_launch, "sw_bwh")[2]) == {item_id}
    assert _rows(_queue(app, make_launch, "sw_mgh")[2]) == {item_id}
    assert _rows(_queue(app, make_launch, "sw_ehr2")[2]) == set()


def test_a_recorded_item_is_purged_with_closed_referrals_and_an_open_one_is_kept(app, make_launch):
    from smart_app.worklist.retention import purge_referrals

    client, lid = _launch(app, make_launch, patient="p-old")
    recorded = tablet_done(app, client, lid, POSITIVE)
    client.post(f"/l/{lid}/followup", data={"item": recorded, "response": "discussed_declined"})
    client, lid = _launch(app, make_launch, patient="p-open")
    still_open = tablet_done(app, client, lid, POSITIVE)
    with app.app_context(), session_scope(app) as db:
        assert purge_referrals(db)["followups"] == 0  # not yet
        for item_id in (recorded, still_open):
            row = db.get(FollowupItem, item_id)
            row.opened_at = row.responded_at = datetime.now(UTC) - timedelta(days=366)
        db.commit()
        assert purge_referrals(db)["followups"] == 1
        assert db.get(FollowupItem, recorded) is None and db.get(FollowupItem, still_open) is not None
    assert _count(app, ReportEvent, ReportEvent.kind == "self_responded") == 1  # the report keeps its count
