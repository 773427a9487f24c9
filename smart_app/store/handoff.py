"""The warm hand-off's stored vocabulary: whether the call to the advocate was offered at the bedside, and how it
ended. The code is kept in plain text on the referral (``ReferralRecord.handoff``) so the queue shows it and the
report counts it without decrypting anything; who was called and when are in the encrypted summary.

Why it matters: screening alone changes little; connecting a high-danger patient by phone with an advocate at the
scene does (Lethality Assessment Program: Messing et al., Soc Serv Rev 2015;89(3):499-530).
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

OFFERED = "offered"  # offered, no outcome recorded (yet)
SPOKE_NOW, LEFT_MESSAGE, DECLINED, NOT_SAFE = "spoke_now", "left_message", "declined", "not_safe"
OUTCOMES = (SPOKE_NOW, LEFT_MESSAGE, DECLINED, NOT_SAFE)
COMPLETED = SPOKE_NOW  # a warm hand-off done: the patient spoke with an advocate during the visit
FINAL = (SPOKE_NOW,)  # once recorded, not changed (and counted once as completed)

# The messages themselves, for pages that translate through the request's catalog (the urgent box's choices).
MESSAGES = {
    OFFERED: "Call to the advocate offered, no outcome recorded",
    SPOKE_NOW: "Spoke with an advocate now",
    LEFT_MESSAGE: "Left a message",
    DECLINED: "Patient declined",
    NOT_SAFE: "Not safe to call now",
}
LABELS = {code: _l(message) for code, message in MESSAGES.items()}
# The queue's one-line rows: the same, in a few words after a telephone sign (the full label is the row's title).
SHORT = {
    OFFERED: _l("☎ offered"),
    SPOKE_NOW: _l("☎ spoke now"),
    LEFT_MESSAGE: _l("☎ message left"),
    DECLINED: _l("☎ declined"),
    NOT_SAFE: _l("☎ not safe"),
}


def label(code: str | None) -> str:
    return str(LABELS.get(code or "", code or ""))


def short_label(code: str | None) -> str:
    return str(SHORT.get(code or "", code or ""))
