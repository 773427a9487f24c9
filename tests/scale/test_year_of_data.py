"""A year of a 50-hospital system, reduced to 20,000 referrals (benchmarks/year_of_data.py, as `make bench` makes a
million): the schema the migrations make (month partitions), then what a user and the worker meet at that volume.
Correctness only, never timings: counts, who sees what (per site and per EHR), every row in its month's partition,
the purge dropping only the months past the retention, and claims and audit writes neither lost nor duplicated
when several workers run at once."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from benchmarks.year_of_data import EHR1, EHR2, POOL, Sizes, app_keys, fill
from sandbox_ehr.harness.launches import SNOMED_SW, app_config, launch_for, role, worker_context
from smart_app import create_app
from smart_app.ops.audit import record_audit
from smart_app.outbox.claim import claim
from smart_app.outbox.settings import OutboxSettings
from smart_app.store import migrate
from smart_app.store.db import session_scope
from smart_app.store.partitions import PARTITIONS_PER_RUN
from tests.support import tools

# One xdist worker runs the module, so its module fixture is built once (`--dist loadgroup`, Makefile).
pytestmark = [pytest.mark.scale, pytest.mark.postgres, pytest.mark.xdist_group("year_of_data")]

SIZES = Sizes(20_000)
RETENTION_DAYS = 2190
PAST_RETENTION = ("SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace"
                  " AND relname LIKE 'audit_event_y%' AND relname < 'audit_event_' || "
                  "to_char(now() - interval '6 years', '\"y\"YYYY\"m\"MM')")


MADE = {"pending": "SELECT count(*) FROM outbox WHERE status = 'pending'",
        "audit": "SELECT count(*) FROM audit_event WHERE at > now() - interval '2 years'"}


@dataclass
class Year:
    app: Any
    engine: Engine
    # What the generator made, counted before any test runs: the module's other tests claim pending writes and
    # write audit rows, in whatever order pytest-randomly gives them.
    made: dict[str, int] = field(default_factory=dict)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()


@pytest.fixture(scope="module")
def year() -> Iterator[Year]:
    with tools.postgres_schema(tools.postgres_base_url(), "t_scale") as url:
        engine = create_engine(url)
        try:
            migrate.upgrade(engine)
            keys = app_keys()
            app = create_app(app_config(url, **keys))
            fill(engine, app, SIZES, keys, say=lambda _line: None)
            year = Year(app, engine)
            year.made = {name: year.scalar(sql) for name, sql in MADE.items()}
            yield year
            app.extensions["db_engine"].dispose()
        finally:
            engine.dispose()


def test_every_table_holds_what_a_year_of_that_size_makes(year):
    n = SIZES.referrals
    assert year.scalar("SELECT count(*) FROM referral") == n
    assert year.scalar("SELECT count(DISTINCT id) FROM referral") == n
    assert year.scalar("SELECT count(*) FROM referral_site") == 2 * n
    assert year.scalar("SELECT count(*) FROM referral_dims") == n
    assert year.scalar("SELECT count(*) FROM outbox WHERE status = 'written'") == 2 * n
    assert year.made["pending"] == SIZES.pending
    assert year.made["audit"] == n * SIZES.audit_per_referral
    assert year.scalar("SELECT count(*) FROM report_event") == n * SIZES.report_per_referral
    open_ = year.scalar("SELECT count(*) FROM referral WHERE closed_at IS NULL")
    assert 0.04 * n < open_ < 0.06 * n
    assert year.scalar("SELECT count(*) FROM referral WHERE closed_at IS NULL AND status IN "
                       "('completed', 'cancelled', 'rejected')") == 0
    # Each referral's program index rows are the keys its program_keys lists (or one NONE row).
    assert year.scalar("""SELECT count(*) FROM referral r WHERE
        (SELECT string_agg(key, ',' ORDER BY key) FROM referral_program p WHERE p.referral_id = r.id AND key <> 'NONE')
        IS DISTINCT FROM NULLIF(r.program_keys, '')""") == 0
    # All 50 sites, the largest several times the smallest.
    with year.engine.connect() as conn:  # closed here: a connection left open would block the schema's drop
        per_site = dict(conn.execute(text("SELECT site, count(*) FROM referral GROUP BY site")).all())
    assert len(per_site) == 50
    assert per_site["h01"] > 10 * per_site["h50"]


def test_every_audit_and_report_row_is_in_the_partition_of_its_month(year):
    assert year.scalar("SELECT relkind FROM pg_class WHERE oid = 'audit_event'::regclass") == "p"
    assert year.scalar("SELECT relkind FROM pg_class WHERE oid = 'report_event'::regclass") == "p"
    assert year.scalar("""SELECT count(*) FROM audit_event WHERE tableoid::regclass::text
                          <> 'audit_event_' || to_char(at AT TIME ZONE 'UTC', '"y"YYYY"m"MM')""") == 0
    assert year.scalar("""SELECT count(*) FROM report_event WHERE tableoid::regclass::text
                          <> 'report_event_' || to_char(to_date(month, 'YYYY-MM'), '"y"YYYY"m"MM')""") == 0
    assert year.scalar("SELECT count(*) FROM audit_event_default") == 0
    assert year.scalar("SELECT count(*) FROM report_event_default") == 0
    # A query for one month reads that month's partition only.
    with year.engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT count(*) FROM audit_event WHERE at >= date_trunc('month', now()) - interval '1 month' "
            "AND at < date_trunc('month', now())")))
    assert len(set(re.findall(r"audit_event_y\d{4}m\d{2}", plan))) <= 2  # runtime bounds: at most a month either side


def _queue_count(client: Any, lid: str, query: str) -> tuple[int, list[str]]:
    page = client.get(f"/l/{lid}/worklist{query}").get_data(as_text=True)
    shown = re.search(r'data-testid="shown-count"[^>]*>([^<]*)<', page).group(1)
    number = re.search(r"of ([\d,]+) matching", shown) or re.match(r"\s*([\d,]+) of", shown)
    return int(number.group(1).replace(",", "")), re.findall(r'data-testid="referral-([^"]+)"', page)


@pytest.mark.parametrize(("iss", "site"), [(EHR1, "h01"), (EHR2, "h40"), (EHR1, "h40")])
def test_a_social_worker_sees_the_referrals_of_their_sites_and_their_ehrs_unrouted_ones_only(year, iss, site):
    app = year.app
    client = app.test_client()
    org = f"Organization/org-{site}"
    lid = launch_for(app, client, worker_context("Practitioner/sw-scale", "Sam Scale", [role([SNOMED_SW],
                                                 organizations=[org])], "openid fhirUser user/Task.rus"),
                     iss=iss, kind="standalone")
    ehr = year.scalar("SELECT ehr FROM referral WHERE iss = :iss LIMIT 1", iss=iss)
    with year.engine.connect() as conn:
        visible = {r[0] for r in conn.execute(text(
            "SELECT id FROM referral WHERE ehr = :ehr AND (route_kind = 'unrouted' OR id IN "
            "(SELECT referral_id FROM referral_site WHERE key = :org))"), {"ehr": ehr, "org": org})}
    count, shown = _queue_count(client, lid, "?status=all")
    assert count == len(visible)
    assert shown and set(shown) <= visible
    if iss == EHR1 and site == "h40":  # another EHR's site: nothing of it, only this EHR's unrouted referrals
        assert year.scalar("SELECT count(*) FROM referral WHERE site = 'h40' AND ehr = :ehr", ehr=ehr) == 0
        assert count == year.scalar("SELECT count(*) FROM referral WHERE ehr = :ehr AND route_kind = 'unrouted'",
                                    ehr=ehr)


def test_the_purge_drops_only_the_months_past_the_retention_a_bounded_number_a_run(year):
    before = year.scalar("SELECT count(*) FROM audit_event")
    reports = year.scalar("SELECT count(*) FROM report_event")
    with year.engine.begin() as conn:  # the test's superuser writes an archive: three months 7 years back, one 5
        for years, months in ((7, 3), (5, 1)):
            conn.execute(text("SELECT audit_event_add_partition(m::date), report_event_add_partition(m::date) "
                              "FROM generate_series(date_trunc('month', now() - make_interval(years => :y)), "
                              "date_trunc('month', now() - make_interval(years => :y)) + make_interval(months => "
                              ":m - 1), interval '1 month') m"), {"y": years, "m": months})
            conn.execute(text("INSERT INTO audit_event (at, action, instance) SELECT date_trunc('month', now() - "
                              "make_interval(years => :y)) + make_interval(months => m, secs => a), 'launch', "
                              "'archive' FROM generate_series(0, :m - 1) m, generate_series(1, 500) a"),
                         {"y": years, "m": months})
            conn.execute(text("INSERT INTO report_event (month, site, kind, instrument, language) SELECT "
                              "to_char(now() - make_interval(years => :y), 'YYYY-MM'), 'h01', 'offered', '', '' "
                              "FROM generate_series(1, 100)"), {"y": years})
    assert year.scalar(PAST_RETENTION) == 3
    runs = []
    for left in (3 - PARTITIONS_PER_RUN, 0):
        with year.engine.begin() as conn:
            runs.append(conn.execute(text("SELECT audit_event_purge(:d)"), {"d": RETENTION_DAYS}).scalar())
        assert year.scalar(PAST_RETENTION) == left  # a bounded number of months dropped a run
    # Run 1: two months dropped whole, the third month's rows deleted in the bounded batch; run 2 drops its
    # (empty) partition.
    assert runs == [1500, 0]
    assert year.scalar(PAST_RETENTION) == 0
    assert year.scalar("SELECT count(*) FROM audit_event") == before + 500  # the 5-year month and the year kept
    assert year.scalar("SELECT count(*) FROM audit_event WHERE at < now() - interval '4 years'") == 500
    with year.engine.begin() as conn:
        assert conn.execute(text("SELECT report_event_purge(:d)"), {"d": RETENTION_DAYS}).scalar() == 100
    assert year.scalar("SELECT count(*) FROM report_event") == reports + 100
    with year.engine.begin() as conn:  # the superuser clears the 5-year archive it wrote
        for table in ("audit_event", "report_event"):
            conn.execute(text(f"DROP TABLE {table}_" + "{}".format(
                conn.execute(text("SELECT to_char(now() - interval '5 years', '\"y\"YYYY\"m\"MM')")).scalar())))


def test_two_workers_claiming_at_once_take_every_pending_write_once(year):
    with year.engine.begin() as conn:  # every pending write due now
        conn.execute(text("UPDATE outbox SET next_attempt_at = now() - interval '1 minute' WHERE status = 'pending'"))
        attempts = dict(conn.execute(text("SELECT id, attempts FROM outbox WHERE status = 'pending'")).all())
    settings = OutboxSettings.for_app(year.app)
    taken: list[list[int]] = [[], []]

    def work(me: int) -> None:
        with year.app.app_context(), session_scope(year.app) as db:
            while True:
                token = claim(db, worker_id=f"scale-{me}", settings=settings)
                ids = [r[0] for r in db.execute(text("SELECT id FROM outbox WHERE claimed_by = :t"), {"t": token})]
                db.commit()
                if not ids:
                    return
                taken[me] += ids

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = Counter(taken[0] + taken[1])
    assert set(claimed) == set(attempts)  # none lost
    assert max(claimed.values()) == 1  # none taken twice
    assert taken[0] and taken[1]  # both workers had a share
    with year.engine.connect() as conn:
        after = dict(conn.execute(text("SELECT id, attempts FROM outbox WHERE id = ANY(:ids)"),
                                  {"ids": list(attempts)}).all())
    assert after == {i: a + 1 for i, a in attempts.items()}  # one try counted each


def test_audit_rows_written_from_four_threads_are_all_kept_once(year):
    before = year.scalar("SELECT count(*) FROM audit_event")
    last = year.scalar("SELECT max(id) FROM audit_event")

    def write(me: int) -> None:
        with year.app.app_context():
            for i in range(250):
                record_audit("export", actor=f"cli:scale-{me}", detail=f"row {i}", patient={"id": f"p{i % POOL}"})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert year.scalar("SELECT count(*) FROM audit_event") == before + 1000
    assert year.scalar("SELECT count(DISTINCT id) FROM audit_event WHERE id > :last", last=last) == 1000
    assert year.scalar("SELECT count(DISTINCT (actor, detail)) FROM audit_event WHERE id > :last", last=last) == 1000
    month = year.scalar("SELECT 'audit_event_' || to_char(now() AT TIME ZONE 'UTC', '\"y\"YYYY\"m\"MM')")
    assert year.scalar(f"SELECT count(*) FROM {month} WHERE id > :last", last=last) == 1000
