"""The program report's months kept on PostgreSQL (smart_app/report/memo.py, ``report_month``): after a late change
only the months it touched are counted again (a month partition dropped by the purge too), a month that closes is
counted once, and the page and CSV are those of a count from scratch."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from config.current import replace_settings
from smart_app import create_app
from smart_app.report import measures as ms
from smart_app.report import memo
from smart_app.report import periods as pd
from smart_app.report import tables as rpt
from smart_app.store import migrate
from tests.conftest import app_config
from tests.report.test_report import NOW, TEAMS, csv_rows, pm_client, small_sites_over_a_year
from tests.support import tools

pytestmark = [pytest.mark.report, pytest.mark.postgres]


class Recounts:
    """The months each count read (``measures.count_months``; None: every month)."""

    def __init__(self, monkeypatch):
        self.months: list[list[str] | None] = []
        real = ms.count_months

        def counted(db, due, ehr, months):
            self.months.append(None if months is None else [pd.month_key(m) for m in months])
            return real(db, due, ehr, months)

        monkeypatch.setattr(ms, "count_months", counted)


def sql(app, statement: str) -> None:
    with app.extensions["db_engine"].begin() as conn:
        conn.execute(text(statement))


def page(client, lid: str, view: str, period: str) -> str:
    resp = client.get(f"/l/{lid}/report?view={view}&period={period}")
    assert resp.status_code == 200
    return re.sub(r'(data-csrf="|name="csrf_token" value=")[^"]*"', r"\1", resp.get_data(as_text=True))


def shown(client, lid: str) -> tuple:
    return (page(client, lid, "quarter", "2026-Q3"), csv_rows(client, lid, "quarter", "2026-Q3"),
            csv_rows(client, lid, "rolling", "2026-11"), csv_rows(client, lid, "month", "2026-05"))


def from_scratch(app, client, lid: str, recounts: Recounts) -> tuple:
    """Counted and decided anew: nothing kept in the database, no decision kept in memory to resume from."""
    sql(app, "DELETE FROM report_memo")
    sql(app, "DELETE FROM report_month")
    rpt.forget_decisions(app)
    out = shown(client, lid)
    assert recounts.months[-1] is None
    return out


def test_a_late_change_counts_again_only_the_months_it_touched(pg_app, monkeypatch):
    app = pg_app
    recounts = Recounts(monkeypatch)
    client, lid = pm_client(app)
    first = shown(client, lid)
    assert recounts.months == [None]  # nothing kept: every month counted once, for every period

    # A late first contact and closing outcome in August: August alone is counted again.
    sql(app, "UPDATE referral SET first_contact_at = created_at + interval '1 hour', "
             "closing_outcome = 'reached_supported' WHERE id IN (SELECT referral_id FROM referral_dims "
             "WHERE month = '2026-08' AND site = 'bwh' LIMIT 12)")
    late = shown(client, lid)
    assert recounts.months[1:] == [["2026-08"]] and late != first
    assert late == from_scratch(app, client, lid, recounts)

    # A late report event in May and a referral deleted from October: those two months.
    recounts.months.clear()
    sql(app, "INSERT INTO report_event (month, site, kind, instrument, language) VALUES "
             "('2026-05', 'mgh', 'completed', 'hits', 'en')")
    sql(app, "DELETE FROM referral WHERE id IN (SELECT referral_id FROM referral_dims WHERE month = '2026-10' "
             "LIMIT 3)")
    again = shown(client, lid)
    assert recounts.months == [["2026-05", "2026-10"]]
    assert again == from_scratch(app, client, lid, recounts)


def test_a_month_that_closes_is_counted_once_and_the_others_kept(pg_app, monkeypatch):
    app = pg_app
    recounts = Recounts(monkeypatch)
    client, lid = pm_client(app)
    shown(client, lid)
    app.config["REPORT_CLOCK"] = lambda: NOW + timedelta(days=31)  # January: December has closed
    later = csv_rows(client, lid, "rolling", "2026-12")
    assert recounts.months == [None, ["2026-12"]]
    sql(app, "DELETE FROM report_memo")
    assert csv_rows(client, lid, "rolling", "2026-12") == later and recounts.months[-1] is None


def test_report_dimensions_removed_move_a_referral_to_its_month_made_and_both_are_counted_again(pg_app, monkeypatch):
    app = pg_app
    recounts = Recounts(monkeypatch)
    client, lid = pm_client(app)
    one = ("(SELECT referral_id FROM referral_dims WHERE month = '2026-08' AND site = 'mgh' ORDER BY referral_id "
           "LIMIT 1)")
    sql(app, f"UPDATE referral SET created_at = created_at - interval '92 days' WHERE id = {one}")  # made in May
    shown(client, lid)
    # Without its dimensions it counts in the month it was made: May and August both change.
    sql(app, f"DELETE FROM referral_dims WHERE referral_id = {one}")
    moved = shown(client, lid)
    assert recounts.months[-1] == ["2026-05", "2026-08"]
    assert moved == from_scratch(app, client, lid, recounts)


def test_a_dropped_month_partition_counts_again_that_month_alone(postgres_url, monkeypatch):
    """On the migrated schema (report events in month partitions): the purge drops a month past the retention,
    which no trigger sees; that month alone is noted and counted again, and the report is the one counted from
    scratch."""
    with tools.postgres_schema(postgres_url.split("?")[0], "t_months") as url:
        engine = create_engine(url)
        try:
            migrate.upgrade(engine)
            app = create_app(app_config(url))
            replace_settings(app, **TEAMS, audit_retention_days=400)
            app.config["REPORT_CLOCK"] = lambda: NOW
            small_sites_over_a_year(app)
            old = NOW.replace(year=NOW.year - 2, month=6, day=1, hour=0)  # past the retention (400 days)
            sql(app, f"SELECT report_event_add_partition('{old:%Y-%m-%d}')")
            sql(app, f"INSERT INTO report_event (month, site, kind, instrument, language) SELECT '{old:%Y-%m}', "
                     "'mgh', 'completed', 'hits', 'en' FROM generate_series(1, 15)")
            recounts = Recounts(monkeypatch)
            client, lid = pm_client(app)
            shown(client, lid)
            assert recounts.months == [None]
            with app.app_context():
                from smart_app.report import retention
                from smart_app.store.db import get_session

                db = get_session()
                assert retention.purge(db)["report_events"] >= 15
                noted = {m for (m,) in db.execute(text("SELECT month FROM report_change"))}
            assert f"{old:%Y-%m}" in noted and "0000-00" not in noted
            after = shown(client, lid)
            assert recounts.months[-1] is not None and f"{old:%Y-%m}" in recounts.months[-1]
            assert after == from_scratch(app, client, lid, recounts)
            app.extensions["db_engine"].dispose()
        finally:
            engine.dispose()


def test_months_outlive_a_kept_report_and_keep_the_change_notes_they_need(pg_app, monkeypatch):
    """A kept report expires after 12 hours; the months kept do not: the next report counts again only the month
    changed since, and the housekeeping keeps that change's note however old, as a kept snapshot needs it. Months
    unread for a week are counted from scratch."""
    app = pg_app
    recounts = Recounts(monkeypatch)
    client, lid = pm_client(app)
    shown(client, lid)
    sql(app, "UPDATE referral SET closing_outcome = 'unreachable' WHERE id IN (SELECT referral_id FROM "
             "referral_dims WHERE month = '2026-07' AND site = 'mgh' LIMIT 11)")
    sql(app, "UPDATE report_memo SET made_at = made_at - interval '13 hours'")
    sql(app, "UPDATE report_change SET at = at - interval '2 days'")
    with app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        memo.prune(db)
        db.commit()
        assert db.execute(text("SELECT count(*) FROM report_change WHERE month = '2026-07'")).scalar() >= 1
    again = shown(client, lid)
    assert recounts.months[1:] == [["2026-07"]]
    assert again == from_scratch(app, client, lid, recounts)
    sql(app, "UPDATE report_memo SET made_at = made_at - interval '8 days'")
    recounts.months.clear()
    assert shown(client, lid) == again and recounts.months == [None]
