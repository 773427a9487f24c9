"""Encryption at rest for tokens and PHI (Fernet: AES-128-CBC + HMAC-SHA256), with rotatable keys.

``TOKEN_ENCRYPTION_KEY`` is a comma-separated list of Fernet keys: the FIRST encrypts, ALL decrypt
(``cryptography``'s MultiFernet). Rotation: put the new key first ("new,old") on every instance and worker,
run ``flask --app smart_app rotate-keys`` (re-encrypts every stored ``*_enc`` column with the new key), then
drop the old key. A value no configured key can decrypt raises ``Undecryptable``: it is logged (table and
column only, never content) and shown as unreadable — never silently treated as empty.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import click
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import LargeBinary, and_, bindparam, select, text, update

from config.current import current_settings, settings_of
from smart_app.store.db import get_session
from smart_app.store.models import Base

log = logging.getLogger("ipv.crypto")


class Undecryptable(Exception):
    """Stored data that no configured key decrypts (a key was removed before rotate-keys finished)."""


def parse_keys(value: Any) -> list[Fernet]:
    raw = value.decode() if isinstance(value, bytes) else str(value or "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    return [Fernet(k.encode()) for k in keys]


def init_app(app: Flask) -> None:
    keys = parse_keys(settings_of(app).token_encryption_key)
    if not keys:
        raise RuntimeError("TOKEN_ENCRYPTION_KEY is required (one Fernet key, or several comma-separated: "
                           "the first encrypts, all decrypt)")
    app.extensions["fernet_keys"] = keys
    app.extensions["fernet"] = MultiFernet(keys)
    app.cli.add_command(rotate_keys_command)


def keyed_hash(message: str) -> str:
    """HMAC-SHA256 of ``message`` keyed with SECRET_KEY, hex: equal values compare equal in SQL, and the value
    cannot be read back or guessed without the key (patient and visit keys, launch user tags, program keys)."""
    secret = current_settings().secret_key.encode()
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def encrypt_json(value: Any) -> bytes:
    return current_app.extensions["fernet"].encrypt(json.dumps(value).encode())


def decrypt_json(blob: bytes | None, *, where: str = "record") -> Any:
    """The stored value; None for no value. Raises Undecryptable when no configured key fits."""
    if not blob:
        return None
    try:
        return json.loads(current_app.extensions["fernet"].decrypt(blob))
    except InvalidToken:
        log.error("cannot decrypt a stored %s with any configured TOKEN_ENCRYPTION_KEY (key removed before "
                  "rotate-keys finished?)", where)
        raise Undecryptable(where) from None


# -- rotate-keys ------------------------------------------------------------------------------------------
def encrypted_columns() -> list[tuple[Any, Any]]:
    """(table, column) for every encrypted column: LargeBinary columns named ``*_enc`` in the models."""

    return [(table, column) for table in Base.metadata.sorted_tables for column in table.columns
            if column.name.endswith("_enc") and isinstance(column.type, LargeBinary)]


def rotate(db: Any, *, batch: int = 500) -> dict[str, dict[str, int]]:
    """Re-encrypt every stored value with the first key. Compare-and-set per row (a value the app changed
    meanwhile is left to the app, already under the new key); undecryptable values are counted, logged and
    left untouched. Commits per batch."""
    primary: Fernet = current_app.extensions["fernet_keys"][0]
    multi: MultiFernet = current_app.extensions["fernet"]
    report: dict[str, dict[str, int]] = {}
    for table, column in encrypted_columns():
        counts = {"rotated": 0, "current": 0, "unreadable": 0}
        pk = list(table.primary_key.columns)
        last: tuple | None = None
        while True:
            q = select(*pk, column).where(column.is_not(None), column != b"").order_by(*pk).limit(batch)
            if last is not None:
                q = q.where(_after(pk, last))
            rows = db.execute(q).all()
            if not rows:
                break
            changes: list[dict[str, Any]] = []
            for row in rows:
                *key, blob = row
                blob = bytes(blob)
                try:
                    primary.decrypt(blob)
                    counts["current"] += 1
                    continue
                except InvalidToken:
                    pass
                try:
                    new = multi.rotate(blob)
                except InvalidToken:
                    counts["unreadable"] += 1
                    log.error("rotate-keys: %s.%s row cannot be decrypted with any configured key; left as is",
                              table.name, column.name)
                    continue
                changes.append({**{f"k{i}": v for i, v in enumerate(key)}, "old_value": blob, "new_value": new})
            if changes:  # one executemany per batch; compare-and-set on the old value
                where = and_(*(c == bindparam(f"k{i}") for i, c in enumerate(pk)), column == bindparam("old_value"))
                stmt = update(table).where(where).values({column.name: bindparam("new_value")})
                done = _execute_update(db, table, stmt, changes)
                counts["rotated"] += done
                counts["current"] += len(changes) - done  # changed by the app meanwhile: already new key
            db.commit()
            last = tuple(rows[-1][: len(pk)])
        report[f"{table.name}.{column.name}"] = counts
    return report


_MAY_REKEY_AUDIT = text("SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
                        "WHERE c.oid = 'audit_event'::regclass")


def _after(pk: list[Any], last: tuple) -> Any:
    if len(pk) == 1:
        return pk[0] > last[0]
    from sqlalchemy import tuple_

    return tuple_(*pk) > tuple_(*last)


def _execute_update(db: Any, table: Any, stmt: Any, params: list[dict[str, Any]]) -> int:
    if table.name == "audit_event" and db.get_bind().dialect.name == "postgresql" and not db.execute(
            _MAY_REKEY_AUDIT).scalar():
        # The append-only trigger lets the table's owner change patient_enc only (smart_app/ops/audit.py); the
        # app's runtime role may not change the audit table at all.
        raise click.ClickException("rotate-keys re-encrypts the access audit as the database owner role: run it "
                                   "with the owner's DATABASE_URL (DEPLOY.md, database roles)")
    conn = db.connection()
    return conn.execute(stmt, params).rowcount or 0


@click.command("rotate-keys")
@with_appcontext
def rotate_keys_command() -> None:
    """Re-encrypt every stored encrypted value with the first TOKEN_ENCRYPTION_KEY (exit 1 if any is unreadable)."""
    report = rotate(get_session())
    unreadable = 0
    for name, counts in report.items():
        click.echo(f"{name}: rotated={counts['rotated']} current={counts['current']} "
                   f"unreadable={counts['unreadable']}")
        unreadable += counts["unreadable"]
    if unreadable:
        click.echo(f"{unreadable} value(s) could not be decrypted with any configured key: keep the old key(s) "
                   "in TOKEN_ENCRYPTION_KEY until they are found", err=True)
        raise SystemExit(1)
    click.echo("all encrypted values use the first key; older keys can be removed")
