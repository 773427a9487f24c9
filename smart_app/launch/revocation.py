"""Revoke a launch's tokens at the EHR when the launch ends (quick exit) or is deleted (retention purge):
a token left valid outlives the launch that was ended. Only where discovery advertises a
``revocation_endpoint`` (RFC 7009), and never while a chart
write the patient agreed to still needs the launch's token (the purge revokes it once the write is done).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import Flask, Response, current_app
from sqlalchemy import exists, or_, select

from config.current import current_settings
from fhir.smart.client_auth import ClientAuthError
from fhir.smart.discovery import DiscoveryError
from fhir.smart.revoke import revoke_tokens
from smart_app.launch.ehr import client_auth, discovery, http_session
from smart_app.store.crypto import decrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord, OutboxItem

log = logging.getLogger(__name__)


def unfinished_write():
    """SQL condition: a chart write of this launch still needs its token (as in retention.purge)."""
    return exists().where(OutboxItem.launch_id == LaunchRecord.id, or_(
        OutboxItem.status.in_(("pending", "sending")),
        (OutboxItem.status == "written") & (OutboxItem.label_status == "unverified")))


def revoke_records(records: Iterable[LaunchRecord]) -> int:
    """Revoke each record's tokens (best effort) and forget them; needs an app context. Returns how many
    tokens the EHR accepted."""
    total = 0
    timeout = min(current_settings().http_timeout_seconds, 5.0)
    for record in records:
        tokens = decrypt_json(record.tokens_enc) or {}
        if not tokens:
            continue
        try:
            config = discovery(record.iss)
            total += revoke_tokens(config, tokens, auth=client_auth(), http=http_session(), timeout=timeout)
        except (DiscoveryError, ClientAuthError) as exc:
            log.warning("token revocation skipped: %s", type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - revocation is best effort; it must never fail an exit or purge
            log.warning("token revocation failed: %s", type(exc).__name__)
        record.tokens_enc = None
    return total


def revoke_launches(app: Flask, launch_ids: list[str]) -> int:
    """Revoke the tokens of these (ended) launches unless a chart write still needs them."""
    with app.app_context(), session_scope(app) as db:
        records = db.scalars(select(LaunchRecord).where(
            LaunchRecord.id.in_(launch_ids), LaunchRecord.tokens_enc.is_not(None), ~unfinished_write())).all()
        return revoke_records(records)


def revoke_later(response: Response, launch_ids: list[str]) -> None:
    """Revoke after the response has been sent: quick exit must not wait on the EHR."""
    app = current_app._get_current_object()

    def _run() -> None:
        try:
            revoke_launches(app, launch_ids)
        except Exception as exc:  # noqa: BLE001 - after the response: log, never raise
            log.warning("token revocation after quick exit failed: %s", type(exc).__name__)

    response.call_on_close(_run)
