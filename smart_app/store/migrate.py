"""Schema migrations (Alembic, scripts in smart_app/store/migrations/): the one way the schema is made or changed.

``flask --app smart_app db upgrade`` runs every migration in ONE transaction that first takes a PostgreSQL
advisory lock (``pg_advisory_xact_lock``, keyed by the schema), so any number of instances and workers may
run it at the same start: the first migrates, the others wait, then find the schema at head and do nothing.
The lock is released by the commit. (Alembic's docs, "Sharing a Connection across one or more programmatic
migration commands": the connection and its transaction are handed to env.py through
``Config.attributes``.) PostgreSQL DDL is transactional, so a failed migration leaves nothing half-made.

A database made by ``create_all`` before migrations existed (commit 561d69f) has the baseline tables and no
``alembic_version``: it is stamped at the baseline first, then upgraded, and its data is kept.

The app and the worker never create tables (``create_all``) outside the tests (``TESTING``) and the demo.

Alembic is imported only inside the functions that run or inspect migrations: with what it brings along (mako,
pygments, every SQL dialect it has DDL rules for) it cost each worker 11 MB of RSS and create_app() 0.1 s of
CPU, and the web app needs none of it. The readiness probe's ``heads()`` reads the scripts' source instead.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from smart_app.store.models import Base

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
BASELINE = "0001_baseline"
# Tables create_all made at commit 561d69f: their presence without alembic_version means "adopt".
BASELINE_TABLES = {"launch", "used_code", "used_jti", "referral", "referral_event", "outbox"}
# The month partitions PostgreSQL keeps of audit_event and report_event (migration monthly_partitions): made and
# dropped by the retention functions, not by the models, so a schema comparison leaves them out.
PARTITION = re.compile(r"(audit_event|report_event)_(y\d{4}m\d{2}|default)")


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """Alembic's filter for comparing the models with the database: a month partition is not a table of its own."""
    return not (type_ == "table" and name is not None and PARTITION.fullmatch(name))


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config  # Alembic only where migrations run (module docstring)

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory  # Alembic only where migrations run (module docstring)

    return ScriptDirectory.from_config(alembic_config())


def heads() -> list[str]:
    """The head revisions: every revision no other script names as its ``down_revision``. Read from the
    scripts' source (module-level ``revision`` / ``down_revision`` literals) without importing Alembic, which
    loads every script as a module; tests/ops/test_migrations.py holds it to Alembic's own answer."""
    revisions: list[str] = []
    parents: set[str] = set()
    for path in sorted(VERSIONS_DIR.glob("*.py")):
        values: dict[str, Any] = {}
        for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
                node.target if isinstance(node, ast.AnnAssign) else None
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and node.value:
                values[target.id] = ast.literal_eval(node.value)
        if isinstance(values.get("revision"), str):
            revisions.append(values["revision"])
            down = values.get("down_revision")
            parents.update(down if isinstance(down, tuple | list) else (down,) if down else ())
    return [r for r in revisions if r not in parents]


def lock(conn: Connection) -> None:
    """Serialise migrations of this schema across processes (PostgreSQL; a no-op elsewhere).
    Transaction-scoped: released at commit or rollback, never left behind by a killed process."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('ipv-smart-screen:migrate:' || current_schema()))"))


def _legacy_unversioned(conn: Connection) -> bool:
    tables = set(inspect(conn).get_table_names())
    return "alembic_version" not in tables and BASELINE_TABLES <= tables


def upgrade(engine: Engine, revision: str = "head") -> list[str]:
    """Upgrade the schema under the advisory lock; returns the revisions now current."""
    from alembic import command  # Alembic only where migrations run (module docstring)

    cfg = alembic_config()
    with engine.connect() as conn:
        with conn.begin():
            lock(conn)
            cfg.attributes["connection"] = conn
            if _legacy_unversioned(conn):
                command.stamp(cfg, BASELINE)
            command.upgrade(cfg, revision)
            return current_revisions(conn)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command  # Alembic only where migrations run (module docstring)

    cfg = alembic_config()
    with engine.connect() as conn:
        with conn.begin():
            lock(conn)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)


def current_revisions(conn: Connection) -> list[str]:
    from alembic.migration import MigrationContext  # Alembic only where migrations run (module docstring)

    return list(MigrationContext.configure(conn).get_current_heads())


def stored_revisions(conn: Connection) -> list[str]:
    """The revisions recorded in alembic_version, read directly (cheap enough for every /readyz)."""
    if not inspect(conn).has_table("alembic_version"):
        return []
    return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        return set(current_revisions(conn)) == set(heads())


def model_diff(engine: Engine) -> list[Any]:
    """Differences between the models and the database (empty when a migration covers every model change)."""
    from alembic.autogenerate import compare_metadata  # Alembic only where migrations run (module docstring)
    from alembic.migration import MigrationContext


    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        return compare_metadata(ctx, Base.metadata)


# -- flask --app smart_app db ... ------------------------------------------------------------------------
db_cli = AppGroup("db", help="Schema migrations (Alembic). Run `db upgrade` before starting the app.")


def _engine() -> Engine:
    return current_app.extensions["db_engine"]


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Upgrade the schema (safe to run from many processes at once)."""
    now = upgrade(_engine(), revision)
    click.echo(f"schema at {', '.join(now) or 'base'}")


def wait_for_head(engine: Engine, timeout: float, every: float = 2.0) -> list[str]:
    """Until the schema is at this release's head (another process, the owner role's ``db upgrade``, migrates):
    the revisions found last. Each look takes the migration's advisory lock first, so it waits out a migration
    in progress instead of reading its half; a database not answering yet is looked at again."""
    deadline = time.monotonic() + timeout
    found: list[str] = []
    while True:
        try:
            with engine.connect() as conn, conn.begin():
                lock(conn)
                found = stored_revisions(conn)
        except OperationalError:
            found = []
        if set(found) == set(heads()) or time.monotonic() >= deadline:
            return found
        time.sleep(every)


@db_cli.command("wait")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait before giving up.")
def wait_command(timeout: float) -> None:
    """Wait until the schema is at head, then exit 0 (the app's and the worker's first step in containers, where
    the runtime may start them before the migration has run); exit 1 after TIMEOUT seconds."""
    found = wait_for_head(_engine(), timeout)
    if set(found) != set(heads()):
        click.echo(f"schema at {', '.join(found) or 'base (or no database)'}, this release needs "
                   f"{', '.join(heads())}: run `db upgrade` as the owner role first (DEPLOY.md, section 5)", err=True)
        raise SystemExit(1)
    click.echo(f"schema at {', '.join(found)}")


@db_cli.command("downgrade")
@click.argument("revision")
def downgrade_command(revision: str) -> None:
    """Downgrade to REVISION (take a backup first)."""
    downgrade(_engine(), revision)
    click.echo(f"schema downgraded to {revision}")


@db_cli.command("current")
def current_command() -> None:
    with _engine().connect() as conn:
        click.echo(", ".join(current_revisions(conn)) or "base (empty database)")


@db_cli.command("heads")
def heads_command() -> None:
    click.echo("\n".join(heads()))


@db_cli.command("check")
def check_command() -> None:
    """Exit 1 when the models differ from the database schema (a model change without a revision)."""
    diff = model_diff(_engine())
    for item in diff:
        click.echo(repr(item))
    if diff:
        raise SystemExit(1)
    click.echo("models match the schema")


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--autogenerate/--empty", default=True)
def revision_command(message: str, autogenerate: bool) -> None:
    """Write a new revision (autogenerated against a database at head; review it before committing)."""
    from alembic import command  # Alembic only where migrations run (module docstring)

    cfg = alembic_config()
    with _engine().connect() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=autogenerate)
