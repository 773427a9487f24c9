"""Migrations: one head, models == head, upgrade of the pre-migration schema keeps its data, concurrent starts.

A model change without a revision fails ``test_models_match_head_*`` (autogenerate finds a difference):
add one with ``flask --app smart_app db revision -m "what changed"`` (see the README, "Database schema").
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, inspect, text

from smart_app.store import migrate

pytestmark = pytest.mark.ops
REPO = Path(__file__).resolve().parents[2]
LEGACY_SQL = Path(__file__).with_name("schema_561d69f_postgresql.sql")


def test_exactly_one_head():
    heads = migrate.heads()
    assert len(heads) == 1, f"migrations have {len(heads)} heads {heads}: set down_revision to the head on main"


def test_heads_read_from_the_scripts_are_alembics():
    # The readiness probe reads the heads without Alembic (smart_app/store/migrate.py): the same answer, always.
    assert sorted(migrate.heads()) == sorted(migrate.script_directory().get_heads())


def test_heads_follow_branches_and_merges(tmp_path, monkeypatch):
    versions = tmp_path / "versions"
    versions.mkdir()
    scripts = {"a": "revision = 'a'\ndown_revision = None\n",
               "b": "revision: str = 'b'\ndown_revision: str | None = 'a'\n",
               "c": "revision = 'c'\ndown_revision = 'a'\n",
               "d": "revision = 'd'\ndown_revision = ('b', 'c')\n",
               "e": "revision = 'e'\ndown_revision = 'd'\n",
               "f": "revision = 'f'\ndown_revision = 'd'\n"}
    for name, text_ in scripts.items():
        (versions / f"{name}.py").write_text(f'"""{name}"""\nimport sqlalchemy as sa\n{text_}')
    (versions / "__init__.py").write_text("")
    monkeypatch.setattr(migrate, "VERSIONS_DIR", versions)
    assert sorted(migrate.heads()) == ["e", "f"]


def test_the_web_app_does_not_load_alembic():
    # Alembic and what it brings (mako, pygments, every SQL dialect) cost each worker 11 MB (issue 14).
    code = ("import sys\nfrom smart_app import create_app\napp = create_app({'WARM_UP': False, 'TESTING': True})\n"
            "app.test_client().get('/readyz')\nassert not [m for m in sys.modules if m.split('.')[0] in "
            "('alembic', 'mako', 'pygments')], sorted(m for m in sys.modules if m.startswith('alembic'))[:5]")
    env = {**os.environ, "PYTHONPATH": str(REPO), "IPV_DEPLOYMENT": "sandbox", "IPV_MODE": "test",
           "DATABASE_URL": "sqlite://", "SECRET_KEY": "x" * 40, "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True)


def test_every_revision_chains_to_the_baseline():
    script = migrate.script_directory()
    revisions = list(script.walk_revisions())
    assert revisions[-1].revision == migrate.BASELINE
    assert revisions[-1].down_revision is None


def _diff_after_upgrade(url: str) -> list:
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        return migrate.model_diff(engine)
    finally:
        engine.dispose()


def test_models_match_head_on_sqlite(tmp_path):
    assert _diff_after_upgrade(f"sqlite:///{tmp_path / 'm.db'}") == []


@pytest.mark.postgres
def test_models_match_head_on_postgresql(postgres_url):
    assert _diff_after_upgrade(postgres_url) == []


@pytest.mark.postgres
def test_downgrade_to_baseline_and_up_again(postgres_url):
    engine = create_engine(postgres_url)
    try:
        migrate.upgrade(engine)
        migrate.downgrade(engine, migrate.BASELINE)
        assert migrate.upgrade(engine) == migrate.heads()
        assert migrate.model_diff(engine) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_upgrade_from_the_create_all_schema_keeps_the_data(postgres_url):
    """A database made by create_all at 561d69f (no alembic_version), with data, is adopted and upgraded."""
    engine = create_engine(postgres_url)
    now = datetime.now(UTC)
    blob = b"gAAAA-encrypted-bytes"
    with engine.begin() as conn:
        conn.exec_driver_sql(LEGACY_SQL.read_text())
        conn.execute(text("INSERT INTO launch (id, state, browser_id, iss, kind, status, created_at, expires_at, "
                          "tokens_enc, context_enc) VALUES ('L1', 'S1', 'B1', 'https://ehr/fhir', 'ehr', 'active', "
                          ":now, :exp, :blob, :blob)"), {"now": now, "exp": now + timedelta(hours=8), "blob": blob})
        conn.execute(text("INSERT INTO referral (id, launch_id, iss, profile, site, urgent, status, created_at, "
                          "summary_enc) VALUES ('R1', 'L1', 'https://ehr/fhir', 'generic-smart2', 'mgh', true, "
                          "'new', :now, :blob)"), {"now": now, "blob": blob})
        conn.execute(text("INSERT INTO referral_event (referral_id, from_status, to_status, by_reference, at) "
                          "VALUES ('R1', NULL, 'new', 'Practitioner/p1', :now)"), {"now": now})
        conn.execute(text("INSERT INTO outbox (referral_id, launch_id, iss, profile, mode, kind, identifier_system, "
                          "identifier_value, full_url, depends_on, resource_enc, status, attempts, max_attempts, "
                          "final_retry, next_attempt_at, created_at, updated_at) VALUES ('R1', 'L1', "
                          "'https://ehr/fhir', 'generic-smart2', 'single', 'DocumentReference', 'urn:x', 'v1', "
                          "'urn:uuid:1', '{}', :blob, 'pending', 0, 10, false, :now, :now, :now)"),
                     {"now": now, "blob": blob})
        conn.execute(text("INSERT INTO used_code (code_hash, used_at) VALUES ('c1', :now)"), {"now": now})
        conn.execute(text("INSERT INTO used_jti (jti, used_at) VALUES ('j1', :now)"), {"now": now})
    assert "alembic_version" not in inspect(engine).get_table_names()

    result = _flask(["db", "upgrade"], postgres_url)
    assert result.returncode == 0, result.stderr

    with engine.connect() as conn:
        assert migrate.current_revisions(conn) == migrate.heads()
        assert conn.execute(text("SELECT state, tokens_enc, context_enc FROM launch")).one() == ("S1", blob, blob)
        assert conn.execute(text("SELECT site, urgent, status, summary_enc FROM referral")).one() == (
            "mgh", True, "new", blob)
        assert conn.execute(text("SELECT to_status, by_reference FROM referral_event")).one() == (
            "new", "Practitioner/p1")
        assert conn.execute(text("SELECT identifier_value, status, resource_enc FROM outbox")).one() == (
            "v1", "pending", blob)
        assert conn.execute(text("SELECT count(*) FROM used_code")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM used_jti")).scalar() == 1
    assert migrate.model_diff(engine) == []
    engine.dispose()


# Each process is a real start: the app factory without create_all, `db upgrade` through the Flask CLI,
# then the app answers /readyz's database check and the worker claims from the outbox.
# A file barrier makes the four upgrades start together (each process is ready before any migrates).
_START = textwrap.dedent("""
    import json, sys, time, pathlib
    from smart_app import create_app
    from smart_app.outbox.worker import OutboxWorker
    app = create_app(json.loads(sys.argv[1]))
    barrier = pathlib.Path(sys.argv[2])
    (barrier / sys.argv[3]).touch()
    while len(list(barrier.iterdir())) < 4:
        time.sleep(0.01)
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    OutboxWorker(app).run_once()
    status = app.test_client().get("/healthz").status_code
    print("up", status)
""")


def _config(url: str) -> dict:
    return {"DATABASE_URL": url, "DB_CREATE_ALL": False, "SECRET_KEY": "k" * 40, "IPV_MODE": "test",
            "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "SESSION_COOKIE_SECURE": False}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _flask(args: list[str], url: str) -> subprocess.CompletedProcess:
    import json

    code = ("import json, sys\nfrom smart_app import create_app\n"
            "app = create_app(json.loads(sys.argv[1]))\n"
            "r = app.test_cli_runner().invoke(args=sys.argv[2:])\n"
            "print(r.output)\nsys.exit(r.exit_code)\n")
    return subprocess.run([sys.executable, "-c", code, json.dumps(_config(url)), *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.postgres
def test_four_processes_started_at_once_on_an_empty_database_all_come_up(postgres_url, tmp_path):
    import json

    procs = [subprocess.Popen([sys.executable, "-c", _START, json.dumps(_config(postgres_url)), str(tmp_path),
                               f"p{i}"], cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for i in range(4)]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert out.strip().endswith("up 200"), out
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert migrate.current_revisions(conn) == migrate.heads()
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    assert migrate.model_diff(engine) == []
    engine.dispose()


def test_outside_the_tests_the_app_makes_no_table_and_is_not_ready_until_upgraded(tmp_path):
    from smart_app import create_app

    url = f"sqlite:///{tmp_path / 'prod.db'}"
    app = create_app(_config(url))  # not TESTING: as in production, no create_all
    engine = app.extensions["db_engine"]
    assert inspect(engine).get_table_names() == []
    client = app.test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["schema"]["ok"] is False
    assert app.test_cli_runner().invoke(args=["db", "upgrade"]).exit_code == 0
    check = client.get("/readyz").get_json()["checks"]["schema"]
    assert check == {"ok": True, "critical": True, "detail": ",".join(migrate.heads())}
    assert app.test_cli_runner().invoke(args=["db", "check"]).exit_code == 0
    engine.dispose()


@pytest.mark.postgres
def test_an_install_older_than_the_first_migration_moves_to_two_roles_and_upgrades(postgres_url):
    """DEPLOY.md's path from a create_all database (561d69f) made and owned by the one role of those days: its
    steps for "an install from before the two roles" as written, then `db upgrade` as the owner role adopts and
    upgrades it with the data kept and the stored referral routed; the runtime role then reads and writes the
    app's tables and may only add to the access audit."""
    import re
    import uuid

    from sqlalchemy.exc import DBAPIError

    from tests.ops.test_audit_roles import DEPLOY, deploy_role_sql

    tag = uuid.uuid4().hex[:10]
    old, owner = f"ipv_{tag}", f"ipv_owner_{tag}"
    admin = create_engine(postgres_url)

    def as_role(role: str):
        return create_engine(postgres_url.replace("://postgres@", f"://{role}@", 1))

    now = datetime.now(UTC)
    with admin.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
        conn.execute(text(f"CREATE ROLE {old} LOGIN"))
        conn.execute(text(f'GRANT ALL ON SCHEMA "{schema}" TO {old}'))
    legacy = as_role(old)
    with legacy.begin() as conn:  # the old install: its one role made and owns everything
        conn.exec_driver_sql(LEGACY_SQL.read_text())
        conn.execute(text("INSERT INTO referral (id, launch_id, iss, profile, site, urgent, status, created_at) "
                          "VALUES ('R1', 'L1', 'https://ehr/fhir', 'generic-smart2', 'mgh', false, 'new', :now)"),
                     {"now": now})
    legacy.dispose()
    paragraph = DEPLOY.read_text()
    paragraph = paragraph[paragraph.index("An install from before the two roles"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    steps = [s for s in re.findall(r"`([^`]+;)`", paragraph.replace("\n", " "))]
    assert steps[0] == "REASSIGN OWNED BY ipv TO ipv_owner;" and len(steps) == 3, steps

    def ours(sql: str) -> str:
        sql = re.sub(r"\bipv_owner\b", owner, sql)
        return re.sub(r"\bpublic\b", f'"{schema}"', re.sub(r"\bipv\b(?!_)", old, sql))

    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE ROLE {owner} LOGIN"))  # "create ipv_owner as above"
            conn.execute(text(ours(steps[0])))
            conn.execute(text(deploy_role_sql(owner, old, schema)))  # "the GRANT/ALTER DEFAULT PRIVILEGES lines"
            for step in steps[1:]:
                conn.execute(text(ours(step)))
        result = _flask(["db", "upgrade"], postgres_url.replace("://postgres@", f"://{owner}@", 1))
        assert result.returncode == 0, result.stderr[-3000:]
        runtime = as_role(old)
        with runtime.begin() as conn:
            assert migrate.current_revisions(conn) == migrate.heads()
            assert conn.execute(text("SELECT site, status, route_kind FROM referral")).one() == (
                "mgh", "new", "unrouted")
            conn.execute(text("UPDATE referral SET status = 'open' WHERE id = 'R1'"))
            conn.execute(text("INSERT INTO audit_event (at, action, actor, instance) "
                              "VALUES (now(), 'export', 'cli:test', 't')"))
        with pytest.raises(DBAPIError), runtime.begin() as conn:
            conn.execute(text("DELETE FROM audit_event"))
        runtime.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))  # the fixture drops it again
            for role in (old, owner):
                conn.execute(text(f"DROP OWNED BY {role}"))
                conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


@pytest.mark.postgres
def test_db_wait_returns_once_the_schema_is_at_head(postgres_url):
    """The app's and the worker's first step in compose (podman-compose starts them without waiting for the migrate
    service): `db wait` fails after its timeout on an older schema, naming what is needed, and returns 0 as soon
    as another process has run `db upgrade`."""
    import json

    too_early = _flask(["db", "wait", "--timeout", "0"], postgres_url)
    assert too_early.returncode == 1
    assert f"this release needs {migrate.heads()[0]}: run `db upgrade` as the owner role first" in (
        too_early.stdout + too_early.stderr)
    waiting = subprocess.Popen(
        [sys.executable, "-c", "import json, sys\nfrom smart_app import create_app\n"
         "app = create_app(json.loads(sys.argv[1]))\n"
         "r = app.test_cli_runner().invoke(args=['db', 'wait', '--timeout', '170'])\n"
         "print(r.output)\nsys.exit(r.exit_code)\n", json.dumps(_config(postgres_url))],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _flask(["db", "upgrade"], postgres_url).returncode == 0
        out, err = waiting.communicate(timeout=180)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err[-3000:]
    assert f"schema at {migrate.heads()[0]}" in out
