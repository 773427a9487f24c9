"""Server-side state: engine and sessions, models, migrations, encryption at rest."""

from __future__ import annotations

from flask import Flask

from config.current import settings_of
from smart_app.store import migrate, queue_cells  # noqa: F401 - queue_cells: create_all's triggers
from smart_app.store.db import close_session, make_engine, new_sessionmaker
from smart_app.store.models import Base


def init_app(app: Flask) -> None:
    settings = settings_of(app)
    pool_size, max_overflow = settings.db_pool
    engine = make_engine(settings.database_url, ping_idle_seconds=settings.db_ping_idle_seconds,
                         pool_size=pool_size, max_overflow=max_overflow,
                         prepared_statements=settings.db_prepared_statements)
    app.extensions["db_engine"] = engine
    app.extensions["db_sessionmaker"] = new_sessionmaker(engine)
    # The schema is made and changed by migrations only (`flask --app smart_app db upgrade`, store/migrate.py).
    # Tests make throw-away databases with create_all (fast); the demo runs the migrations itself.
    if create_all(app):
        Base.metadata.create_all(engine)
    elif settings.db_auto_upgrade:
        with app.app_context():  # a migration may need the app's keys and deployment (migration 0014)
            migrate.upgrade(engine)
    app.teardown_appcontext(close_session)
    app.cli.add_command(migrate.db_cli)


def create_all(app: Flask) -> bool:
    """Whether this app makes its tables without migrations (the tests, unless they say otherwise)."""
    chosen = settings_of(app).db_create_all
    return app.testing if chosen is None else chosen
