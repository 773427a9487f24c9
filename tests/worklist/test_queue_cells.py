"""The queue's counts kept on write (PostgreSQL, smart_app/store/queue_cells.py): after inserts, status changes,
assignments, re-routing, site keys added and removed, urgency changes and deletes, in single-row and set-based
statements and in concurrent transactions, ``referral_cell`` holds exactly what a fresh count of the closed
referrals gives, and every ``referral.site_keyset`` is its site keys' set. The migration's backfill fills the same."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from sandbox_ehr.harness.bulk import insert_referrals
from smart_app import create_app
from smart_app.store import queue_cells
from tests.conftest import app_config
from tests.worklist.support import EHR1, EHR2

pytestmark = [pytest.mark.worklist, pytest.mark.postgres]

KEPT = "SELECT grain, bucket, " + ", ".join(queue_cells.CELL_COLUMNS) + ", n FROM referral_cell WHERE n <> 0"
FRESH = ("SELECT grain, bucket, " + ", ".join(queue_cells.CELL_COLUMNS) + ", sum(d) FROM ("
         + queue_cells._cells_of("referral", 1) + ") x CROSS JOIN LATERAL (VALUES ('m', date_trunc('month', x.day)"
         "::date), ('d', x.day)) g(grain, bucket) GROUP BY 1, 2, " + ", ".join(queue_cells.CELL_COLUMNS))
KEYSETS = ("SELECT r.id FROM referral r LEFT JOIN (SELECT referral_id, md5(string_agg(key, E'\\n' ORDER BY key)) ks "
           "FROM referral_site GROUP BY referral_id) k ON k.referral_id = r.id "
           "WHERE r.site_keyset IS DISTINCT FROM k.ks")


def _agree(conn) -> None:
    kept = sorted(tuple(r) for r in conn.execute(text(KEPT)))
    fresh = sorted(tuple(r) for r in conn.execute(text(FRESH)))
    assert kept == fresh
    assert conn.execute(text(KEYSETS)).all() == []
    listed = conn.execute(text("SELECT count(*) FROM referral r WHERE r.site_keyset IS NOT NULL AND EXISTS ("
                               "SELECT 1 FROM referral_site s WHERE s.referral_id = r.id AND NOT EXISTS ("
                               "SELECT 1 FROM site_keyset k WHERE k.keyset = r.site_keyset AND k.key = s.key))"))
    assert listed.scalar() == 0


@pytest.fixture
def pg_app(postgres_url):
    app = create_app(app_config(postgres_url))
    yield app
    app.extensions["db_engine"].dispose()


def test_cells_and_key_sets_follow_every_kind_of_write(pg_app):
    now = datetime.now(UTC)
    insert_referrals(pg_app, 600, iss=EHR1, now=now, seed=5, max_days=40)
    insert_referrals(pg_app, 200, iss=EHR2, now=now, seed=6, max_days=40)
    engine = pg_app.extensions["db_engine"]
    with engine.begin() as conn:
        _agree(conn)
        assert conn.execute(text("SELECT sum(n) FROM referral_cell WHERE grain = 'm'")).scalar() > 0
        ids = [r[0] for r in conn.execute(text("SELECT id FROM referral ORDER BY id"))]
        # One row at a time: open to closed, closed to closed (another cell), closed to open, assigned.
        for rid in ids[:30]:
            conn.execute(text("UPDATE referral SET status = 'completed' WHERE id = :id"), {"id": rid})
        conn.execute(text("UPDATE referral SET status = 'cancelled', urgent = NOT urgent WHERE id = :id"),
                     {"id": ids[0]})
        conn.execute(text("UPDATE referral SET status = 'in-progress' WHERE id = :id"), {"id": ids[1]})
        conn.execute(text("UPDATE referral SET assignee = 'Practitioner/x' WHERE id = ANY(:ids)"), {"ids": ids[:50]})
        # Set-based: many rows in one statement, re-routed, renamed, programs re-indexed, moved in time.
        conn.execute(text("UPDATE referral SET route_kind = 'unrouted', route_team = NULL WHERE id = ANY(:ids)"),
                     {"ids": ids[50:120]})
        conn.execute(text("UPDATE referral SET site_name = NULL, program_keys = NULL WHERE id = ANY(:ids)"),
                     {"ids": ids[120:160]})
        conn.execute(text("UPDATE referral SET created_at = created_at - interval '45 days' WHERE id = ANY(:ids)"),
                     {"ids": ids[160:200]})
        # Site keys added and removed: the key set follows, and the closed ones' cells move with it.
        conn.execute(text("INSERT INTO referral_site (referral_id, key) SELECT id, 'Location/extra' FROM referral "
                          "WHERE id = ANY(:ids)"), {"ids": ids[200:260]})
        conn.execute(text("DELETE FROM referral_site WHERE referral_id = ANY(:ids)"), {"ids": ids[260:280]})
        conn.execute(text("DELETE FROM referral WHERE id = ANY(:ids)"), {"ids": ids[280:330]})
        _agree(conn)


def test_concurrent_closes_of_the_same_cell_add_up(pg_app):
    now = datetime.now(UTC)
    insert_referrals(pg_app, 200, iss=EHR1, now=now, seed=7, max_days=3)
    engine = pg_app.extensions["db_engine"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE referral SET status = 'requested', urgent = false, created_at = :t, "
                          "site_name = 'One', program_keys = '', assignee = NULL"), {"t": now})
        ids = [r[0] for r in conn.execute(text("SELECT id FROM referral ORDER BY id"))]
    errors: list[BaseException] = []

    def close(chunk: list[str]) -> None:
        try:
            with engine.begin() as conn:
                for rid in chunk:
                    conn.execute(text("UPDATE referral SET status = 'completed' WHERE id = :id"), {"id": rid})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=close, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.begin() as conn:
        _agree(conn)
        assert conn.execute(text("SELECT sum(n) FROM referral_cell WHERE grain = 'd'")).scalar() == 200


def test_the_backfill_gives_what_the_triggers_kept(pg_app):
    now = datetime.now(UTC)
    insert_referrals(pg_app, 400, iss=EHR1, now=now, seed=8, max_days=60)
    engine = pg_app.extensions["db_engine"]
    with engine.begin() as conn:
        kept = sorted(tuple(r) for r in conn.execute(text(KEPT)))
        conn.execute(text("UPDATE referral SET site_keyset = NULL"))
        conn.execute(text("DELETE FROM site_keyset"))
        for sql in queue_cells.backfill():
            conn.execute(text(sql))
        assert sorted(tuple(r) for r in conn.execute(text(KEPT))) == kept
        _agree(conn)


def test_no_triggers_on_sqlite(tmp_path):
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}"))
    try:
        engine = create_engine(app.config.get("DATABASE_URL") or str(app.extensions["db_engine"].url))
        with engine.connect() as conn:
            names = [r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))]
        assert not [n for n in names if n.startswith(("referral_cell", "referral_site_keyset"))]
    finally:
        app.extensions["db_engine"].dispose()


def _cells(queue) -> list[tuple]:
    return sorted((tuple(sorted((k, str(v)) for k, v in c.values.items())), c.profile, c.keys, c.n)
                  for c in queue.cells())


def test_counts_from_the_cells_are_the_live_counts_at_any_moment(pg_app):
    """The kept cells plus the live part give the live grouped count exactly, whatever the clock: the age filter's
    borders fall before, after and in the middle of days, the user owns some closed referrals ("mine"), some are
    unrouted, some routed to a team, some outside the scope."""
    from smart_app.worklist.due import DueRule, parse_span
    from smart_app.worklist.queue import Clock, Queue, QueueQuery
    from smart_app.worklist.scope import Scope

    now = datetime.now(UTC)
    insert_referrals(pg_app, 1500, iss=EHR1, now=now, seed=9, max_days=12)
    insert_referrals(pg_app, 300, iss=EHR1, now=now, seed=10, max_days=12, site=("Elsewhere", "Organization/x"))
    engine = pg_app.extensions["db_engine"]
    me = "Practitioner/me"
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM referral ORDER BY id"))]
        conn.execute(text("UPDATE referral SET assignee = :me WHERE id = ANY(:ids)"), {"me": me, "ids": ids[::7]})
        conn.execute(text("UPDATE referral SET route_kind = 'unrouted' WHERE id = ANY(:ids)"), {"ids": ids[::11]})
        conn.execute(text("UPDATE referral SET route_kind = 'fallback', route_team = 't1' WHERE id = ANY(:ids)"),
                     {"ids": ids[3::13]})
        ehr = conn.execute(text("SELECT ehr FROM referral LIMIT 1")).scalar()
    rule = DueRule(urgent=parse_span("u", "24 hours"), routine=parse_span("r", "2 days"))
    scope = Scope(iss=EHR1, user_reference=me, roles=["social_worker"], source="ehr", ehr=ehr,
                  keys=frozenset({"Organization/org-bwh", "Organization/org-mgh"}), teams=frozenset({"t1"}))
    with pg_app.app_context(), pg_app.extensions["db_sessionmaker"]() as db:
        for hours in (0, 3.5, 9, 12.25, 17, 23.9, 30, 61.5):
            clock = Clock.at(now + timedelta(hours=hours), rule, me)
            for filters in ({"status": "open"}, {"status": "all"}, {"status": "closed", "assignee": "mine"}):
                kept = Queue(db, scope, clock, QueueQuery(filters=filters), {})
                live = Queue(db, scope, clock, QueueQuery(filters=filters), {})
                live.kept = False
                assert kept.kept
                assert _cells(kept) == _cells(live), (hours, filters)
