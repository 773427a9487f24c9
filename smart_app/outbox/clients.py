"""The FHIR client a row is sent with: its launch's tokens (refreshed when expired), else a system token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fhir.client import FhirClient
from fhir.smart.oauth import token_expired
from smart_app.launch.ehr import fhir_client_for, system_client
from smart_app.launch.state import Launch
from smart_app.store.db import get_session
from smart_app.store.models import LaunchRecord

log = logging.getLogger("ipv.outbox")


class AuthGone(Exception):
    """The launch's EHR authorization is gone (no token, expired without refresh, refresh refused)."""


ClientFor = Callable[[Any], FhirClient]


def launch_client_provider(timeout: float | None = None) -> ClientFor:
    """FHIR client per row from its launch's tokens (refreshed through smart_app.launch.ehr when expired).
    Raises AuthGone when the launch or its authorization is gone. Runs inside an app context."""

    cache: dict[str, FhirClient | AuthGone | None] = {}

    def client_for(row: Any) -> FhirClient:
        key = row.launch_id or ""
        if key not in cache:
            cache[key] = _make(row)
        found = cache[key]
        if isinstance(found, AuthGone):
            # The visit's token is gone: a SMART Backend Services (system) token, where the deployment has one.
            system = _system(row)
            if system is not None:
                return system
            raise found
        return found

    def _system(row: Any) -> FhirClient | None:
        key = "system:" + row.iss
        if key not in cache:
            try:
                cache[key] = system_client(row.iss)
            except Exception as exc:  # not configured, or the EHR refused: the launch's error stands
                log.info("outbox: no system token (%s)", type(exc).__name__)
                cache[key] = None
        client = cache[key]
        if client is not None and timeout is not None:
            client.timeout = timeout
        return client

    def _make(row: Any) -> FhirClient | AuthGone:
        record = get_session().get(LaunchRecord, row.launch_id) if row.launch_id else None
        if record is None:
            return AuthGone("the visit's EHR sign-in is gone")
        launch = Launch(record)
        tokens = launch.tokens
        if not tokens.get("access_token"):
            return AuthGone("the visit's EHR sign-in is gone")
        if token_expired(tokens) and not tokens.get("refresh_token"):
            return AuthGone("the visit's EHR sign-in has expired")
        rejected = None
        if row.last_status == 401:
            # The EHR rejected the token last time (revoked, or expired without a known expiry): renewed under the
            # launch's lock, unless another process renewed it meanwhile (never a second refresh of one token).
            if not tokens.get("refresh_token"):
                return AuthGone("the EHR no longer accepts the visit's sign-in")
            rejected = tokens.get("access_token")
        try:
            client = fhir_client_for(launch, rejected=rejected)
        except Exception as exc:  # refresh refused or EHR unreachable: the token cannot be renewed now
            log.warning("outbox: token refresh failed for a launch (%s)", type(exc).__name__)
            return AuthGone("the EHR did not renew the visit's sign-in")
        if timeout is not None:
            client.timeout = timeout
        return client

    return client_for
