"""Access to the current launch from a view: ``/l/<lid>/...`` + this browser's session.

Every page after the callback carries the launch id in its path, never in the
session cookie, so two tabs with two patients stay apart. The session cookie only
holds a random ``browser_id``; a launch is served only to the browser that started it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

from flask import abort, g, session
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from config.current import current_settings
from fhir.launch_context import LaunchContext
from smart_app.launch.visit_memory import (
    READS,
    ReadWithLaunch,
    launch_keys,
    launch_params,
    launch_statement,
    read_with_launch,
)
from smart_app.store.crypto import decrypt_json, encrypt_json
from smart_app.store.db import get_session
from smart_app.store.models import LaunchRecord


def browser_id() -> str:
    """The random id binding launches to this browser (created on first use)."""
    bid = session.get("bid")
    if not bid:
        bid = secrets.token_urlsafe(24)
        session["bid"] = bid
        session.permanent = False
    return bid


class Launch:
    """A view's handle on one launch record, with decrypted context and working data.

    Made from the ORM record, or from the launch table's row as a page read it (``row``): the ORM record is made
    and put in the request's session only when something changes the launch or asks for ``record``, so a page that
    only reads pays for one Core statement, not the ORM's load."""

    def __init__(self, record: LaunchRecord | None = None, *, row: Any = None, read: ReadWithLaunch | None = None):
        self._record = record
        self._row = row
        # What the page's launch statement read of the patient with the row (``load_launch``'s ``reads``).
        self.read = read
        self._context: dict[str, Any] | None = None
        self._typed: tuple[dict[str, Any], LaunchContext] | None = None  # (the context it was read from, itself)
        self._data: dict[str, Any] | None = None
        self._tokens: tuple[str | None, dict[str, Any]] | None = None  # (the encrypted value, its plaintext)

    @property
    def record(self) -> LaunchRecord:
        if self._record is None:
            self._record = _attached(self._row)
        return self._record

    def _column(self, name: str) -> Any:
        return getattr(self._record if self._record is not None else self._row, name)

    @property
    def id(self) -> str:
        return self._column("id")

    @property
    def iss(self) -> str:
        return self._column("iss")

    @property
    def kind(self) -> str:
        return self._column("kind")

    @property
    def status(self) -> str:
        return self._column("status")

    @property
    def context(self) -> dict[str, Any]:
        """Patient, encounter, site and user as read at launch (see fhir/context.py)."""
        if self._context is None:
            self._context = decrypt_json(self._column("context_enc")) or {}
        return self._context

    @property
    def typed_context(self) -> LaunchContext:
        """The same context, typed (fhir/launch_context.py): what a layer reads instead of the dict's keys. Read
        again when the context is replaced."""
        if self._typed is None or self._typed[0] is not self.context:
            self._typed = (self.context, LaunchContext.from_dict(self.context))
        return self._typed[1]

    @property
    def data(self) -> dict[str, Any]:
        """Working state of the visit: 'screening', 'referral', 'consent', ..."""
        if self._data is None:
            self._data = decrypt_json(self._column("data_enc")) or {}
        return self._data

    @property
    def tokens(self) -> dict[str, Any]:
        """The token response (a copy). Decrypted once per stored value: the consent page asked three times."""
        stored = self._column("tokens_enc")
        if self._tokens is None or self._tokens[0] is not stored:
            self._tokens = (stored, decrypt_json(stored) or {})
        return dict(self._tokens[1])

    def set_tokens(self, tokens: dict[str, Any]) -> None:
        self.record.tokens_enc = encrypt_json(tokens)
        self._tokens = (self.record.tokens_enc, dict(tokens))

    def set_context(self, context: dict[str, Any]) -> None:
        self._context = context
        self.record.context_enc = encrypt_json(context)
        # The keys the patient's rows carry, so a page reads them with the launch (visit_memory ``launch_statement``).
        self.record.patient_key, self.record.encounter_key = launch_keys(self.iss, context)

    def update_data(self, **values: Any) -> None:
        data = dict(self.data)
        data.update(values)
        self._data = data
        self.record.data_enc = encrypt_json(data)

    def pop_data(self, key: str) -> Any:
        if key not in self.data:
            return None  # nothing to remove: no re-encryption, no UPDATE
        data = dict(self.data)
        value = data.pop(key, None)
        self._data = data
        self.record.data_enc = encrypt_json(data)
        return value

    def save(self) -> None:
        get_session().commit()


LAUNCH_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# Every page's first statement, built once: the launch table's row through Core (the ORM's load of the record, its
# unit of work and identity map, cost about as much again as the statement).
_LAUNCH = LaunchRecord.__table__
_BY_ID = select(*_LAUNCH.c).where(_LAUNCH.c.id == bindparam("lid"))


def _attached(row: Any) -> LaunchRecord:
    """The ORM record of a launch read as a row, in the request's session (the one already there if the session
    loaded it), so a change to it is written by the session's next commit."""
    db = get_session()
    present = db.identity_map.get(identity_key(LaunchRecord, (row.id,)))
    if present is not None:
        return present
    record = LaunchRecord.__mapper__.class_manager.new_instance()
    values = row._asdict()
    record.__dict__.update({name: values[name] for name in _LAUNCH.c.keys()})  # not what was read with it
    make_transient_to_detached(record)  # as if loaded: no change to write yet
    db.add(record)
    return record


def _rows(statement: Any, lid: str, reads: frozenset[str]) -> list[Any]:
    return get_session().connection().execute(statement, {"lid": lid, **launch_params(reads)}).all()


def _read(lid: str, reads: frozenset[str]) -> tuple[Any, ReadWithLaunch | None]:
    statement = launch_statement(reads) if reads else _BY_ID
    db = get_session()
    try:
        rows = _rows(statement, lid, reads)
    except DBAPIError as exc:
        # A pooled connection used moments ago is not pinged (smart_app/store/db.py); if the server dropped it since
        # (a restart), this first statement of the request fails on it and SQLAlchemy discards the pool. Nothing
        # was done yet in this request, so read once more on a fresh connection instead of showing an error.
        if not exc.connection_invalidated:
            raise
        db.rollback()
        rows = _rows(statement, lid, reads)
    if not rows:
        return None, None
    return rows[0], (read_with_launch(rows, reads) if reads else None)


def load_launch(lid: str, *, statuses: tuple[str, ...] = ("active",), refresh: bool = True,
                reads: frozenset[str] = frozenset()) -> Launch:
    """The launch ``lid`` if it belongs to this browser and is live; 404 otherwise.

    404, not 403: an id belonging to someone else must look like no id at all. A live launch used here
    starts its idle timeout again (``refresh``). ``reads``: what of its patient to read in the same statement
    (visit_memory ``READS``; in ``Launch.read``).
    """
    if not isinstance(lid, str) or not LAUNCH_ID.match(lid):
        abort(404, description="This session has ended or was opened elsewhere. "
                               "Launch the app again from the patient's chart.")
    row, read = _read(lid, reads)
    now = datetime.now(UTC)
    if (
        row is None
        or not secrets.compare_digest(row.browser_id.encode(), str(session.get("bid", "")).encode())
        or row.status not in statuses
        or _aware(row.expires_at) < now
    ):
        abort(404, description="This session has ended or was opened elsewhere. "
                               "Launch the app again from the patient's chart.")
    launch = Launch(row=row, read=read)
    if refresh and row.status == "active" and _touch_due(row):
        touch(launch.record)
    return launch


def reads_with_launch(*reads: str) -> Callable[[Callable], Callable]:
    """Marks a view (below ``launch_required``/``launch_view``) whose launch statement also reads ``reads`` of its
    patient (visit_memory ``READS``), fresh on every request, in ``g.launch.read``."""
    unknown = set(reads) - READS
    if unknown:
        raise ValueError(f"unknown launch reads: {sorted(unknown)}")

    def mark(view: Callable) -> Callable:
        view.launch_reads = frozenset(reads)  # type: ignore[attr-defined]
        return view

    return mark


def launch_required(view: Callable) -> Callable:
    """Decorator for views under /l/<lid>/: sets ``g.launch``."""
    reads = getattr(view, "launch_reads", frozenset())

    @wraps(view)
    def wrapper(lid: str, *args: Any, **kwargs: Any):
        g.launch = load_launch(lid, reads=reads)
        return view(*args, **kwargs)

    return wrapper


def new_expiry(created_at: datetime | None = None) -> datetime:
    """When a launch used now expires: after the idle timeout (tuning.idle_timeout_seconds, shared workstations),
    and never later than tuning.launch_ttl_seconds after it started."""
    now = datetime.now(UTC)
    settings = current_settings()
    cap = _aware(created_at or now) + timedelta(seconds=settings.launch_ttl_seconds)
    idle = now + timedelta(seconds=settings.idle_timeout_seconds)
    return min(cap, idle)


TOUCH_EVERY = timedelta(seconds=15)  # at most one write per launch per 15 s for "still in use"


def _touch_due(record: Any) -> bool:
    return new_expiry(record.created_at) - _aware(record.expires_at) > TOUCH_EVERY


def touch(record: LaunchRecord, *, force: bool = False) -> None:
    """The launch is in use: push its expiry to the idle timeout again."""
    expires = new_expiry(record.created_at)
    if force or expires - _aware(record.expires_at) > TOUCH_EVERY:
        record.expires_at = expires
        get_session().commit()


def _aware(dt: datetime) -> datetime:
    # SQLite returns naive datetimes; they were stored as UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
