"""Pooled database connections: tested before use only after sitting idle, and a dead idle one is replaced
before a request sees it (smart_app.store.db._ping_when_idle)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from smart_app.store.db import make_engine

pytestmark = pytest.mark.ops


@pytest.fixture
def sqlite_engine(tmp_path):
    """make_engine on a throw-away SQLite file, with the given settings; disposed after the test."""
    made = []

    def make(**settings):
        made.append(make_engine(f"sqlite:///{tmp_path / 'p.db'}", **settings))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def _count_pings(engine) -> list[int]:
    pings = [0]
    real = engine.dialect.do_ping

    def counting(dbapi_conn):
        pings[0] += 1
        return real(dbapi_conn)

    engine.dialect.do_ping = counting
    return pings


def test_a_connection_used_moments_ago_is_not_pinged_and_an_idle_one_is(sqlite_engine):
    engine = sqlite_engine(ping_idle_seconds=0.2)
    pings = _count_pings(engine)
    for _ in range(5):
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar() == 1
    assert pings[0] == 0  # a fresh connection, then reused at once
    time.sleep(0.3)
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    assert pings[0] == 1


def test_zero_pings_at_every_checkout(sqlite_engine):
    engine = sqlite_engine(ping_idle_seconds=0)
    pings = _count_pings(engine)
    for _ in range(3):
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    assert pings[0] == 3


def test_a_connection_that_died_while_idle_is_replaced_before_use(sqlite_engine):
    engine = sqlite_engine(ping_idle_seconds=0.1)
    with engine.connect() as conn:
        conn.execute(text("select 1"))
        dead = conn.connection.dbapi_connection
    dead.close()  # what a database restart does to a pooled connection
    time.sleep(0.2)
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
        assert conn.connection.dbapi_connection is not dead


@pytest.mark.postgres
def test_a_page_right_after_a_database_restart_is_served(postgres_url):
    """A pooled connection used moments ago is not pinged; if the server dropped it meanwhile (a restart), the
    page's first statement fails on it. Nothing was done in the request yet, so the launch is read again on a
    fresh connection and the clinician sees the page, not an error."""
    from smart_app import create_app
    from tests.conftest import app_config, launch_for

    app = create_app(app_config(postgres_url))
    engine = app.extensions["db_engine"]
    admin = create_engine(postgres_url)
    try:
        client = app.test_client()
        lid = launch_for(app, client)
        assert client.get(f"/l/{lid}/").status_code == 200
        with engine.connect() as conn:  # the pool's one connection, just used by the page
            pid = conn.execute(text("select pg_backend_pid()")).scalar()
        with admin.connect() as conn:
            assert conn.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        time.sleep(0.2)  # the backend is gone (well inside the 10 s in which a used connection is not pinged)
        page = client.get(f"/l/{lid}/")
        assert page.status_code == 200
        with engine.connect() as conn:
            assert conn.execute(text("select pg_backend_pid()")).scalar() != pid
    finally:
        admin.dispose()
        engine.dispose()


def test_eight_threads_at_once_keep_their_connections(sqlite_engine):
    """A gunicorn worker's 8 threads (2 workers x 8 on 2 CPUs) busy at once, again and again, open 8 connections
    once: with SQLAlchemy's default pool of 5, three were opened and closed on every busy moment."""
    import threading

    from sqlalchemy import event

    engine = sqlite_engine()
    opened = [0]
    event.listen(engine, "connect", lambda *_a: opened.__setitem__(0, opened[0] + 1))
    def busy(barrier: threading.Barrier) -> None:
        with engine.connect() as conn:
            barrier.wait(timeout=10)  # all 8 hold a connection at the same moment
            conn.execute(text("select 1"))

    for _ in range(3):
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=busy, args=(barrier,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert opened[0] == 8


def test_the_default_pool_is_one_connection_per_thread_and_as_many_more(app, monkeypatch):
    """A request's thread may hold two connections (its session and the access audit's own): the pool's overflow
    matches what it keeps, both sized from the process's threads unless tuning.db_pool_size says."""
    from config.current import settings_of

    settings = settings_of(app)
    monkeypatch.setenv("GUNICORN_THREADS", "4")
    assert settings.replace(db_pool_size=0).db_pool == (4, 4)
    assert settings.replace(db_pool_size=6).db_pool == (6, 6)
    monkeypatch.delenv("GUNICORN_THREADS")
    assert settings.replace(db_pool_size=0).db_pool == (8, 8)


def test_prepared_statements_can_be_turned_off_for_pgbouncer(postgres_url):
    on = make_engine(postgres_url, pool_size=3, max_overflow=3)
    off = make_engine(postgres_url, prepared_statements=False)
    try:
        assert on.pool.size() == 3 and on.pool._max_overflow == 3
        with on.connect() as conn:
            assert conn.connection.driver_connection.prepare_threshold == 5  # psycopg's default
        with off.connect() as conn:
            assert conn.connection.driver_connection.prepare_threshold is None  # never prepares
    finally:
        on.dispose()
        off.dispose()
