"""Referral statuses: FHIR Task.status as the SDOH Clinical Care IG uses it for referral tasks.

Source: SDOHCC TaskForReferralManagement, "Checking Task Status" and its state table
(https://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition-SDOHCC-TaskForReferralManagement.html)
and the SDOHCC ValueSet Referral Task Status (TaskStatus without ``ready`` and ``received``). Social work
plays the performer: it accepts or rejects a request, works it (in-progress, on-hold) and completes it;
cancelled is the requester's withdrawal, kept here for a referral made in error. ``draft``, ``failed``
and ``entered-in-error`` are not offered: the app never drafts a referral and never runs one by machine.

Plain labels (what a social worker reads) live beside the codes; the codes are what goes to the chart.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

REQUESTED, ACCEPTED, IN_PROGRESS, ON_HOLD = "requested", "accepted", "in-progress", "on-hold"
COMPLETED, CANCELLED, REJECTED = "completed", "cancelled", "rejected"

STATUSES = (REQUESTED, ACCEPTED, IN_PROGRESS, ON_HOLD, COMPLETED, CANCELLED, REJECTED)
CLOSED = (COMPLETED, CANCELLED, REJECTED)
OPEN = (REQUESTED, ACCEPTED, IN_PROGRESS, ON_HOLD)

# Valid moves only (SDOHCC state table); a closed referral stays closed (a new need = a new referral).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    REQUESTED: (ACCEPTED, REJECTED, CANCELLED),
    ACCEPTED: (IN_PROGRESS, ON_HOLD, COMPLETED, CANCELLED),
    IN_PROGRESS: (COMPLETED, ON_HOLD, CANCELLED),
    ON_HOLD: (IN_PROGRESS, CANCELLED),
    COMPLETED: (), CANCELLED: (), REJECTED: (),
}

LABELS = {
    REQUESTED: _l("New — not yet accepted"),
    ACCEPTED: _l("Accepted"),
    IN_PROGRESS: _l("In progress"),
    ON_HOLD: _l("On hold"),
    COMPLETED: _l("Completed"),
    CANCELLED: _l("Cancelled"),
    REJECTED: _l("Declined by social work"),
}
ACTIONS = {
    ACCEPTED: _l("Accept"), IN_PROGRESS: _l("Start work"), ON_HOLD: _l("Put on hold"),
    COMPLETED: _l("Complete"), CANCELLED: _l("Cancel referral"), REJECTED: _l("Decline"),
}

# Statuses written before this module (new -> contacted -> closed) read as their Task equivalents.
LEGACY = {"new": REQUESTED, "contacted": IN_PROGRESS, "closed": COMPLETED}

# ServiceRequest.status (request-status) for a referral whose Task is in each state: the order stays
# active while work goes on, and ends completed, or revoked when withdrawn or declined (SDOHCC: the
# ServiceRequest is "completed" once the Task is; FHIR R4 request-status for the rest).
SERVICE_REQUEST_STATUS = {
    REQUESTED: "active", ACCEPTED: "active", IN_PROGRESS: "active", ON_HOLD: "on-hold",
    COMPLETED: "completed", CANCELLED: "revoked", REJECTED: "revoked",
}


def normalise(status: str | None) -> str:
    status = status or REQUESTED
    return LEGACY.get(status, status)


def label(status: str | None) -> str:
    return str(LABELS.get(normalise(status), status or ""))


def action_label(status: str) -> str:
    return str(ACTIONS.get(status, status))


def allowed(current: str | None, target: str | None) -> bool:
    return bool(target) and target in TRANSITIONS.get(normalise(current), ())
