"""The access audit is append-only against the app's own database role (PostgreSQL): the runtime role may INSERT
and SELECT audit rows and nothing else, whatever it sets or tries (DELETE, UPDATE, TRUNCATE, ALTER, DROP, the old
session flags, replacing the guards, taking the owner's role); the retention purge deletes by age only, for the
runtime role's worker and for the maintenance role alike; the maintenance role (a member of the owner role) can
re-encrypt patient_enc and nothing else.

Roles as DEPLOY.md sets them up (its psql block is run as written, for this test's role names and schema): the
owner role runs the migrations and so owns the tables and functions, the runtime role gets its rights from the
default privileges, the maintenance role is a member of the owner role."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from smart_app import create_app
from smart_app.store import migrate
from smart_app.store.models import AuditEvent
from tests.conftest import app_config

pytestmark = [pytest.mark.ops, pytest.mark.postgres]


@dataclass
class Roles:
    owner: str
    runtime: str
    maintenance: str
    admin: Engine  # the test's superuser
    url: str

    def engine(self, role: str) -> Engine:
        return create_engine(self.url.replace("://postgres@", f"://{role}@", 1))


DEPLOY = Path(__file__).parents[2] / "DEPLOY.md"


def deploy_role_sql(owner: str, runtime: str, schema: str) -> str:
    """DEPLOY.md's database set-up (the psql heredoc), for these role names and this schema."""
    text_ = DEPLOY.read_text()
    block = text_[text_.index("<<'SQL'\n") + len("<<'SQL'\n"):]
    block = block[:block.index("\n    SQL\n")]
    sql = "\n".join(line.removeprefix("    ") for line in block.splitlines())
    sql = re.sub(r"\bipv_owner\b", owner, sql)
    sql = re.sub(r"\bipv\b", runtime, sql)
    return re.sub(r"\bpublic\b", f'"{schema}"', sql)


@pytest.fixture
def roles(postgres_url) -> Iterator[Roles]:
    """Roles made as DEPLOY.md makes them, and the schema made by the migrations run as the owner role."""
    tag = uuid.uuid4().hex[:10]
    names = Roles(f"ipv_owner_{tag}", f"ipv_app_{tag}", f"ipv_maint_{tag}", create_engine(postgres_url),
                  postgres_url)
    with names.admin.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
        for role in (names.owner, names.runtime):
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"CREATE ROLE {names.maintenance} LOGIN IN ROLE {names.owner}"))
        conn.execute(text(deploy_role_sql(names.owner, names.runtime, schema)))
    owner = names.engine(names.owner)
    migrate.upgrade(owner)  # db upgrade, as the ipv-migrate unit runs it
    owner.dispose()
    with names.engine(names.runtime).begin() as conn:  # the app's first audit row
        conn.execute(AuditEvent.__table__.insert().values(
            at=text("now()"), action="export", actor="cli:test", instance="t", detail="young",
            patient_enc=b"encrypted"))
    yield names
    with names.admin.begin() as conn:
        for role in (names.maintenance, names.runtime, names.owner):
            conn.execute(text(f"REASSIGN OWNED BY {role} TO postgres"))
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
    names.admin.dispose()


def _insert(engine: Engine, detail: str, age_days: int = 0) -> None:
    with engine.begin() as conn:
        conn.execute(AuditEvent.__table__.insert().values(
            at=text(f"now() - interval '{age_days} days'"), action="export", actor="cli:test", instance="t",
            detail=detail))


def _details(roles: Roles) -> list[str]:
    with roles.admin.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT detail FROM audit_event ORDER BY id"))]


TAMPERING = [
    "DELETE FROM audit_event",
    "UPDATE audit_event SET detail = 'changed'",
    "UPDATE audit_event SET patient_enc = NULL",
    "TRUNCATE audit_event",
    "ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only",
    "ALTER TABLE audit_event DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_event_append_only ON audit_event",
    "DROP TABLE audit_event",
    "CREATE OR REPLACE FUNCTION audit_event_retention_floor() RETURNS integer LANGUAGE sql AS 'SELECT 0'",
    "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN OLD; END $$",
    "DROP FUNCTION audit_event_append_only() CASCADE",
    "ALTER TABLE audit_event OWNER TO CURRENT_USER",
]
SESSION_FLAGS = [
    ("SET LOCAL ipv.audit_purge = 'on'", "DELETE FROM audit_event"),
    ("SET LOCAL ipv.audit_rekey = 'on'", "UPDATE audit_event SET patient_enc = NULL"),
    ("SET LOCAL ipv.audit_rekey = 'on'", "UPDATE audit_event SET patient_enc = patient_enc"),
    ("SELECT set_config('ipv.audit_purge', 'on', false)", "DELETE FROM audit_event WHERE detail = 'young'"),
]


def test_the_runtime_role_cannot_delete_or_change_audit_rows_by_any_statement_or_setting(roles):
    app_role = roles.engine(roles.runtime)
    _insert(app_role, "inserted by the app")  # INSERT and SELECT it may
    with app_role.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_event")).scalar() == 2
    before = _details(roles)
    for sql in TAMPERING:
        with pytest.raises(DBAPIError), app_role.begin() as conn:
            conn.execute(text(sql))
    for setting, sql in SESSION_FLAGS:
        with pytest.raises(DBAPIError), app_role.begin() as conn:
            conn.execute(text(setting))
            conn.execute(text(sql))
    with pytest.raises(DBAPIError), app_role.begin() as conn:  # not a member of the owner role
        conn.execute(text(f"SET ROLE {roles.owner}"))
    # Granted too much by mistake (GRANT ALL, or an old install where it owned the database's tables' rights):
    # the trigger still lets no one but the owner delete or change a row.
    with roles.admin.begin() as conn:
        conn.execute(text(f"GRANT UPDATE, DELETE, TRUNCATE ON audit_event TO {roles.runtime}"))
    for sql in ("DELETE FROM audit_event", "UPDATE audit_event SET patient_enc = NULL", "TRUNCATE audit_event"):
        with pytest.raises(DBAPIError, match="append-only"), app_role.begin() as conn:
            conn.execute(text("SELECT set_config('ipv.audit_purge', 'on', true), "
                              "set_config('ipv.audit_rekey', 'on', true)"))
            conn.execute(text(sql))
    # The purge function runs as the owner, and deletes nothing younger than the retention floor, whatever it
    # is asked for.
    with app_role.begin() as conn:
        assert conn.execute(text("SELECT audit_event_purge(0)")).scalar() == 0
        assert conn.execute(text("SELECT audit_event_purge(-100000)")).scalar() == 0
    assert _details(roles) == before
    app_role.dispose()


def test_the_retention_purge_deletes_by_age_only_for_the_worker_and_the_maintenance_role(roles):
    owner = roles.engine(roles.owner)
    for detail, age in (("seven years", 7 * 365), ("five years", 5 * 365), ("yesterday", 1)):
        _insert(owner, detail, age)  # the owner writes aged rows (a test's set-up: the app writes now())
    app_role, maintenance = roles.engine(roles.runtime), roles.engine(roles.maintenance)
    with app_role.begin() as conn:  # the worker's purge with AUDIT_RETENTION_DAYS=30: the floor (6 years) wins
        assert conn.execute(text("SELECT audit_event_purge(30)")).scalar() == 1
    assert _details(roles) == ["young", "five years", "yesterday"]
    # The maintenance role (a member of the owner role): deletes past the floor, never a younger row ...
    with pytest.raises(DBAPIError, match="append-only"), maintenance.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE detail = 'five years'"))
    # ... re-encrypts patient_enc (rotate-keys), and changes nothing else.
    with maintenance.begin() as conn:
        assert conn.execute(text("UPDATE audit_event SET patient_enc = 'x'::bytea WHERE detail = 'young'")
                            ).rowcount == 1
    with pytest.raises(DBAPIError, match="append-only"), maintenance.begin() as conn:
        conn.execute(text("UPDATE audit_event SET detail = 'changed' WHERE detail = 'young'"))
    # Only the owner's side may lower the floor (a deployment keeping one year): then the purge follows it.
    with maintenance.begin() as conn:
        conn.execute(text("CREATE OR REPLACE FUNCTION audit_event_retention_floor() RETURNS integer "
                          "LANGUAGE sql IMMUTABLE AS 'SELECT 365'"))
    with app_role.begin() as conn:
        assert conn.execute(text("SELECT audit_event_purge(30)")).scalar() == 1
    with maintenance.begin() as conn:
        assert conn.execute(text("SELECT audit_event_purge(0)")).scalar() == 0
    assert _details(roles) == ["young", "yesterday"]
    for engine in (owner, app_role, maintenance):
        engine.dispose()


def test_rotate_keys_under_the_runtime_role_stops_and_names_the_owner_role(roles):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    with roles.engine(roles.runtime).begin() as conn:
        conn.execute(AuditEvent.__table__.insert().values(
            at=text("now()"), action="export", actor="cli:test", instance="t", detail="old key",
            patient_enc=Fernet(old).encrypt(b'{"id": "pat-1"}')))
    runtime_url = roles.url.replace("://postgres@", f"://{roles.runtime}@", 1)
    app = create_app(app_config(runtime_url, TOKEN_ENCRYPTION_KEY=f"{new.decode()},{old.decode()}"))
    try:
        result = app.test_cli_runner().invoke(args=["rotate-keys"])
    finally:
        app.extensions["db_engine"].dispose()
    assert result.exit_code != 0
    assert "as the database owner role" in result.output and "DEPLOY.md" in result.output
    with roles.admin.connect() as conn:  # the audit row is as it was
        assert bytes(conn.execute(text("SELECT patient_enc FROM audit_event WHERE detail = 'old key'")).scalar()
                     ).startswith(b"gAAAA")


def test_the_runtime_role_has_no_way_into_a_month_partition(roles):
    """audit_event is partitioned by month (migration monthly_partitions): the runtime role reaches rows through the
    parent alone, where it may INSERT and SELECT; a partition gives it nothing, even with the default privileges
    that grant it DELETE on the owner's new tables, and only the owner makes or drops partitions."""
    with roles.admin.connect() as conn:
        month = conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                  "WHERE i.inhparent = 'audit_event'::regclass AND c.relname LIKE 'audit_event_y%' "
                                  "ORDER BY c.relname DESC LIMIT 1")).scalar()
    assert month
    app_role = roles.engine(roles.runtime)
    _insert(app_role, "routed to its month")
    before = _details(roles)
    for sql in (f"SELECT count(*) FROM {month}", f"DELETE FROM {month}", f"UPDATE {month} SET detail = 'x'",
                f"TRUNCATE {month}", f"DROP TABLE {month}", f"ALTER TABLE audit_event DETACH PARTITION {month}",
                "DROP TABLE audit_event_default", "SELECT audit_event_add_partition(DATE '2001-01-01')"):
        with pytest.raises(DBAPIError), app_role.begin() as conn:
            conn.execute(text(sql))
    with app_role.begin() as conn:  # what it may: the months ahead (nothing past the retention is there to drop)
        conn.execute(text("SELECT audit_event_partitions_ahead(3)"))
        assert conn.execute(text("SELECT audit_event_purge(0)")).scalar() == 0
    assert _details(roles) == before
    app_role.dispose()
