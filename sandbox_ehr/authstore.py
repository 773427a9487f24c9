"""Durable state of the sandbox SMART authorization server (stdlib sqlite3, the SANDBOX_DB file).

Launch contexts, pending standalone logins, authorization codes, access and refresh tokens, used client
assertion ``jti`` values, the per-launch iss ids (``issuers.py``) and the server's id_token signing key.
Codes and tokens are stored as SHA-256
hashes: a copy of the database never yields a usable bearer token.

Thread safety: every call opens its own short-lived connection (sqlite3 connections must not be shared
across threads) and single-use checks are done with one conditional UPDATE, so two requests racing on
the same code or refresh token cannot both win.
Commits are not flushed one by one (``SYNCHRONOUS``, as in the resource store, `sandbox_ehr/store.py`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import current_app

from sandbox_ehr.store import SYNCHRONOUS

CODE_LIFETIME = 60
ACCESS_TOKEN_LIFETIME = 3600
LAUNCH_LIFETIME = 3600
PENDING_LIFETIME = 900
REFRESH_LIFETIME_OFFLINE = 30 * 24 * 3600
REFRESH_LIFETIME_ONLINE = 8 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_signing_key (
    kid TEXT PRIMARY KEY, private_pem TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS auth_launch (
    id TEXT PRIMARY KEY, context TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS auth_pending (
    id TEXT PRIMARY KEY, request TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS auth_code (
    code_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL, scope TEXT NOT NULL, nonce TEXT, context TEXT NOT NULL,
    expires_at INTEGER NOT NULL, used_at INTEGER);
CREATE TABLE IF NOT EXISTS auth_access_token (
    token_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, scope TEXT NOT NULL, patient TEXT, encounter TEXT,
    fhir_user TEXT, grant_id TEXT, expires_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, iss_id TEXT);
CREATE INDEX IF NOT EXISTS auth_access_token_grant ON auth_access_token (grant_id);
CREATE TABLE IF NOT EXISTS auth_refresh_token (
    token_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL,
    context TEXT NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER, revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS auth_refresh_token_grant ON auth_refresh_token (grant_id);
CREATE TABLE IF NOT EXISTS auth_issuer (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS auth_used_jti (
    client_id TEXT NOT NULL, jti TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (client_id, jti));
"""

_ready: set[str] = set()
_ready_lock = threading.Lock()


def now() -> int:
    """Current time in seconds; one place for tests to move the clock."""
    return int(time.time())


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _db_path() -> str:
    return current_app.config["SANDBOX_DB"]


def init_schema(path: str) -> None:
    with _ready_lock:
        if path in _ready:
            return
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the token endpoint
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(auth_access_token)")}
            if "iss_id" not in columns:  # a database made before per-launch iss
                conn.execute("ALTER TABLE auth_access_token ADD COLUMN iss_id TEXT")
            conn.commit()
        finally:
            conn.close()
        _ready.add(path)


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    path = _db_path()
    init_schema(path)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
    conn.row_factory = sqlite3.Row
    try:
        with conn:  # one transaction per call: commit on success, roll back on error
            yield conn
    finally:
        conn.close()


# --- signing key -------------------------------------------------------------------------------

def get_or_create_signing_key(generate) -> tuple[str, str]:
    """(kid, private PEM) of the id_token key; ``generate()`` -> (kid, pem) runs only on first start."""
    with _connect() as conn:
        row = conn.execute("SELECT kid, private_pem FROM auth_signing_key ORDER BY created_at LIMIT 1").fetchone()
        if row:
            return row["kid"], row["private_pem"]
        kid, pem = generate()
        conn.execute("INSERT INTO auth_signing_key (kid, private_pem, created_at) VALUES (?, ?, ?)", (kid, pem, now()))
        return kid, pem


# --- launch contexts ---------------------------------------------------------------------------

def create_launch(context: dict[str, Any], lifetime: int = LAUNCH_LIFETIME) -> str:
    """Store an EHR launch context; returns the opaque ``launch`` parameter.

    ``context`` keys: practitioner, patient, encounter, intent, need_patient_banner, smart_style_url,
    fhirContext.
    """
    launch_id = secrets.token_urlsafe(24)
    with _connect() as conn:
        conn.execute("INSERT INTO auth_launch (id, context, expires_at) VALUES (?, ?, ?)",
                     (launch_id, json.dumps(context), now() + lifetime))
    return launch_id


def get_launch(launch_id: str) -> dict[str, Any] | None:
    with _connect() as conn:
        row = conn.execute("SELECT context, expires_at FROM auth_launch WHERE id = ?", (launch_id,)).fetchone()
    if not row or row["expires_at"] <= now():
        return None
    return json.loads(row["context"])


# --- pending standalone logins -----------------------------------------------------------------

def create_pending(request: dict[str, Any]) -> str:
    pending_id = secrets.token_urlsafe(24)
    with _connect() as conn:
        conn.execute("INSERT INTO auth_pending (id, request, expires_at) VALUES (?, ?, ?)",
                     (pending_id, json.dumps(request), now() + PENDING_LIFETIME))
    return pending_id


def get_pending(pending_id: str) -> dict[str, Any] | None:
    with _connect() as conn:
        row = conn.execute("SELECT request, expires_at FROM auth_pending WHERE id = ?", (pending_id,)).fetchone()
    if not row or row["expires_at"] <= now():
        return None
    return json.loads(row["request"])


def delete_pending(pending_id: str) -> bool:
    """Consume a pending login; False when it was already consumed (double submit)."""
    with _connect() as conn:
        return conn.execute("DELETE FROM auth_pending WHERE id = ?", (pending_id,)).rowcount == 1


# --- authorization codes -----------------------------------------------------------------------

def create_code(client_id: str, redirect_uri: str, code_challenge: str, scope: str, nonce: str | None,
                context: dict[str, Any], lifetime: int = CODE_LIFETIME) -> str:
    code = secrets.token_urlsafe(32)
    with _connect() as conn:
        conn.execute(
            "INSERT INTO auth_code (code_hash, grant_id, client_id, redirect_uri, code_challenge, scope, nonce,"
            " context, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_hash(code), secrets.token_hex(16), client_id, redirect_uri, code_challenge, scope, nonce,
             json.dumps(context), now() + lifetime))
    return code


class CodeReplayed(Exception):
    """The code was already exchanged; every token issued from it has been revoked."""


def consume_code(code: str) -> dict[str, Any] | None:
    """Mark a code used and return it; None when unknown or expired; CodeReplayed on a second use.

    Per RFC 6749 4.1.2, a second use revokes the tokens issued from the first.
    """
    code_hash = _hash(code)
    with _connect() as conn:
        row = conn.execute("SELECT * FROM auth_code WHERE code_hash = ?", (code_hash,)).fetchone()
        if row is None:
            return None
        won = conn.execute("UPDATE auth_code SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
                           (now(), code_hash)).rowcount == 1
        if not won:
            _revoke_grant(conn, row["grant_id"])
            replayed = True
        else:
            replayed = False
    if replayed:
        raise CodeReplayed()
    if row["expires_at"] <= now():
        return None
    data = dict(row)
    data["context"] = json.loads(data["context"])
    return data


def _revoke_grant(conn: sqlite3.Connection, grant_id: str) -> None:
    conn.execute("UPDATE auth_access_token SET revoked = 1 WHERE grant_id = ?", (grant_id,))
    conn.execute("UPDATE auth_refresh_token SET revoked = 1 WHERE grant_id = ?", (grant_id,))


def revoke_grant(grant_id: str) -> None:
    with _connect() as conn:
        _revoke_grant(conn, grant_id)


# --- access tokens -----------------------------------------------------------------------------

def issue_access_token(client_id: str, scope: str, patient: str | None = None, encounter: str | None = None,
                       fhir_user: str | None = None, lifetime: int = ACCESS_TOKEN_LIFETIME,
                       iss_id: str | None = None) -> str:
    """Issue an opaque bearer token (contract with fhir_api.py and its tests)."""
    return issue_access_token_for_grant(client_id, scope, patient, encounter, fhir_user, lifetime, grant_id=None,
                                        iss_id=iss_id)


def issue_access_token_for_grant(client_id: str, scope: str, patient: str | None, encounter: str | None,
                                 fhir_user: str | None, lifetime: int, grant_id: str | None,
                                 iss_id: str | None = None) -> str:
    """``iss_id``: the per-launch iss the token is good for (issuers.py); None = the plain iss."""
    token = secrets.token_urlsafe(32)
    with _connect() as conn:
        conn.execute(
            "INSERT INTO auth_access_token (token_hash, client_id, scope, patient, encounter, fhir_user, grant_id,"
            " expires_at, iss_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_hash(token), client_id, scope, patient, encounter, fhir_user, grant_id, now() + lifetime, iss_id))
    return token


def verify_access_token(token: str) -> dict | None:
    """{"scope", "patient", "encounter", "fhirUser", "client_id", "iss_id"} or None if unknown, revoked or
    expired."""
    if not token:
        return None
    with _connect() as conn:
        row = conn.execute("SELECT * FROM auth_access_token WHERE token_hash = ?", (_hash(token),)).fetchone()
    if row is None or row["revoked"] or row["expires_at"] <= now():
        return None
    return {"scope": row["scope"], "patient": row["patient"], "encounter": row["encounter"],
            "fhirUser": row["fhir_user"], "client_id": row["client_id"], "iss_id": row["iss_id"]}


# --- refresh tokens ----------------------------------------------------------------------------

def issue_refresh_token(grant_id: str, client_id: str, scope: str, context: dict[str, Any], lifetime: int) -> str:
    token = secrets.token_urlsafe(32)
    with _connect() as conn:
        conn.execute(
            "INSERT INTO auth_refresh_token (token_hash, grant_id, client_id, scope, context, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (_hash(token), grant_id, client_id, scope, json.dumps(context), now() + lifetime))
    return token


class RefreshReplayed(Exception):
    """A rotated refresh token came back: the grant is revoked (token theft signal)."""


def consume_refresh_token(token: str) -> dict[str, Any] | None:
    """Rotate: mark used and return it; None when unknown, revoked or expired; RefreshReplayed on reuse."""
    token_hash = _hash(token)
    with _connect() as conn:
        row = conn.execute("SELECT * FROM auth_refresh_token WHERE token_hash = ?", (token_hash,)).fetchone()
        if row is None or row["revoked"]:
            return None
        won = conn.execute("UPDATE auth_refresh_token SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
                           (now(), token_hash)).rowcount == 1
        if not won:
            _revoke_grant(conn, row["grant_id"])
    if not won:
        raise RefreshReplayed()
    if row["expires_at"] <= now():
        return None
    data = dict(row)
    data["context"] = json.loads(data["context"])
    return data


# --- per-launch issuers (issuers.py) ----------------------------------------------------------

def create_issuer() -> str:
    """A new per-launch iss id (kept for good: refresh tokens under it may live 30 days)."""
    iss_id = secrets.token_urlsafe(12)
    with _connect() as conn:
        conn.execute("INSERT INTO auth_issuer (id, created_at) VALUES (?, ?)", (iss_id, now()))
    return iss_id


def issuer_exists(iss_id: str) -> bool:
    with _connect() as conn:
        return conn.execute("SELECT 1 FROM auth_issuer WHERE id = ?", (iss_id,)).fetchone() is not None


# --- client assertion jti ----------------------------------------------------------------------

def remember_jti(client_id: str, jti: str, expires_at: int) -> bool:
    """Record a client assertion's jti; False when it was seen before (replay)."""
    with _connect() as conn:
        conn.execute("DELETE FROM auth_used_jti WHERE expires_at < ?", (now() - 600,))
        try:
            conn.execute("INSERT INTO auth_used_jti (client_id, jti, expires_at) VALUES (?, ?, ?)",
                         (client_id, jti, expires_at))
        except sqlite3.IntegrityError:
            return False
    return True
