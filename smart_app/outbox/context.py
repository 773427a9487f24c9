"""What every sender and outcome of one claimed batch shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from config.ehr_profile import EhrProfile
from smart_app.outbox.claim import send_lease_seconds
from smart_app.outbox.clients import ClientFor
from smart_app.outbox.settings import OutboxSettings
from smart_app.outbox.state import RunStats

# (the row's profile, its FHIR client, a resource type) -> may a send rely on If-None-Exist?
HonoursConditionalCreate = Callable[[EhrProfile, Any, str], bool]


@dataclass
class SendContext:
    app: Flask
    db: Session
    settings: OutboxSettings
    stats: RunStats
    client_for: ClientFor
    profile: Callable[[str], EhrProfile]  # a row's stored profile name -> the profile with the site's settings
    honours_conditional_create: HonoursConditionalCreate
    lease_seconds: float  # the lease renewed before each send (claim.send_lease_seconds)

    def lease_for(self, client: Any) -> float:
        """The lease renewed before a send through ``client``: long enough for that client's own timeout too
        (a client made with a longer timeout than the worker's must not let its row be reclaimed mid-send)."""
        return max(self.lease_seconds, send_lease_seconds(self.settings, float(getattr(client, "timeout", 0) or 0)))
