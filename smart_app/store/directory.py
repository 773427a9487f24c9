"""Referral directory imports kept in the database, so that every host serves the same directory.

`ipv-directory import` writes a file into one host's import folder: with several hosts each would serve its own.
``flask --app smart_app directory import FILE`` checks the file the same way (every configured source loads with it)
and stores it as a new row of ``directory_import``: the row's id is the directory's version. Each app process asks
for the newest version at most every ``tuning.directory_check_seconds``, from a request that finds the interval over;
when it is newer than the one it serves, a background thread builds the new directory and swaps it in whole
(referrals/store.py), so no request waits on the build and none sees half of it. The outbox worker looks on its own
rounds (its housekeeping routes referrals by the directory's sites). A version that fails to load is logged and
skipped; the process keeps serving the directory it has.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config.current import settings_of
from referrals.cli import native_text
from referrals.errors import DirectoryError
from referrals.loaders import FORMATS, load_source
from referrals.store import build, store_for
from smart_app.store.db import session_scope
from smart_app.store.models import DirectoryImport

log = logging.getLogger(__name__)
_STATE = "ipv_directory_sync"
NAME_MAX = 128


class _Sync:
    """When this process last asked for the version, and whether a reload is running."""

    def __init__(self) -> None:
        self.next_check = 0.0
        self.failed_version = 0
        self.lock = threading.Lock()


def newest_imports(db: Session) -> tuple[int, list[tuple[str, str]]]:
    """The newest version, and the newest text of each import name, in name order."""
    version = db.scalar(select(func.max(DirectoryImport.version))) or 0
    if not version:
        return 0, []
    newest = select(func.max(DirectoryImport.version)).group_by(DirectoryImport.name)
    rows = db.execute(select(DirectoryImport.name, DirectoryImport.body)
                      .where(DirectoryImport.version.in_(newest)).order_by(DirectoryImport.name)).all()
    return version, [(name, body) for name, body in rows]


def stored_version(db: Session) -> int:
    return db.scalar(select(func.max(DirectoryImport.version))) or 0


def load_imports(app: Flask) -> bool:
    """Bring the app's directory to the database's newest version; True when it changed. At start-up too: a
    database without the table yet (before `db upgrade`) leaves the files' directory as it is."""
    store = store_for(app)
    state: _Sync = app.extensions.setdefault(_STATE, _Sync())
    try:
        with session_scope(app) as db:
            version = stored_version(db)
            if version in (store.version, state.failed_version):
                return False
            version, imported = newest_imports(db)
    except SQLAlchemyError as exc:
        log.warning("directory version not read (%s): serving the directory this process has", type(exc).__name__)
        return False
    try:
        index = store.reload(imported=imported, version=version)
    except DirectoryError as exc:
        state.failed_version = version
        log.error("directory version %d not loaded (%d problem(s), first: %s): serving version %d", version,
                  len(exc.issues), exc.issues[0] if exc.issues else "-", store.version)
        return False
    log.info("directory version %d loaded: %d services", version, len(index.directory.services))
    return True


def _check_now() -> None:
    """before_request: at most every tuning.directory_check_seconds, a background look for a newer version."""
    app = current_app._get_current_object()
    interval = settings_of(app).directory_check_seconds
    state: _Sync = app.extensions.setdefault(_STATE, _Sync())
    now = time.monotonic()
    if interval <= 0 or now < state.next_check or not state.lock.acquire(blocking=False):
        return
    state.next_check = now + interval

    def run() -> None:
        try:
            load_imports(app)
        finally:
            state.lock.release()

    threading.Thread(target=run, name="directory-version", daemon=True).start()


def store_import(app: Flask, path: Path, *, name: str, fmt: str = "auto") -> tuple[int, int, int]:
    """Check ``path`` (it loads, and the whole directory loads with it) and keep it as the next version:
    (version, services in the file, services the app will serve)."""
    directory = load_source(path, fmt=fmt)
    text = native_text(directory)
    store = store_for(app)
    with session_scope(app) as db:
        _version, imported = newest_imports(db)
        imported = [(n, t) for n, t in imported if n != name] + [(name, text)]
        index = build(store.paths, sorted(imported))
        row = DirectoryImport(name=name, body=text, services=len(directory.services))
        db.add(row)
        db.flush()
        version = row.version
    return version, len(directory.services), len(index.entries) + len(index.emergency)


directory_cli = AppGroup("directory", help="Referral directory imports kept in the database (every host serves "
                                          "them).")


@directory_cli.command("import")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--name", default=None, help="the import's name (default: the file's); a later import of the same "
                                           "name replaces it")
@click.option("--format", "fmt", type=click.Choice(("auto", *FORMATS)), default="auto", show_default=True)
def directory_import(file: Path, name: str | None, fmt: str) -> None:
    """Validate FILE and store it as the directory's next version: every instance serves it within
    tuning.directory_check_seconds, without a restart."""
    app = current_app._get_current_object()
    name = (name or file.stem)[:NAME_MAX]
    try:
        version, services, served = store_import(app, file, name=name, fmt=fmt)
    except DirectoryError as exc:
        click.echo(f"REFUSED: {len(exc.issues)} problem(s); nothing was stored.", err=True)
        for issue in exc.issues:
            click.echo(f"  {issue}", err=True)
        raise SystemExit(1) from None
    click.echo(f"IMPORTED: {services} service(s) as {name!r}, directory version {version} (every instance serves "
               f"{served} service(s) within {settings_of(app).directory_check_seconds:g} s)")


def init_app(app: Flask) -> None:
    # Not in the tests' apps (Flask's TESTING): a thread of its own on their in-memory databases; they load imports
    # by calling load_imports.
    if not app.testing:
        app.before_request(_check_now)
    app.cli.add_command(directory_cli)
