"""Upgrade from 561d69f keeps every open referral visible.

A database made by commit 561d69f (its create_all schema, no alembic_version) holds referrals as that version stored
them: an encrypted summary with the fields it wrote, the directory site in plaintext, and nothing else — no site
keys, no program index, no route. After the README's ``flask --app smart_app db upgrade`` each social worker of the
EHR finds in the queue, over HTTP, the referrals routed to them, with every open unrouted one first; another EHR's
social worker finds none of them. The upgrade needs the app's keys and deployment: without them it refuses and
changes nothing."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from config.current import settings_of
from smart_app import create_app
from smart_app.store import migrate
from smart_app.worklist import backfill
from tests.conftest import app_config, launch_for
from tests.worklist.support import EHR1, EHR2, SNOMED_SW, role, worker_context

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

REPO = Path(__file__).resolve().parents[2]
LEGACY_SQL = REPO / "tests" / "ops" / "schema_561d69f_postgresql.sql"
SANDBOX_DEPLOYMENT = REPO / "config" / "deployments" / "sandbox.yaml"
EHR1_STANDALONE = "http://127.0.0.1:9/standalone/fhir"  # EHR one again, on its standalone iss
SW = [role([SNOMED_SW])]
PM = [role(texts=["Program manager"])]  # the sandbox deployment's program-manager mapping

# The deployment after the upgrade: two EHRs. EHR one has a team for the BWH directory site, a team for MGH's
# Location, a social worker whose own coverage is the Chelsea site, and no fallback team (a site no rule names is
# unrouted). EHR two has only a fallback team.
ROUTING_BLOCKS: dict[str, Any] = {
    "ehrs": {"ehr1": {"name": "EHR one", "iss": [EHR1, EHR1_STANDALONE]}, "ehr2": {"name": "EHR two", "iss": [EHR2]}},
    "routing": {"teams": [
        {"id": "passageway-bwh", "name": "Passageway's social work team at BWH", "ehr": "ehr1", "sites": ["bwh"],
         "members": ["Practitioner/sw-bwh"]},
        {"id": "haven-mgh", "name": "HAVEN's social work team at MGH", "ehr": "ehr1",
         "sites": ["Location/loc-mgh"], "members": ["Practitioner/sw-mgh"]},
        {"id": "on-call-2", "name": "the social-work team on call", "ehr": "ehr2", "fallback": True}]},
    "worklist": {"coverage": {"users": {"Practitioner/sw-chelsea": ["mgh-chelsea"]}, "roles": {}}},
}


@dataclass(frozen=True)
class Old:
    """One referral as 561d69f stored it, and the route it must get."""

    iss: str
    site: str | None  # referral.site: the directory site the referral page matched (None: no encounter)
    program: str
    route: tuple[str, str, str | None]
    status: str = "new"
    launch_location: str | None = None  # its launch is still stored, with this encounter Location
    urgent: bool = False
    unreadable: bool = False  # its summary was encrypted with a key the app no longer has


OLD = {
    "bwh": Old(EHR1, "bwh", "Passageway at BWH", ("ehr1", "coverage", "passageway-bwh"), urgent=True),
    # Its launch is still stored (a chart write waited for its token): the encounter's Location routes it.
    "mgh": Old(EHR1, "mgh", "HAVEN at MGH", ("ehr1", "coverage", "haven-mgh"), launch_location="loc-mgh"),
    # The same site, its launch purged: only the directory site is known, and no rule names it.
    "mgh-purged": Old(EHR1, "mgh", "HAVEN at MGH", ("ehr1", "unrouted", None)),
    "chelsea": Old(EHR1 + "/", "mgh-chelsea", "HAVEN at MGH", ("ehr1", "coverage", None), status="contacted"),
    "nwh": Old(EHR1, "nwh", "REACH", ("ehr1", "unrouted", None)),
    "no-encounter": Old(EHR1, None, "REACH", ("ehr1", "unrouted", None)),
    "nwh-closed": Old(EHR1, "nwh", "REACH", ("ehr1", "unrouted", None), status="closed"),
    "ehr2": Old(EHR2, "bwh", "Passageway at BWH", ("ehr2", "fallback", "on-call-2")),
    # A key removed before rotate-keys finished: routed all the same, on what is in plaintext.
    "unreadable": Old(EHR1, "bwh", "Passageway at BWH", ("ehr1", "coverage", "passageway-bwh"), unreadable=True),
}
UNROUTED_OPEN = {"mgh-purged", "nwh", "no-encounter"}


@dataclass
class Install:
    """A 561d69f install: its database, keys and (after the upgrade) deployment file."""

    url: str
    secret_key: str
    fernet_key: str
    deployment: Path
    ids: dict[str, str]  # name in OLD -> referral id

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO), "IPV_MODE": "test", "IPV_DEPLOYMENT": str(self.deployment),
                "DATABASE_URL": self.url, "SECRET_KEY": self.secret_key, "TOKEN_ENCRYPTION_KEY": self.fernet_key}

    def app(self, monkeypatch: pytest.MonkeyPatch) -> Any:
        monkeypatch.setenv("IPV_DEPLOYMENT", str(self.deployment))
        return create_app(app_config(self.url, DB_CREATE_ALL=False, SECRET_KEY=self.secret_key,
                                     TOKEN_ENCRYPTION_KEY=self.fernet_key))


def _deployment_file(tmp_path: Path) -> Path:
    raw = yaml.safe_load(SANDBOX_DEPLOYMENT.read_text())
    raw["private_key_file"] = str((SANDBOX_DEPLOYMENT.parent / raw["private_key_file"]).resolve())
    raw.update(ROUTING_BLOCKS)
    path = tmp_path / "hospital.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _summary_561d69f(name: str, old: Old) -> dict[str, Any]:
    """The summary 561d69f's consent page encrypted (``_summary`` of the write-back blueprint in its git tree)."""
    return {"patient_name": f"Pat {name}", "mrn": f"MRN-{name}", "patient_id": f"pat-{name}", "language": "en",
            "programs": [{"name": old.program, "phone": "1-617-000-0000"}],
            "safe_contact": {"channel": "phone", "note": None}, "clinician": "Dr. Avery Testdoctor",
            "kinds": ["DocumentReference", "ServiceRequest", "Task"]}


def _context_561d69f(name: str, location: str) -> dict[str, Any]:
    """A launch context as 561d69f's fhir/context.py stored it."""
    return {"patient": {"id": f"pat-{name}", "name": f"Pat {name}", "birthDate": "1990-04-02", "gender": "female",
                        "language": "en", "languages": ["en"], "mrn": f"MRN-{name}"},
            "encounter": {"id": f"enc-{name}", "class": "AMB",
                          "locations": [{"id": location, "name": "Massachusetts General Hospital",
                                         "identifiers": [{"system": "urn:ipv-sandbox:site", "value": "mgh"}],
                                         "postalCode": "02114"}],
                          "service_provider": {"id": "org-mgh", "name": "Massachusetts General Hospital",
                                               "identifiers": []}},
            "user": {"reference": "Practitioner/doc", "name": "Dr. Avery Testdoctor", "roles": ["clinician"]}}


def _store_561d69f(conn: Connection, key: Fernet, referrals: dict[str, Old] = OLD) -> dict[str, str]:
    now = datetime.now(UTC)
    ids = {}
    lost_key = Fernet(Fernet.generate_key())
    for i, (name, old) in enumerate(referrals.items()):
        fernet = lost_key if old.unreadable else key
        rid, lid = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        ids[name] = rid
        if old.launch_location:
            context = fernet.encrypt(json.dumps(_context_561d69f(name, old.launch_location)).encode())
            conn.execute(text("INSERT INTO launch (id, state, browser_id, iss, kind, status, created_at, expires_at, "
                              "context_enc) VALUES (:id, :state, 'b', :iss, 'ehr', 'active', :now, :exp, :ctx)"),
                         {"id": lid, "state": secrets.token_urlsafe(8), "iss": old.iss, "now": now,
                          "exp": now + timedelta(hours=8), "ctx": context})
        summary = fernet.encrypt(json.dumps(_summary_561d69f(name, old)).encode())
        conn.execute(text("INSERT INTO referral (id, launch_id, iss, profile, site, urgent, status, created_at, "
                          "summary_enc) VALUES (:id, :lid, :iss, 'sandbox', :site, :urgent, :status, :at, :summary)"),
                     {"id": rid, "lid": lid, "iss": old.iss, "site": old.site, "urgent": old.urgent,
                      "status": old.status, "at": now - timedelta(days=40, minutes=i), "summary": summary})
    return ids


def _install(url: str, tmp_path: Path, make_schema) -> Install:
    key = Fernet.generate_key().decode()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            make_schema(conn)
            ids = _store_561d69f(conn, Fernet(key))
    finally:
        engine.dispose()
    return Install(url=url, secret_key=secrets.token_urlsafe(32), fernet_key=key,
                   deployment=_deployment_file(tmp_path), ids=ids)


@pytest.fixture
def postgres_install(postgres_url: str, tmp_path: Path) -> Install:
    return _install(postgres_url, tmp_path, lambda conn: conn.exec_driver_sql(LEGACY_SQL.read_text()))


@pytest.fixture
def sqlite_install(tmp_path: Path) -> Iterator[Install]:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine, migrate.BASELINE)  # the baseline is 561d69f's create_all schema
    engine.dispose()
    yield _install(url, tmp_path, lambda conn: None)


def _flask_db_upgrade(install: Install) -> None:
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "smart_app", "db", "upgrade"], cwd=REPO,
                            env=install.env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


def _rows(url: str) -> dict[str, Any]:
    """Everything the backfill writes, to compare before and after a second run."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "referral": sorted(conn.execute(text(
                    "SELECT id, ehr, route_kind, route_team, program_keys, mrn_key, site_name FROM referral"))),
                "site": sorted(conn.execute(text("SELECT referral_id, key FROM referral_site"))),
                "program": sorted(conn.execute(text("SELECT referral_id, key FROM referral_program"))),
            }
    finally:
        engine.dispose()


def _queue(app: Any, reference: str, roles: list[dict[str, Any]], iss: str, query: str = "") -> tuple[str, list]:
    client = app.test_client()
    lid = launch_for(app, client, context=worker_context(reference, "S W", roles), iss=iss, kind="standalone")
    resp = client.get(f"/l/{lid}/worklist{query}")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    return page, re.findall(r'data-testid="referral-([^"]+)"', page)


def _check_routes_and_queues(install: Install, app: Any) -> None:
    by_id = {rid: name for name, rid in install.ids.items()}
    rows = _rows(install.url)
    assert {by_id[r[0]]: tuple(r[1:4]) for r in rows["referral"]} == {n: o.route for n, o in OLD.items()}
    # Indexed from the summaries; the unreadable one is not said to name no program or to have no MRN.
    assert {by_id[r.id] for r in rows["referral"] if r.program_keys and r.mrn_key} == set(OLD) - {"unreadable"}
    assert [(r.program_keys, r.mrn_key) for r in rows["referral"] if by_id[r.id] == "unreadable"] == [(None, None)]
    assert {by_id[rid] for rid, key in rows["site"] if key == "Location/loc-mgh"} == {"mgh"}

    def names(listed: list[str]) -> list[str]:
        return [by_id[rid] for rid in listed]

    ehr1_users = {("Practitioner/sw-bwh", ("bwh", "unreadable")), ("Practitioner/sw-mgh", ("mgh",)),
                  ("Practitioner/sw-chelsea", ("chelsea",)), ("Practitioner/sw-new", ())}
    for reference, own in ehr1_users:
        for iss in (EHR1, EHR1_STANDALONE):
            page, listed = _queue(app, reference, SW, iss)
            assert set(names(listed[:3])) == UNROUTED_OPEN, (reference, iss)  # at the top, for everyone
            assert set(names(listed[3:])) == set(own), (reference, iss)
            assert 'data-testid="unrouted-banner" data-count="3"' in page
    page, listed = _queue(app, "Practitioner/pm", PM, EHR1)
    assert set(names(listed)) == UNROUTED_OPEN
    # The closed one is there when asked for, still unrouted and never lost.
    _page, listed = _queue(app, "Practitioner/sw-new", SW, EHR1, "?status=all")
    assert set(names(listed)) == UNROUTED_OPEN | {"nwh-closed"}
    # The program index came from the summaries: the program filter finds the BWH team's referral by its name.
    _page, listed = _queue(app, "Practitioner/sw-bwh", SW, EHR1, "?program=Passageway+at+BWH")
    assert names(listed) == ["bwh"]
    # EHR two's social workers: its own fallback referral, none of EHR one's (the same user reference included).
    for reference in ("Practitioner/sw-2", "Practitioner/sw-bwh"):
        page, listed = _queue(app, reference, SW, EHR2, "?status=all")
        assert names(listed) == ["ehr2"]
        assert 'data-testid="unrouted-banner"' not in page


@pytest.mark.postgres
def test_upgrade_from_561d69f_routes_every_referral_on_postgresql(postgres_install, monkeypatch):
    _flask_db_upgrade(postgres_install)
    app = postgres_install.app(monkeypatch)
    try:
        _check_routes_and_queues(postgres_install, app)
        # Idempotent: a second upgrade, and the step run again by hand, change nothing.
        before = _rows(postgres_install.url)
        _flask_db_upgrade(postgres_install)
        with app.app_context(), app.extensions["db_engine"].begin() as conn:
            assert backfill.backfill(conn, settings_of(app)).referrals == 0
        assert _rows(postgres_install.url) == before
    finally:
        app.extensions["db_engine"].dispose()


def test_upgrade_from_561d69f_routes_every_referral_on_sqlite_in_batches(sqlite_install, monkeypatch):
    monkeypatch.setattr(backfill, "BATCH", 3)  # nine referrals: three batches
    app = sqlite_install.app(monkeypatch)
    try:
        result = app.test_cli_runner().invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, (result.output, result.exception)
        _check_routes_and_queues(sqlite_install, app)
    finally:
        app.extensions["db_engine"].dispose()


def test_the_demos_upgrade_at_start_routes_them_too(sqlite_install, monkeypatch):
    monkeypatch.setenv("IPV_DEPLOYMENT", str(sqlite_install.deployment))
    app = create_app(app_config(sqlite_install.url, DB_CREATE_ALL=False, DB_AUTO_UPGRADE=True,
                                SECRET_KEY=sqlite_install.secret_key, TOKEN_ENCRYPTION_KEY=sqlite_install.fernet_key))
    app.extensions["db_engine"].dispose()
    by_id = {rid: name for name, rid in sqlite_install.ids.items()}
    routes = {by_id[r[0]]: tuple(r[1:4]) for r in _rows(sqlite_install.url)["referral"]}
    assert routes == {n: o.route for n, o in OLD.items()}


def test_a_referral_an_older_release_writes_after_the_upgrade_is_routed_on_the_workers_next_round(
        sqlite_install, monkeypatch):
    """A rolling upgrade: the schema is at head, and an instance still on 561d69f's code writes a referral with no
    route. The outbox worker's housekeeping routes it; it is then in its team's queue."""
    from smart_app.outbox.worker import OutboxWorker

    app = sqlite_install.app(monkeypatch)
    try:
        assert app.test_cli_runner().invoke(args=["db", "upgrade"]).exit_code == 0
        engine = app.extensions["db_engine"]
        with engine.begin() as conn:
            rid = _store_561d69f(conn, Fernet(sqlite_install.fernet_key), {"late": OLD["bwh"]})["late"]
        _page, listed = _queue(app, "Practitioner/sw-bwh", SW, EHR1)
        assert rid not in listed  # no route: in no queue, until the worker's round
        assert OutboxWorker(app).purge_launches()["referrals_routed"] == 1
        _page, listed = _queue(app, "Practitioner/sw-bwh", SW, EHR1)
        assert rid in listed
        assert OutboxWorker(app).purge_launches()["referrals_routed"] == 0
    finally:
        app.extensions["db_engine"].dispose()


@pytest.mark.postgres
def test_without_the_app_the_upgrade_refuses_and_changes_nothing(postgres_install):
    before = _rows_at_561d69f(postgres_install.url)
    engine = create_engine(postgres_install.url)
    try:
        with pytest.raises(backfill.BackfillNeedsTheApp, match="flask --app smart_app db upgrade"):
            migrate.upgrade(engine)  # as the bare alembic command would: no app, no keys, no deployment
        with engine.connect() as conn:
            assert migrate.stored_revisions(conn) == []  # the whole upgrade rolled back: still 561d69f's schema
    finally:
        engine.dispose()
    assert _rows_at_561d69f(postgres_install.url) == before


def _rows_at_561d69f(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(text("SELECT id, iss, site, status, summary_enc FROM referral")))
    finally:
        engine.dispose()
