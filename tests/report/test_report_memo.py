"""The program report kept on PostgreSQL (smart_app/report/memo.py): shown again without counting while the months it
shows do not change; counted again once a transaction the kept report did not see changes one of them, whatever
the order transactions commit in; kept through a change to the open month only; the same numbers as counting
afresh."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from config.current import replace_settings
from smart_app import create_app
from smart_app.report import measures as ms
from smart_app.report import memo
from tests.conftest import app_config
from tests.report.test_report import NOW, TEAMS, Seed, csv_rows, pm_client, seed_referrals, small_sites_over_a_year
from tests.support import tools

pytestmark = [pytest.mark.report, pytest.mark.postgres]


class Counting:
    """How many times the report was counted (``measures.collect``)."""

    def __init__(self, monkeypatch):
        self.times = 0
        real = ms.collect

        def counted(*args, **kwargs):
            self.times += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(ms, "collect", counted)


def sql(app, statement: str) -> None:
    with app.extensions["db_engine"].begin() as conn:
        conn.execute(text(statement))


def afresh(app, client, lid, view: str, period: str) -> dict:
    """The report counted now, every kept one forgotten."""
    sql(app, "DELETE FROM report_memo")
    return csv_rows(client, lid, view, period)


def test_a_kept_report_is_shown_until_a_closed_month_it_shows_changes(pg_app, monkeypatch):
    app = pg_app
    counting = Counting(monkeypatch)
    client, lid = pm_client(app)
    first = csv_rows(client, lid, "quarter", "2026-Q3")
    assert counting.times == 1
    assert csv_rows(client, lid, "quarter", "2026-Q3") == first
    memo.forget(app)  # as a new process: read from the database
    assert csv_rows(client, lid, "quarter", "2026-Q3") == first and counting.times == 1
    assert csv_rows(client, lid, "month", "2026-08") != first and counting.times == 2  # a period of its own

    # A referral made in the open month (December): the months shown are unchanged, the report is kept.
    seed_referrals(app, [Seed("bwh", "BWH", "passageway-bwh", "coverage", NOW - timedelta(hours=2))])
    assert csv_rows(client, lid, "quarter", "2026-Q3") == first and counting.times == 2

    # A late first contact and closing outcome in August: counted again, and as counting afresh gives.
    sql(app, "UPDATE referral SET first_contact_at = created_at + interval '1 hour', "
             "closing_outcome = 'reached_supported' WHERE id IN (SELECT referral_id FROM referral_dims "
             "WHERE month = '2026-08' AND site = 'bwh' LIMIT 12)")
    late = csv_rows(client, lid, "quarter", "2026-Q3")
    assert counting.times == 3 and late != first
    assert late == afresh(app, client, lid, "quarter", "2026-Q3")


def test_a_change_committed_after_the_report_was_counted_but_begun_before_is_seen(pg_app, monkeypatch):
    app = pg_app
    counting = Counting(monkeypatch)
    client, lid = pm_client(app)
    conn = app.extensions["db_engine"].connect()
    try:
        # A transaction that changes a July referral and stays open while the report is counted and kept...
        conn.execute(text("UPDATE referral SET closing_outcome = 'unreachable' WHERE id IN (SELECT referral_id FROM "
                          "referral_dims WHERE month = '2026-07' AND site = 'mgh' LIMIT 11)"))
        # ...and a later one that commits first (its id is higher: "the highest id seen" would miss the first).
        sql(app, "UPDATE referral SET handoff = 'offered' WHERE id IN (SELECT referral_id FROM referral_dims "
                 "WHERE month = '2026-06' AND site = 'bwh' LIMIT 1)")
        before = csv_rows(client, lid, "rolling", "2026-11")
        assert counting.times == 1
        assert csv_rows(client, lid, "rolling", "2026-11") == before and counting.times == 1
        conn.commit()
    finally:
        conn.close()
    after = csv_rows(client, lid, "rolling", "2026-11")
    assert counting.times == 2 and after == afresh(app, client, lid, "rolling", "2026-11")
    assert after["site:mgh"] != before["site:mgh"]


def test_report_events_and_deleted_referrals_count_as_changes_and_old_notes_are_pruned(pg_app, monkeypatch):
    app = pg_app
    counting = Counting(monkeypatch)
    client, lid = pm_client(app)
    csv_rows(client, lid, "month", "2026-10")
    sql(app, "INSERT INTO report_event (month, site, kind, instrument, language) VALUES "
             "('2026-10', 'mgh', 'completed', 'hits', 'en')")
    csv_rows(client, lid, "month", "2026-10")
    assert counting.times == 2
    sql(app, "DELETE FROM referral WHERE id IN (SELECT referral_id FROM referral_dims WHERE month = '2026-10' "
             "LIMIT 3)")
    assert csv_rows(client, lid, "month", "2026-10") == afresh(app, client, lid, "month", "2026-10")
    assert counting.times == 4
    with app.app_context():
        from smart_app.report import retention
        from smart_app.store.db import get_session

        db = get_session()
        assert memo.active(db)
        sql(app, "UPDATE report_change SET at = now() - interval '2 days'")
        retention.purge(db)
        assert db.execute(text("SELECT count(*) FROM report_change")).scalar() == 0


@pytest.mark.parametrize("kept_first", [True, False], ids=["kept-first", "bare-first"])
def test_two_apps_in_one_process_each_ask_their_own_database_whether_reports_are_kept(pg_app, postgres_url,
                                                                                    monkeypatch, kept_first):
    """Two apps in one process (tests, benches), each on a database of its own: one with the change notes'
    triggers, one without (made before them). Whichever reports first, the other asks its own database: the one
    without counts at every request, the one with keeps its report; both show the same numbers (the same year)."""
    kept = pg_app
    with tools.postgres_schema(postgres_url.split("?")[0], "t_bare") as url:
        bare = create_app(app_config(url))
        try:
            replace_settings(bare, **TEAMS)
            bare.config["REPORT_CLOCK"] = lambda: NOW
            for table, _function in memo.TABLES:
                for op in ("insert", "update", "delete", "truncate"):
                    sql(bare, f"DROP TRIGGER {table}_report_{op} ON {table}")
            small_sites_over_a_year(bare)
            counting = Counting(monkeypatch)
            shown = {}
            for app in ((kept, bare) if kept_first else (bare, kept)):
                client, lid = pm_client(app)
                before = counting.times
                shown[app] = [csv_rows(client, lid, "quarter", "2026-Q3") for _ in range(3)]
                assert counting.times - before == (1 if app is kept else 3)
            assert shown[kept] == shown[bare]
        finally:
            bare.extensions["db_engine"].dispose()
