"""The outbox's tuning: how often and how long a write is tried, how long a claim holds, how big a batch is."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from config.current import settings_of
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
        """The app's ``tuning.outbox_*`` settings, as they resolve with ``profile`` (its retry policy where the
        deployment sets none; default: the deployment's profile)."""
        s = settings_of(app)
        s = s.for_profile(profile) if profile is not None else s
        return cls(max_attempts=s.outbox_max_attempts, base_delay=s.outbox_base_delay, max_delay=s.outbox_max_delay,
                   lease_seconds=s.outbox_lease_seconds, final_retry_delay=s.outbox_final_retry_delay,
                   batch_size=s.outbox_batch_size, link_wait_seconds=s.outbox_link_wait_seconds)
