"""Server-side state. Everything that could identify a patient is encrypted at rest."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import DateTime, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from smart_app.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


class LaunchRecord(Base):
    """One SMART launch: pending (authorize sent) -> active (token held) -> ended.

    ``id`` is the opaque handle in the app's URLs (/l/<id>/...); ``state`` is what
    went to the EHR. ``browser_id`` binds the record to the browser session that
    started it, so another browser (or a guessed id) never sees it.
    """

    __tablename__ = "launch"
    __table_args__ = (Index("ix_launch_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    state: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    browser_id: Mapped[str] = mapped_column(String(64), index=True)
    iss: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16), default="ehr")  # ehr | standalone
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Pending stage: PKCE verifier + nonce + launch param, encrypted.
    pending_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Active stage: token response (access/refresh/id_token), encrypted.
    tokens_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Context read from the EHR (patient, encounter, site, user), encrypted.
    context_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Working state of the visit (screening result, referral choices), encrypted.
    data_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Non-PHI: why a launch failed, shown to the user.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class UsedCode(Base):
    """Authorization codes already exchanged: a replayed callback is refused."""

    __tablename__ = "used_code"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsedJti(Base):
    """jti values of our own client assertions (never reuse one)."""

    __tablename__ = "used_jti"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
