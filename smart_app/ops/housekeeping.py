"""Periodic clean-up (retention purges, routing referrals an older release wrote) that features register and the
outbox worker runs on its rounds.

The worker is the one background process every deployment runs; each feature keeps its own retention rules and
hands them here, so the worker needs to know none of them."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from sqlalchemy.orm import Session

Job = Callable[[Session], dict[str, int]]
_KEY = "ipv_housekeeping"


def init_app(app: Flask, *jobs: Job) -> None:
    app.extensions[_KEY] = tuple(jobs)


def run(app: Flask, db: Session) -> dict[str, int]:
    """Every registered job, in order; the counts of what each removed, by name."""
    counts: dict[str, int] = {}
    for job in app.extensions.get(_KEY, ()):
        counts.update(job(db))
    return counts
