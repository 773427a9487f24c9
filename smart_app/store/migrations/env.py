"""Alembic environment. Normally run through smart_app.store.migrate (``flask --app smart_app db upgrade``), which
hands over a connection already in a transaction holding the advisory lock. The bare ``alembic`` CLI
(``alembic.ini`` at the repository root) gets its URL from DATABASE_URL and takes the same lock."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from smart_app.store.migrate import include_name, lock
from smart_app.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL", "sqlite:///instance/app.db")


def _configure(conn: Connection) -> None:
    context.configure(connection=conn, target_metadata=target_metadata, compare_type=True, include_name=include_name,
                      # SQLite cannot ALTER most things: Alembic's batch mode copies the table instead.
                      render_as_batch=conn.dialect.name == "sqlite")


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:  # smart_app.store.migrate: in a transaction, lock held
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    with engine.connect() as conn, conn.begin():
        lock(conn)
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
