"""The one-line summaries of a result: the screen, the danger check (every "yes" named), and what comes next.

Cut-offs and instrument names come from the Questionnaire files (``fhir/questionnaires``), never from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app

from fhir.questionnaires import IncompleteAnswers, Instrument
from smart_app.ops.i18n import gettext as _
from smart_app.ops.i18n import label_for

# The danger check's items in a few words, for the "Yes to:" line and the urgent box's heading; an item a site's
# own file adds is named by its question instead.
_ITEM_NAMES: dict[str, Callable[[], str]] = {
    "escalation": lambda: _("violence getting worse"), "weapon": lambda: _("weapon"),
    "strangulation": lambda: _("strangulation"), "fear-for-life": lambda: _("fear for life"),
    "jealousy": lambda: _("violent jealousy"),
}


def item_name(inst: Instrument | None, link_id: str, lang: str) -> str:
    """An item in a few words ('weapon'), else its question in the page's language, else its linkId."""
    if link_id in _ITEM_NAMES:
        return label_for(_ITEM_NAMES, link_id)
    item = next((q for q in inst.questions if q.link_id == link_id), None) if inst else None
    return item.label(lang) if item else link_id


def short_name(inst: Instrument | None, fallback: str = "") -> str:
    return inst.short_name if inst else fallback


def instrument_of(key: str | None) -> Instrument | None:
    """The loaded instrument ``key`` (the deployment's cut-offs applied), None when this app has none by that name."""
    return ((current_app.extensions.get("screening") or {}).get("instruments") or {}).get(key or "")


def positive(inst: Instrument | None, s: dict[str, Any]) -> bool:
    """Whether a stored screen is positive by its instrument's cut-off (the published one, or the deployment's
    ``cutoffs``): scored again from its answers, so a screen another page stored (the clinic tablet) is judged by
    the same rule as this one's; without the instrument or complete answers, what the screen stored."""
    answers = s.get("answers") or {}
    if inst is not None and answers and s.get("interpretation") != "declined":
        try:
            return inst.score(answers).interpretation == "positive"
        except IncompleteAnswers:
            pass
    return s.get("interpretation") == "positive"


def screen_summary(inst: Instrument | None, s: dict[str, Any]) -> str:
    """One line after a screen: 'Positive — HITS 15, cut-off > 10.'"""
    tool = short_name(inst, s.get("instrument", ""))
    if s.get("interpretation") == "declined":
        return _("Declined — the patient did not answer the %(tool)s questions.", tool=tool)
    result = _("Positive") if positive(inst, s) else _("Negative")
    if inst is None:
        return _("%(result)s — %(tool)s %(score)s.", result=result, tool=tool, score=s.get("score"))
    return _("%(result)s — %(tool)s %(score)s, cut-off %(cutoff)s.", result=result, tool=tool, score=s.get("score"),
             cutoff=inst.rule.cutoff)


def yes_items(inst: Instrument | None, check: dict[str, Any], danger_items: list[str]) -> list[str]:
    """Every "yes" of the danger check in the file's order (danger items or not), then any danger item of the
    screen itself that the check did not ask."""
    counted = list(inst.counted_items(check.get("answers") or {})) if inst else []
    return counted + [i for i in danger_items if i not in counted]


def check_summary(inst: Instrument | None, check: dict[str, Any], danger_items: list[str], lang: str) -> str:
    """One line after the danger check: what the count means, and every item answered yes."""
    tool = short_name(inst, check.get("instrument", ""))
    if check.get("interpretation") == "declined":
        return _("%(tool)s: declined.", tool=tool)
    total = len(inst.questions) if inst else "?"
    cutoff = inst.rule.cutoff if inst else ""
    if check.get("interpretation") == "positive":
        line = _("%(tool)s: %(n)s of %(total)s yes — high risk of severe assault (cut-off %(cutoff)s).", tool=tool,
                 n=check.get("score"), total=total, cutoff=cutoff)
    else:
        line = _("%(tool)s: %(n)s of %(total)s yes — below the high-risk cut-off (%(cutoff)s).", tool=tool,
                 n=check.get("score"), total=total, cutoff=cutoff)
    named = yes_items(inst, check, danger_items)
    if named:
        line += " " + _("Yes to: %(items)s.", items=", ".join(item_name(inst, i, lang) for i in named))
    return line


def next_step(s: dict[str, Any], check: dict[str, Any] | None) -> str:
    if s.get("physical_violence") and not check:
        return _("Physical violence reported. Next: five safety questions (DA-5).")
    if s.get("interpretation") == "positive" or s.get("danger"):
        return _("Next: offer a referral and the handout.")
    return _("Next: give the handout — resources are for everyone.")
