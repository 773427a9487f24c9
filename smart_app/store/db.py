"""SQLAlchemy 2 engine and sessions, one per app; SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from config.current import settings_of

DEFAULT_PING_IDLE_SECONDS = 10.0
DEFAULT_POOL_SIZE = 8  # a gunicorn worker's threads on 2 CPUs (config/gunicorn.conf.py)


def make_engine(url: str, *, ping_idle_seconds: float = DEFAULT_PING_IDLE_SECONDS,
                pool_size: int = DEFAULT_POOL_SIZE, max_overflow: int = DEFAULT_POOL_SIZE,
                prepared_statements: bool = True) -> Engine:
    in_memory = _in_memory_sqlite(url)
    if url.startswith("sqlite:///") and not in_memory:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # hide_parameters: a database error never prints the statement's values (they can be PHI) into a log.
    kwargs: dict = {"future": True, "hide_parameters": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    if not in_memory:  # (an in-memory SQLite database has one connection, no pool to size)
        # As many kept connections as a gunicorn worker has threads (config/settings.py, db_pool): with SQLAlchemy's
        # default 5, the busy threads' extra connections were opened and closed again under load. The overflow
        # (closed after use) covers a thread's second connection, the access audit's own session.
        kwargs.update(pool_size=pool_size, max_overflow=max_overflow)
    if not prepared_statements and make_url(url).get_backend_name() == "postgresql":
        # PgBouncer in transaction mode (before 1.21) hands each transaction any server connection: a statement
        # psycopg prepared on one is missing on the next. None = never prepare.
        kwargs["connect_args"] = {"prepare_threshold": None}
    engine = create_engine(url, **kwargs)
    if engine.dialect.driver == "psycopg":
        _cache_long_statements()
    _ping_when_idle(engine, ping_idle_seconds)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: the worker and web share the file
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


# psycopg converts a statement's named placeholders to PostgreSQL's on every execution, and keeps the conversion
# (its own LRU cache, a fixed number of entries) only for statements up to 4096 characters and 50 parameters. The
# queue's tallies (smart_app/worklist/queue.py) are one kept statement far longer than that, the same text for a
# scope and filters: kept too, it is not parsed again per request.
CACHED_STATEMENT_LENGTH = 65_536
CACHED_STATEMENT_PARAMS = 1_024


def _cache_long_statements() -> None:
    from psycopg import _queries  # the driver's own limits; a version without them keeps its defaults

    if hasattr(_queries, "MAX_CACHED_STATEMENT_LENGTH") and hasattr(_queries, "MAX_CACHED_STATEMENT_PARAMS"):
        _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH, CACHED_STATEMENT_LENGTH)
        _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, CACHED_STATEMENT_PARAMS)


def _in_memory_sqlite(url: str) -> bool:
    u = make_url(url)
    in_memory = u.database in (None, "", ":memory:") or u.query.get("mode") == "memory"
    return u.get_backend_name() == "sqlite" and in_memory


_LAST_USED = "ipv_last_used"


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Test a pooled connection (SELECT 1) before use when it sat unused for ``idle_seconds`` or more; a dead
    one is replaced before the request sees it (0 = test at every checkout, as ``pool_pre_ping`` does).

    ``pool_pre_ping`` paid a round trip and a statement on every checkout, for connections that had answered a
    moment ago. A connection used within the window was alive
    then; if the server went away since (a restart under load), its first statement fails, and SQLAlchemy then
    discards every pooled connection (its disconnect handling). Every /l/<lid>/ page starts with the launch read,
    which is tried once more on a fresh connection then (smart_app.launch.state.load_launch): the clinician
    sees the page. Other first statements (the social-work queue, a CDS call) fail that one request.
    """

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_conn: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get(_LAST_USED)
        if last is not None and time.monotonic() - last < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # any failure: the pool drops this connection and checks out another
            raise DisconnectionError("pooled connection failed its ping") from exc


def new_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def create_all(app: Flask) -> bool:
    """Whether this app makes its tables without migrations (the tests, unless they say otherwise)."""
    chosen = settings_of(app).db_create_all
    return app.testing if chosen is None else chosen


def get_session() -> Session:
    if "db_session" not in g:
        g.db_session = current_app.extensions["db_sessionmaker"]()
    return g.db_session


def close_pooled_connections(app: Flask) -> None:
    """Close the connections the pool keeps (start-up work that read the database): under gunicorn's preload the
    master builds the app and forks, and a worker must never share the master's connection (two processes on one
    socket mix their statements). An in-memory SQLite database lives in its one connection: kept."""
    engine = app.extensions["db_engine"]
    if not _in_memory_sqlite(str(engine.url)):
        engine.dispose()


@contextmanager
def session_scope(app: Flask | None = None) -> Iterator[Session]:
    """A session outside a request (workers, CLI)."""
    maker = (app or current_app).extensions["db_sessionmaker"]
    session = maker()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
