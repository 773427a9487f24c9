"""The warm hand-off at the bedside: at high danger (the danger check's cut-off, or an always-high item such as
strangulation) or when the clinician judges it urgent, the urgent box offers the call to the site's advocacy program
with the patient, on the number that answers now, and then records how it ended.

Screening alone changes little; a warm hand-off does: in the Lethality Assessment Program, high-danger victims were
put on the phone with an advocate at the scene, and those who took part used more protective strategies and
reported less violence later (Messing et al., Soc Serv Rev 2015;89(3):499-530).

Where it is kept: the launch's encrypted working state (``data["handoff"]``), and the launch's referral — a plain
code on ``ReferralRecord.handoff`` (smart_app/store/handoff.py) for the queue and the report, who was called and when
in its encrypted summary — once consent writes one, or at once when the referral already exists. Never in the chart
note (the patient has not agreed to that). Counted in the report as offered and completed (spoke with an advocate
now), once per launch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from smart_app.report import events
from smart_app.screening.urgent import Call, danger_level
from smart_app.store import handoff as codes
from smart_app.store.crypto import Undecryptable, decrypt_json, encrypt_json
from smart_app.store.db import get_session
from smart_app.store.models import ReferralRecord


def state(data: dict[str, Any]) -> dict[str, Any]:
    return dict(data.get("handoff") or {})


def referral_code(data: dict[str, Any]) -> str | None:
    """What the referral records of the hand-off: how the call ended, "offered", or None (not offered)."""
    outcome = state(data).get("outcome")
    if outcome in codes.OUTCOMES:
        return outcome
    return codes.OFFERED if danger_level(data).offer_call else None


def summary_part(data: dict[str, Any]) -> dict[str, Any] | None:
    """The hand-off as the referral's encrypted summary keeps it: outcome, when, and who was called on which
    number (directory facts); None when no call was offered."""
    code = referral_code(data)
    if code is None:
        return None
    s = state(data)
    return {"outcome": code, "at": s.get("outcome_at"), "program": s.get("program"), "number": s.get("number")}


def urgent_now(data: dict[str, Any]) -> bool:
    """The referral is urgent: a danger answer, high danger, or the clinician's judgement."""
    return danger_level(data).shown


def judge_urgent(launch: Any) -> None:
    """The clinician judges this visit urgent: the call to the advocate is offered from now on."""
    launch.update_data(handoff={**state(launch.data), "clinician_urgent": True, "judged_at": _now()})
    offered(launch)


def offered(launch: Any) -> None:
    """Count the offer (once per launch) and mark the launch's referral, when the danger level calls for it."""
    if not danger_level(launch.data).offer_call:
        return
    _update_referral(launch)
    events.handoff(launch, completed=False)


def record_outcome(launch: Any, outcome: str, call: Call | None) -> bool:
    """How the call ended; False when it cannot be recorded (no offer, an unknown outcome). "Spoke with an
    advocate now" is final: recorded once, counted once as completed."""
    current = state(launch.data)
    if outcome not in codes.OUTCOMES or not danger_level(launch.data).offer_call:
        return False
    if current.get("outcome") in codes.FINAL:
        return True  # already done: a second press changes nothing
    launch.update_data(handoff={**current, "outcome": outcome, "outcome_at": _now(),
                                "program": call.name if call else None, "number": call.dial if call else None})
    _update_referral(launch)
    events.handoff(launch, completed=outcome == codes.COMPLETED)
    return True


def _update_referral(launch: Any) -> None:
    """Carry the hand-off onto this launch's referral when it already exists (no commit: the caller's)."""
    rid = (launch.data.get("writeback") or {}).get("referral_id")
    if not rid:
        return
    record = get_session().get(ReferralRecord, rid)
    if record is None or record.launch_id != launch.id:
        return
    record.handoff = referral_code(launch.data)
    was_urgent = bool(record.urgent)
    record.urgent = was_urgent or urgent_now(launch.data)
    if record.urgent and not was_urgent:
        # Routine when it was made, urgent now: the routine due time no longer holds. Without one the queue gives it
        # the urgent due time from when it was made, counted around the clock (smart_app/worklist/due.py), never
        # later than the program's hours would.
        record.due_at = None
    try:
        summary = decrypt_json(record.summary_enc, where="referral summary") or {}
    except Undecryptable:
        return  # the code column is updated; an unreadable summary is left as it is
    summary["handoff"] = summary_part(launch.data)
    record.summary_enc = encrypt_json(summary)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
