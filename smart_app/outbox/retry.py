"""Retry policy: exponential backoff with jitter, the server's Retry-After, and one final retry.

What is known of a failed write decides what may follow it. Not applied, for certain: nothing was sent (a refused
connection, a failed TLS handshake, the bulkhead full), the EHR itself answered 503 or 429 (it is not taking
writes now), or a 4xx refused it; such a write is simply sent again. Unknown: a timeout after sending, a
connection dropped mid-answer, a 500 (filed, then failed), 502 or 504 (a gateway gave up on an EHR that may have
filed it); such a write is looked for, or created conditionally, before it may go again.

Transient failures (timeouts, 5xx, 429) are transport noise and get the usual bounded backoff. When the EHR
*refuses* a write (a 4xx) or still cannot take it after the last transient try, the row is not dropped: it
stays in the outbox and gets exactly one more try after ``final_retry_delay``. If that try fails too the row
ends ``failed`` (content kept, encrypted) and the clinician's confirmation page and the social-work queue say
plainly that the note is not in the chart.
"""

from __future__ import annotations

import logging
import random

from fhir.client import FhirError, FhirUnavailable
from smart_app.outbox import outcomes
from smart_app.outbox.context import SendContext
from smart_app.outbox.settings import OutboxSettings
from smart_app.store.models import OutboxItem

log = logging.getLogger("ipv.outbox")

# Longest Retry-After honoured: a bogus header must not park a write for days.
RETRY_AFTER_CAP_SECONDS = 3600.0
# Answers the EHR gives itself when it is not taking requests now: it filed nothing (overloaded, throttled).
NOT_TAKEN_STATUS = frozenset({429, 503})


def backoff(settings: OutboxSettings, attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; Retry-After (429/503) wins when it asks for longer."""
    cap = min(settings.max_delay, settings.base_delay * (2 ** max(0, attempt - 1)))
    delay = random.uniform(cap / 2, cap)
    if retry_after is not None:  # the server knows best, within the cap
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_SECONDS))
    return delay


def reason(exc: FhirError) -> str:
    """A PHI-free reason: status and OperationOutcome issue codes (never diagnostics text, which may echo data)."""
    if isinstance(exc, FhirUnavailable):
        if not exc.sent:
            return "the EHR could not be reached; nothing was sent (" + _unreached(exc.message) + ")"
        timed_out = "Timeout" in exc.message or "Deadline" in exc.message
        return "no answer from the EHR (" + ("timeout" if timed_out else "connection failed") + ")"
    codes = sorted({i.get("code") for i in (exc.outcome or {}).get("issue", []) if i.get("code")})
    text = f"HTTP {exc.status}"
    return f"{text}: {', '.join(codes)}" if codes else text


def _unreached(kind: str) -> str:
    if kind == "SSLError":
        return "TLS failed"
    if kind == "EhrBusy":
        return "too many calls to it in flight"
    return "timeout" if "Timeout" in kind or "Deadline" in kind else "connection refused"


def maybe_applied(exc: FhirError) -> bool:
    """Could the EHR have filed the create although we got an error? Yes after a timeout or a connection dropped
    once the request was sent, and after a 500 (fail-after-commit) or a gateway's 502/504. No when nothing was
    sent, when the EHR answered 503 or 429 itself, or refused it with another 4xx."""
    if isinstance(exc, FhirUnavailable):
        return exc.sent
    if exc.status in NOT_TAKEN_STATUS:
        return False
    return exc.status >= 500 or exc.status == 0


def transient(exc: FhirError) -> bool:
    """Worth the usual backoff: timeouts, 5xx and 429 (the error says so), and 401 (the token was refused; the
    next try renews it, or fails plainly without a refresh token)."""
    return exc.retryable or isinstance(exc, FhirUnavailable) or exc.status == 401


def on_error(ctx: SendContext, row: OutboxItem, exc: FhirError) -> None:
    """A send failed: back off and try again, or schedule the one final retry, or (that was it) fail."""
    why = reason(exc)
    row.last_status = exc.status or None
    is_transient = transient(exc)
    if row.final_retry:
        outcomes.fail(ctx, row, why, exc.status)
    elif is_transient and row.attempts < row.max_attempts:
        outcomes.retry_later(ctx, row, why, backoff(ctx.settings, row.attempts, exc.retry_after))
    else:
        # Refused, or tries used up: keep it and try exactly once more.
        row.final_retry = True
        what = "the EHR refused it" if not is_transient else "the EHR could not take it"
        outcomes.retry_later(ctx, row, f"{what} ({why}); one more try is scheduled", ctx.settings.final_retry_delay)
        log.warning("outbox %s: %s %s (%s); final retry scheduled", row.id, row.kind,
                    "refused" if not is_transient else "not taken", why)
