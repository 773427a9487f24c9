"""Finding a referral: by the chart note's reference code, or by the patient's MRN typed by the social worker
(matched through a keyed HMAC kept at consent; the MRN is never in a URL, a log, the audit or the database).
Saved views: one click applies a user's saved filters; nobody else sees them."""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import select, update

from fhir.builders import reference_code
from smart_app.store.crypto import keyed_hash
from smart_app.store.db import session_scope
from smart_app.store.models import AuditEvent, LaunchRecord, ReferralRecord, SavedQueueFilter
from tests.worklist.support import EHR1, EHR2, SNOMED_SW, make_referral, role, worker_context

pytestmark = [pytest.mark.worklist, pytest.mark.routing]

SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"
ORGS = ["Organization/org-bwh", "Organization/org-mgh"]


def _sw(app, make_launch, reference="Practitioner/sw", iss=EHR1):
    client = app.test_client()
    ctx = worker_context(reference, "Sam Social", [role([SNOMED_SW], organizations=ORGS)], SW_SCOPE)
    return client, make_launch(client, context=ctx, iss=iss, kind="standalone")


def _rows(page: str) -> list[str]:
    return re.findall(r'data-testid="referral-([^"]+)"', page)


def _follow(client, resp):
    assert resp.status_code == 302, resp.status_code
    return resp.headers["Location"], client.get(resp.headers["Location"]).get_data(as_text=True)


def test_search_by_reference_code_as_typed_finds_the_referral_even_closed(app, make_launch):
    made = [make_referral(app, make_launch, site, f"p{i}", f"Pat Code{i}") for i, site in enumerate(("bwh", "mgh",
                                                                                                    "bwh"))]
    client, lid = _sw(app, make_launch)
    client.post(f"/l/{lid}/worklist/{made[1]}/status",
                data={"status": "rejected", "outcome": "duplicate"})  # closed: not in the open list
    code = reference_code(made[1])
    typed = code.replace("-", "").lower()
    where, page = _follow(client, client.post(f"/l/{lid}/worklist/search", data={"by": "code", "q": typed}))
    assert f"ref={code}" in where
    assert _rows(page) == [made[1]] and 'data-testid="search-note"' in page
    assert _rows(client.get(f"/l/{lid}/worklist").get_data(as_text=True)) == [made[0], made[2]]  # search cleared
    where, _page = _follow(client, client.post(f"/l/{lid}/worklist/search", data={"by": "code", "q": "not a code"}))
    assert "search_error=code" in where and "ref=" not in where


def test_search_by_mrn_never_puts_the_mrn_in_a_url_log_audit_or_table(app, make_launch, caplog):
    caplog.set_level(logging.DEBUG)
    mine = make_referral(app, make_launch, "bwh", "p-find", "Fay Findme")
    make_referral(app, make_launch, "mgh", "p-other", "Otto Other")
    other_ehr = make_referral(app, make_launch, "bwh", "p-find", "Fay Findme", iss=EHR2)  # same MRN, other EHR
    client, lid = _sw(app, make_launch)
    mrn = "MRN-p-find"
    typed = " mrn-P-FIND "  # as a person types it: case and spaces do not matter
    resp = client.post(f"/l/{lid}/worklist/search", data={"by": "mrn", "q": typed})
    where, page = _follow(client, resp)
    assert mrn.lower() not in where.lower() and "p-find" not in where.lower()
    assert _rows(page) == [mine] and other_ehr not in page
    assert "Referrals for the MRN you typed" in page and 'data-testid="search-unsearchable"' not in page
    # Paging and filter links keep the search without the MRN.
    for link in re.findall(r'href="([^"]+)"', page):
        assert "p-find" not in link.lower()
    assert all("p-find" not in r.getMessage().lower() for r in caplog.records)
    with app.app_context(), session_scope(app) as db:
        stored = db.get(ReferralRecord, mine)
        assert stored.mrn_key == keyed_hash("mrn|MRN-P-FIND")
        audit = list(db.scalars(select(AuditEvent)))
        assert any("search by mrn" in (a.detail or "") for a in audit)
        assert all("p-find" not in (a.detail or "").lower() for a in audit)
        for row in db.execute(select(LaunchRecord.__table__)).mappings():
            assert all(b"p-find" not in (v if isinstance(v, bytes) else str(v).encode()).lower()
                       for v in row.values() if v is not None)
    # An MRN nobody has: nothing found, said plainly.
    _where, page = _follow(client, client.post(f"/l/{lid}/worklist/search", data={"by": "mrn", "q": "000"}))
    assert _rows(page) == [] and "No referral in your queue matches this search" in page


def test_referrals_made_before_mrn_search_are_said_to_be_unsearchable_not_guessed(app, make_launch):
    old = make_referral(app, make_launch, "bwh", "p-old", "Olive Older")
    new = make_referral(app, make_launch, "bwh", "p-new", "Nina Newer")
    with app.app_context(), session_scope(app) as db:  # as a referral stored before the column existed
        db.execute(update(ReferralRecord).where(ReferralRecord.id == old).values(mrn_key=None))
    client, lid = _sw(app, make_launch)
    _where, page = _follow(client, client.post(f"/l/{lid}/worklist/search", data={"by": "mrn", "q": "MRN-p-old"}))
    assert _rows(page) == []
    note = page.split('data-testid="search-unsearchable"')[1].split("</span>")[0]
    assert "1 referrals in your queue were made before search by MRN existed" in note
    _where, page = _follow(client, client.post(f"/l/{lid}/worklist/search", data={"by": "mrn", "q": "MRN-p-new"}))
    assert _rows(page) == [new]
    _where, page = _follow(client, client.post(f"/l/{lid}/worklist/search",
                                               data={"by": "code", "q": reference_code(old)}))
    assert _rows(page) == [old]  # the reference code still finds it


def test_a_launch_without_mrn_stores_none_and_an_empty_search_is_refused(app, make_launch):
    from smart_app.worklist.search import NO_MRN, mrn_key

    assert mrn_key(None) == NO_MRN and mrn_key("  ") == NO_MRN
    client, lid = _sw(app, make_launch)
    where, page = _follow(client, client.post(f"/l/{lid}/worklist/search", data={"by": "mrn", "q": "   "}))
    assert "search_error=mrn" in where and 'data-testid="search-error"' in page


def test_saved_views_apply_in_one_click_and_belong_to_their_user(app, make_launch):
    urgent = make_referral(app, make_launch, "bwh", "p1", "Una Urgent", danger=True)
    make_referral(app, make_launch, "mgh", "p2", "Rae Routine")
    client, lid = _sw(app, make_launch)
    page = client.get(f"/l/{lid}/worklist?urgency=urgent&sort=oldest").get_data(as_text=True)
    form = page.split('action="/l/' + lid + '/worklist/saved"')[1].split("</form>")[0]
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form))
    fields.pop("csrf_token", None)
    assert fields == {"urgency": "urgent", "sort": "oldest"}
    client.post(f"/l/{lid}/worklist/saved", data={**fields, "ref": "ABCD-EFGH", "patient": "1"})
    client.post(f"/l/{lid}/worklist/saved", data=fields)  # a second click keeps one
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    views = re.findall(r'<a href="([^"]+)" data-testid="saved-view">([^<]+)</a>', page)
    assert [name for _href, name in views] == ["Urgent · Oldest first"]
    applied = client.get(views[0][0].replace("&amp;", "&")).get_data(as_text=True)
    assert _rows(applied) == [urgent]
    with app.app_context(), session_scope(app) as db:
        [row] = db.scalars(select(SavedQueueFilter))
        assert row.query == "urgency=urgent&sort=oldest"  # no search, no user id in clear
    # Another social worker (or the same id at another EHR) sees none of it and cannot delete it.
    other, olid = _sw(app, make_launch, reference="Practitioner/sw-2")
    assert 'data-testid="saved-view"' not in other.get(f"/l/{olid}/worklist").get_data(as_text=True)
    elsewhere, elid = _sw(app, make_launch, iss=EHR2)
    assert 'data-testid="saved-view"' not in elsewhere.get(f"/l/{elid}/worklist").get_data(as_text=True)
    other.post(f"/l/{olid}/worklist/saved/{row.id}/delete")
    assert 'data-testid="saved-view"' in client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    client.post(f"/l/{lid}/worklist/saved/{row.id}/delete")
    assert 'data-testid="saved-view"' not in client.get(f"/l/{lid}/worklist").get_data(as_text=True)
