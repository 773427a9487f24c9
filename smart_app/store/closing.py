"""How social work closed a referral: one code from a short list, stored in plain text on the referral
(``ReferralRecord.closing_outcome``, not PHI on its own, like ``urgent``) so the queue shows it and the report can
count it without decrypting anything. "Unable to reach safely" keeps how many contact attempts were made
(``closing_attempts``), counted from the contact log when the referral is closed.

Closing (any closed Task status, smart_app/store/task_status.py) requires one. Where the EHR profile lets this app
update the Task, the outcome travels with the status as ``Task.statusReason`` (smart_app/outbox/closed_loop.py).
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

REACHED_SUPPORTED, REACHED_DECLINED = "reached_supported", "reached_declined"
UNREACHABLE, REFERRED_ELSEWHERE, DUPLICATE = "unreachable", "referred_elsewhere", "duplicate"
OUTCOMES = (REACHED_SUPPORTED, REACHED_DECLINED, UNREACHABLE, REFERRED_ELSEWHERE, DUPLICATE)
# The code system of Task.statusReason when the outcome goes to the chart (this app's own codes).
SYSTEM = "urn:ipv-screen:closing-outcome"

LABELS = {
    REACHED_SUPPORTED: _l("Reached and supported"),
    REACHED_DECLINED: _l("Reached, declined support"),
    UNREACHABLE: _l("Unable to reach safely"),
    REFERRED_ELSEWHERE: _l("Referred elsewhere"),
    DUPLICATE: _l("Duplicate referral"),
}


def label(code: str | None, attempts: int | None = None) -> str:
    """The outcome in plain words; "unable to reach safely" says after how many attempts."""
    if code == UNREACHABLE and attempts is not None:
        return ngettext("Unable to reach safely after %(num)d attempt", "Unable to reach safely after %(num)d attempts",
                        attempts)
    return str(LABELS.get(code or "", code or ""))


def english(code: str | None, attempts: int | None = None) -> str:
    """The outcome as the chart's Task.statusReason text gets it: English, whatever the reader's language."""
    if code == UNREACHABLE and attempts is not None:
        return f"Unable to reach safely after {attempts} attempt{'' if attempts == 1 else 's'}"
    return {REACHED_SUPPORTED: "Reached and supported", REACHED_DECLINED: "Reached, declined support",
            UNREACHABLE: "Unable to reach safely", REFERRED_ELSEWHERE: "Referred elsewhere",
            DUPLICATE: "Duplicate referral"}.get(code or "", code or "")
