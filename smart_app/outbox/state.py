"""The states of an outbox row and the counts of one worker run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

PENDING, SENDING, WRITTEN, FAILED, CHECK = "pending", "sending", "written", "failed", "check"
CHECK_TEXT = "the EHR may or may not have saved it and the app could not find out: check the chart"


@dataclass
class RunStats:
    claimed: int = 0
    written: int = 0
    retrying: int = 0
    failed: int = 0
    deferred: int = 0
    label_flags: int = 0
    sends: int = 0
    ids: list[int] = field(default_factory=list)

    def add(self, other: RunStats) -> None:
        for name in ("claimed", "written", "retrying", "failed", "deferred", "label_flags", "sends"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.ids.extend(other.ids)


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    """A stored time as UTC-aware (SQLite hands back naive datetimes)."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
