"""Kiosk sessions: which tablet answers for which launch, the pairing code, the hand-back PIN, the answers so far.

The tablet's browser holds one random token in its session cookie (``kt``) and nothing else of the visit: the
server finds the launch from the token's keyed hash. Codes and PINs are stored only as keyed hashes. Every
tablet request goes through ``for_tablet``, which locks a session left idle longer than
``tuning.tablet_idle_seconds`` (its answers deleted) whatever the tablet's own timer did.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import session
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from config.current import current_settings
from smart_app.store.crypto import decrypt_json, encrypt_json, keyed_hash
from smart_app.store.db import get_session
from smart_app.store.models import KioskSession

CODE_DIGITS = 8  # typed on the tablet; with the launch rate limit a guess is hopeless within the code's life
PIN_DIGITS = 6
PIN_TRIES = 5  # wrong PINs before the same-device session gives up and the launch ends
TABLET_KEY = "kt"
LIVE = ("waiting", "answering", "finished")


@dataclass
class Progress:
    """What the patient has done so far on the tablet (encrypted in ``progress_enc``)."""

    instrument: str
    language: str
    answers: dict[str, str] = field(default_factory=dict)
    started: bool = False

    @classmethod
    def load(cls, row: KioskSession) -> Progress | None:
        raw = decrypt_json(row.progress_enc) if row.progress_enc else None
        return cls(**raw) if raw else None

    def save(self, row: KioskSession) -> None:
        row.progress_enc = encrypt_json(asdict(self))


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime | None) -> datetime | None:
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=UTC)


def _digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


def _tag(kind: str, value: str) -> str:
    return keyed_hash(f"kiosk-{kind}:{value}")


def normalise_code(typed: str) -> str:
    return "".join(c for c in typed if c.isdigit())


def start(launch_id: str, mode: str, instrument: str, language: str) -> tuple[KioskSession, str]:
    """A new kiosk session for the launch (ending any earlier one): (row, the code or PIN to show the clinician).
    Paired: a single-use code valid ``tuning.tablet_pairing_seconds``. Same device: the hand-back PIN."""
    db = get_session()
    db.execute(delete(KioskSession).where(KioskSession.launch_id == launch_id))
    secret = _digits(CODE_DIGITS if mode == "paired" else PIN_DIGITS)
    row = KioskSession(
        launch_id=launch_id, mode=mode, status="waiting", pin_tries=0, created_at=_now(), last_seen_at=_now()
    )
    if mode == "paired":
        row.code_hash = _tag("code", secret)
        row.code_expires_at = _now() + timedelta(seconds=current_settings().tablet_pairing_seconds)
    else:
        row.pin_hash = _tag("pin", secret)
    Progress(instrument=instrument, language=language).save(row)
    db.add(row)
    db.flush()
    return row, secret


def of_launch(launch_id: str) -> KioskSession | None:
    return get_session().scalars(select(KioskSession).where(KioskSession.launch_id == launch_id)).first()


def bind_tablet(row: KioskSession) -> None:
    """This browser now answers for ``row``: a fresh random token in its session, its keyed hash in the row."""
    token = secrets.token_urlsafe(32)
    session[TABLET_KEY] = token
    row.tablet_hash = _tag("tablet", token)
    row.status = "answering"
    row.last_seen_at = _now()


def redeem(typed_code: str) -> KioskSession | None:
    """The waiting session whose unexpired code this is, now bound to this browser; the code is spent."""
    code = normalise_code(typed_code)
    if len(code) != CODE_DIGITS:
        return None
    row = get_session().scalars(select(KioskSession).where(KioskSession.code_hash == _tag("code", code))).first()
    if row is None or row.status != "waiting" or (_aware(row.code_expires_at) or _now()) < _now():
        return None
    row.code_hash = None  # single use, whoever typed it
    row.code_expires_at = None
    bind_tablet(row)
    return row


def _idle_limit() -> timedelta:
    return timedelta(seconds=current_settings().tablet_idle_seconds)


def idle(row: KioskSession) -> bool:
    return _now() - (_aware(row.last_seen_at) or _now()) > _idle_limit()


def lock(row: KioskSession) -> None:
    """Idle too long: the answers so far go; a same-device session keeps its PIN so the clinician can unlock."""
    row.status = "locked"
    row.progress_enc = None
    if row.mode == "paired":
        row.tablet_hash = None


def for_tablet(*, touch: bool = True) -> KioskSession | None:
    """The kiosk session this browser answers for, or None. Locks it first when it was left idle (server-side
    idle lock); ``touch`` counts this request as the patient's activity."""
    token = session.get(TABLET_KEY)
    if not isinstance(token, str) or not token:
        return None
    row = get_session().scalars(select(KioskSession).where(KioskSession.tablet_hash == _tag("tablet", token))).first()
    if row is None:
        return None
    if row.status in ("answering", "finished") and idle(row):
        lock(row)
        get_session().commit()
    elif touch and row.status == "answering":
        row.last_seen_at = _now()
    return row


def pin_ok(row: KioskSession, typed: str) -> bool:
    """Check a PIN typed to unlock a same-device session, counting wrong tries."""
    good = row.pin_hash is not None and secrets.compare_digest(row.pin_hash, _tag("pin", normalise_code(typed)))
    if not good:
        row.pin_tries += 1
    return good


def forget_tablet() -> None:
    session.pop(TABLET_KEY, None)


def state_for_clinician(row: KioskSession | None) -> dict[str, Any]:
    """What the clinician's page shows: status, and how far the patient is (counts only, never answers)."""
    if row is None:
        return {"status": "none"}
    progress = Progress.load(row)
    return {
        "status": "expired" if code_expired(row) else row.status,
        "mode": row.mode,
        "answered": len(progress.answers) if progress else 0,
    }


def code_expired(row: KioskSession) -> bool:
    return row.status == "waiting" and row.mode == "paired" and (_aware(row.code_expires_at) or _now()) < _now()


def live(row: KioskSession | None) -> bool:
    return row is not None and row.status in LIVE and not code_expired(row)


def purge_idle(db: Session, now: datetime | None = None) -> dict[str, int]:
    """Housekeeping: a tablet that went quiet mid-screen (no request since) still loses its answers after the idle
    limit, and spent or abandoned sessions go once the pairing window is long past."""
    now = now or _now()
    quiet = now - _idle_limit()
    locked = db.execute(
        update(KioskSession)
        .where(KioskSession.status.in_(("answering", "finished")), KioskSession.last_seen_at < quiet)
        .values(status="locked", progress_enc=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    old = now - timedelta(seconds=current_settings().tablet_pairing_seconds) - timedelta(hours=1)
    gone = db.execute(delete(KioskSession).where(KioskSession.last_seen_at < old)).rowcount
    db.commit()
    return {"kiosk_locked": locked, "kiosk_deleted": gone}
