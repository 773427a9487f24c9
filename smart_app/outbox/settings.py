"""The outbox's tuning: how often and how long a write is tried, how long a claim holds, how big a batch is."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from config.ehr_profile import EhrProfile


@dataclass
class OutboxSettings:
    max_attempts: int = 10
    base_delay: float = 2.0
    max_delay: float = 300.0
    lease_seconds: float = 120.0
    final_retry_delay: float = 60.0
    batch_size: int = 25
    # How long an optional link (note -> referral -> score) may hold a write back while its
    # target is still being retried; after that the write goes without the link.
    link_wait_seconds: float = 60.0

    @classmethod
    def for_app(cls, app: Flask, profile: EhrProfile | None = None) -> OutboxSettings:
        """Profile retry settings, overridden by OUTBOX_* app config (tests and ops)."""
        c = app.config
        base = cls()
        if profile is not None:
            base = cls(max_attempts=profile.retry.max_attempts, base_delay=profile.retry.base_delay,
                       max_delay=profile.retry.max_delay)
        return cls(
            max_attempts=int(c.get("OUTBOX_MAX_ATTEMPTS", base.max_attempts)),
            base_delay=float(c.get("OUTBOX_BASE_DELAY", base.base_delay)),
            max_delay=float(c.get("OUTBOX_MAX_DELAY", base.max_delay)),
            lease_seconds=float(c.get("OUTBOX_LEASE_SECONDS", base.lease_seconds)),
            final_retry_delay=float(c.get("OUTBOX_FINAL_RETRY_DELAY", base.final_retry_delay)),
            batch_size=int(c.get("OUTBOX_BATCH_SIZE", base.batch_size)),
            link_wait_seconds=float(c.get("OUTBOX_LINK_WAIT_SECONDS", base.link_wait_seconds)),
        )
