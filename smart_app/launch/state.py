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

from config.current import current_settings
from fhir.launch_context import LaunchContext
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
    """A view's handle on one launch record, with decrypted context and working data."""

    def __init__(self, record: LaunchRecord):
        self.record = record
        self._context: dict[str, Any] | None = None
        self._typed: tuple[dict[str, Any], LaunchContext] | None = None  # (the context it was read from, itself)
        self._data: dict[str, Any] | None = None
        self._tokens: tuple[str | None, dict[str, Any]] | None = None  # (the encrypted value, its plaintext)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def iss(self) -> str:
        return self.record.iss

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def context(self) -> dict[str, Any]:
        """Patient, encounter, site and user as read at launch (see fhir/context.py)."""
        if self._context is None:
            self._context = decrypt_json(self.record.context_enc) or {}
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
            self._data = decrypt_json(self.record.data_enc) or {}
        return self._data

    @property
    def tokens(self) -> dict[str, Any]:
        """The token response (a copy). Decrypted once per stored value: the consent page asked three times."""
        if self._tokens is None or self._tokens[0] is not self.record.tokens_enc:
            self._tokens = (self.record.tokens_enc, decrypt_json(self.record.tokens_enc) or {})
        return dict(self._tokens[1])

    def set_tokens(self, tokens: dict[str, Any]) -> None:
        self.record.tokens_enc = encrypt_json(tokens)
        self._tokens = (self.record.tokens_enc, dict(tokens))

    def set_context(self, context: dict[str, Any]) -> None:
        self._context = context
        self.record.context_enc = encrypt_json(context)

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
# Every page's first statement, built once (Session.get assembles its load per call: ~15% of this lookup).
_BY_ID = select(LaunchRecord).where(LaunchRecord.id == bindparam("lid"))


def load_launch(lid: str, *, statuses: tuple[str, ...] = ("active",), refresh: bool = True) -> Launch:
    """The launch ``lid`` if it belongs to this browser and is live; 404 otherwise.

    404, not 403: an id belonging to someone else must look like no id at all. A live launch used here
    starts its idle timeout again (``refresh``).
    """
    if not isinstance(lid, str) or not LAUNCH_ID.match(lid):
        abort(404, description="This session has ended or was opened elsewhere. "
                               "Launch the app again from the patient's chart.")
    db = get_session()
    try:
        record = db.execute(_BY_ID, {"lid": lid}).scalar_one_or_none()
    except DBAPIError as exc:
        # A pooled connection used moments ago is not pinged (smart_app/store/db.py); if the server dropped it since
        # (a restart), this first statement of the request fails on it and SQLAlchemy discards the pool. Nothing
        # was done yet in this request, so read once more on a fresh connection instead of showing an error.
        if not exc.connection_invalidated:
            raise
        db.rollback()
        record = db.execute(_BY_ID, {"lid": lid}).scalar_one_or_none()
    now = datetime.now(UTC)
    if (
        record is None
        or not secrets.compare_digest(record.browser_id.encode(), str(session.get("bid", "")).encode())
        or record.status not in statuses
        or _aware(record.expires_at) < now
    ):
        abort(404, description="This session has ended or was opened elsewhere. "
                               "Launch the app again from the patient's chart.")
    if refresh and record.status == "active":
        touch(record)
    return Launch(record)


def launch_required(view: Callable) -> Callable:
    """Decorator for views under /l/<lid>/: sets ``g.launch``."""

    @wraps(view)
    def wrapper(lid: str, *args: Any, **kwargs: Any):
        g.launch = load_launch(lid)
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


def touch(record: LaunchRecord, *, force: bool = False) -> None:
    """The launch is in use: push its expiry to the idle timeout again."""
    expires = new_expiry(record.created_at)
    if force or expires - _aware(record.expires_at) > TOUCH_EVERY:
        record.expires_at = expires
        get_session().commit()


def _aware(dt: datetime) -> datetime:
    # SQLite returns naive datetimes; they were stored as UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
