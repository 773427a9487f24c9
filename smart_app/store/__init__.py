"""Server-side state: engine and sessions, models, migrations, encryption at rest."""

from __future__ import annotations

from flask import Flask

from smart_app.store import migrate
from smart_app.store.db import (
    DEFAULT_PING_IDLE_SECONDS,
    DEFAULT_POOL_SIZE,
    close_session,
    make_engine,
    new_sessionmaker,
)
from smart_app.store.models import Base


def init_app(app: Flask) -> None:
    engine = make_engine(app.config["DATABASE_URL"],
                         ping_idle_seconds=float(app.config.get("DB_PING_IDLE_SECONDS", DEFAULT_PING_IDLE_SECONDS)),
                         pool_size=int(app.config.get("DB_POOL_SIZE", DEFAULT_POOL_SIZE)))
    app.extensions["db_engine"] = engine
    app.extensions["db_sessionmaker"] = new_sessionmaker(engine)
    # The schema is made and changed by migrations only (`flask --app smart_app db upgrade`, store/migrate.py).
    # Tests make throw-away databases with create_all (fast); the demo runs the migrations itself.
    if app.config.get("DB_CREATE_ALL", app.testing):
        Base.metadata.create_all(engine)
    elif app.config.get("DB_AUTO_UPGRADE"):
        with app.app_context():  # a migration may need the app's keys and deployment (migration 0014)
            migrate.upgrade(engine)
    app.teardown_appcontext(close_session)
    app.cli.add_command(migrate.db_cli)
