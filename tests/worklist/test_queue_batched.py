"""The queue page at hospital scale: a constant number of SQL statements whatever the number of referrals, pages
of referrals with the filters, counts and sort still over every referral in scope, and only the shown referrals'
patient details decrypted. (Its speed is measured by benchmarks/bench_worklist.py, never asserted here.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, event, select, update

from config.current import replace_settings
from fhir.builders import reference_code
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from tests.worklist.support import EHR1, EHR2, SNOMED_SW, make_referral, role, with_deployment, worker_context

pytestmark = pytest.mark.worklist

SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"
VIEWS = ("", "?status=all&sort=program", "?urgency=urgent&sort=site", "?program=HAVEN at MGH&sort=newest")


def _sw(app, make_launch, orgs=("Organization/org-bwh", "Organization/org-mgh")):
    client = app.test_client()
    ctx = worker_context("Practitioner/sw", "Sam Social", [role([SNOMED_SW], organizations=list(orgs))], SW_SCOPE)
    return client, make_launch(client, context=ctx, iss=EHR1, kind="standalone")


def _rows(page: str) -> list[str]:
    return re.findall(r'data-testid="referral-([^"]+)"', page)


def _statements(app, client, url: str) -> int:
    """SQL statements the app sends to answer one GET (an SQLAlchemy event listener on the app's engine)."""
    sent = []
    engine = app.extensions["db_engine"]

    def count(_conn, _cursor, statement, *_rest):
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        resp = client.get(url)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert resp.status_code == 200
    return len(sent)


def _refer(app, make_launch, i: int, **kw) -> str:
    site = ("bwh", "mgh")[i % 2]
    return make_referral(app, make_launch, site, f"p{i}", f"Patient Number{i}", danger=i % 3 == 0, **kw)


def test_queue_page_sends_as_many_sql_statements_for_eight_referrals_as_for_two(app, make_launch):
    client, lid = _sw(app, make_launch)
    for i in range(2):
        _refer(app, make_launch, i)
    urls = [f"/l/{lid}/worklist{q}" for q in VIEWS]
    client.get(urls[0])  # the first request of a process may read what later ones reuse
    few = [_statements(app, client, url) for url in urls]
    for i in range(2, 8):
        _refer(app, make_launch, i)
    many = [_statements(app, client, url) for url in urls]
    assert len(_rows(client.get(urls[1]).get_data(as_text=True))) == 8  # the count is of a page that lists them
    assert many == few


def test_pages_keep_filters_counts_and_sort_over_every_referral(app, make_launch, monkeypatch):
    replace_settings(app, WORKLIST_PAGE_SIZE=2)
    made = [_refer(app, make_launch, i) for i in range(5)]
    with app.app_context(), session_scope(app) as db:  # distinct ages: a stable order to page through
        for hours, rid in enumerate(made):
            db.execute(update(ReferralRecord).where(ReferralRecord.id == rid)
                       .values(created_at=datetime.now(UTC) - timedelta(hours=10 - hours)))
    client, lid = _sw(app, make_launch)
    first = client.get(f"/l/{lid}/worklist?sort=oldest").get_data(as_text=True)
    assert _rows(first) == made[:2]
    # Counts are over all five, not the page's two.
    assert re.search(r'data-testid="filter-status-open"[^>]*>[^<]*<span class="count">\(5\)', first)
    assert re.search(r'data-testid="filter-program-HAVEN at MGH"[^>]*>[^<]*<span class="count">\(2\)', first)
    assert re.search(r'data-testid="filter-program-Passageway at BWH"[^>]*>[^<]*<span class="count">\(3\)', first)
    assert 'data-testid="shown-count"' in first and re.search(r"\b5\b", first.split('data-testid="shown-count"')[1]
                                                                 .split("</p>")[0])
    # The next pages follow in the same order, with the filters and sort kept in the links.
    seen, page = [], first
    while True:
        seen += _rows(page)
        nxt = re.search(r'<a href="([^"]+)"[^>]*data-testid="page-next"', page)
        if not nxt:
            break
        url = nxt.group(1).replace("&amp;", "&")
        assert "sort=oldest" in url
        page = client.get(url).get_data(as_text=True)
    assert seen == made
    # A filter pages too: Passageway (BWH) referrals oldest first, two then one.
    bwh = [r for i, r in enumerate(made) if i % 2 == 0]
    page1 = client.get(f"/l/{lid}/worklist?program=Passageway at BWH&sort=oldest").get_data(as_text=True)
    page2 = client.get(f"/l/{lid}/worklist?program=Passageway at BWH&sort=oldest&page=2").get_data(as_text=True)
    assert _rows(page1) + _rows(page2) == bwh and 'data-testid="page-previous"' in page2
    # A page past the end shows the last page, not an empty list.
    assert _rows(client.get(f"/l/{lid}/worklist?sort=oldest&page=99").get_data(as_text=True)) == made[4:]
    # The CSV export is the whole filtered list, not one page.
    csv_text = client.get(f"/l/{lid}/worklist/export.csv?sort=oldest").get_data(as_text=True)
    assert [line.split(",")[0] for line in csv_text.splitlines()[1:]] == [reference_code(r) for r in made]


def test_only_the_shown_referrals_are_decrypted(app, make_launch, monkeypatch):
    from smart_app.store import crypto

    replace_settings(app, WORKLIST_PAGE_SIZE=2)
    for i in range(5):
        _refer(app, make_launch, i)
    client, lid = _sw(app, make_launch)
    client.get(f"/l/{lid}/worklist")
    decrypted = []
    real = crypto.decrypt_json

    def spy(blob, *, where="record"):
        decrypted.append(where)
        return real(blob, where=where)

    monkeypatch.setattr(crypto, "decrypt_json", spy)
    monkeypatch.setattr("smart_app.worklist.views.decrypt_json", spy)
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert len(_rows(page)) == 2 and decrypted.count("referral summary") == 2


def test_program_filter_and_counts_never_show_another_sites_or_ehrs_programs(app, make_launch):
    # Each site has a team, so no referral here is in the unrouted queue every social worker of its EHR sees.
    with_deployment(app, routing={"teams": [{"id": "t-bwh", "name": "BWH", "sites": ["Organization/org-bwh"]},
                                            {"id": "t-mgh", "name": "MGH", "sites": ["Organization/org-mgh"]}]})
    mine = make_referral(app, make_launch, "bwh", "p-bwh", "Bea Brigham")
    make_referral(app, make_launch, "mgh", "p-mgh", "Mia General")  # HAVEN at MGH, another site
    make_referral(app, make_launch, "mgh", "p-other", "Olga Otherehr", iss=EHR2)  # same program, other EHR
    client, lid = _sw(app, make_launch, orgs=("Organization/org-bwh",))
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _rows(page) == [mine] and "HAVEN at MGH" not in page
    filtered = client.get(f"/l/{lid}/worklist?program=HAVEN at MGH").get_data(as_text=True)
    assert _rows(filtered) == [] and "Mia General" not in filtered and "Olga" not in filtered


def test_referrals_stored_before_the_program_index_are_indexed_from_their_summary_once(app, make_launch):
    from smart_app.store.models import ReferralProgram

    old = make_referral(app, make_launch, "mgh", "p-old", "Olive Older")
    with app.app_context(), session_scope(app) as db:  # as a referral stored before migration 0009
        db.execute(delete(ReferralProgram).where(ReferralProgram.referral_id == old))
        db.execute(update(ReferralRecord).where(ReferralRecord.id == old).values(program_keys=None))
    client, lid = _sw(app, make_launch)
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert re.search(r'data-testid="filter-program-HAVEN at MGH"[^>]*>[^<]*<span class="count">\(1\)', page)
    assert _rows(client.get(f"/l/{lid}/worklist?program=HAVEN at MGH").get_data(as_text=True)) == [old]
    with app.app_context(), session_scope(app) as db:
        [row] = db.scalars(select(ReferralProgram).where(ReferralProgram.referral_id == old))
        assert row.program_enc and b"HAVEN" not in row.program_enc and "HAVEN" not in row.key
        assert db.get(ReferralRecord, old).program_keys == row.key


def test_a_referral_with_program_rows_but_no_program_keys_takes_its_keys_from_the_rows(app, make_launch):
    """As an older app version stores one (program rows, no ``program_keys``): counted and filtered once indexed,
    its rows kept as they are."""
    from smart_app.store.models import ReferralProgram

    rid = make_referral(app, make_launch, "bwh", "p-mid", "Mae Middle")
    with app.app_context(), session_scope(app) as db:
        before = sorted(db.scalars(select(ReferralProgram.id).where(ReferralProgram.referral_id == rid)))
        db.execute(update(ReferralRecord).where(ReferralRecord.id == rid).values(program_keys=None))
    client, lid = _sw(app, make_launch)
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert re.search(r'data-testid="filter-program-Passageway at BWH"[^>]*>[^<]*<span class="count">\(1\)', page)
    with app.app_context(), session_scope(app) as db:
        assert sorted(db.scalars(select(ReferralProgram.id).where(ReferralProgram.referral_id == rid))) == before
        assert db.get(ReferralRecord, rid).program_keys
