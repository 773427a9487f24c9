"""The urgent box: how high the danger is, and who to call now, in order, for this visit at this hour.

Its heading says what the answers mean, read from the danger check's Questionnaire file: "High danger (DA-5 ≥ 3)"
at or above the file's cut-off, or when an item flagged always-high was answered yes (strangulation, as the LAP 2.0
revision of the Lethality Screen counts it); "Danger sign reported" for a danger answer below the cut-off; the
clinician may judge a visit urgent whatever the answers.

Who to call, in order:
1. The site's advocacy program on the number that answers now: its main line in hours, its advocate-on-call
   pager after hours, at weekends and on holidays (the referral ranking's "Call now", so both pages agree).
   At high danger or by the clinician's judgement this is the warm hand-off: call with the patient, now.
2. The hospital's own security step, when the deployment sets one (``urgent_security_step``).
3. A prompt to assess strangulation injury when strangulation was reported (Messing 2017: "a protocol for
   immediate referral and examination for further injury from a strangulation").
4. The 24/7 hotlines.
911 is patient-facing advice ("if you are in immediate danger, call 911"), said to the patient in their language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, g

from config.current import current_settings
from fhir.questionnaires import Instrument
from referrals.model import text_in
from smart_app.ops.i18n import gettext as _
from smart_app.ranking.memo import clock, default_programs, ranked
from smart_app.screening.summary import item_name
from smart_app.store import handoff as handoff_codes


@dataclass(frozen=True)
class DangerLevel:
    """How urgent the visit is, from the launch's answers (scored by their files) and the clinician's judgement."""

    sign: bool = False  # a danger answer (escalation, weapon, strangulation, fear for life)
    by_score: bool = False  # the danger check at or above its file's cut-off
    always_high: tuple[str, ...] = ()  # items answered yes that are high danger alone (strangulation)
    clinician: bool = False  # the clinician judged it urgent
    check: Instrument | None = None  # the danger check that was asked, if any

    @property
    def high(self) -> bool:
        return self.by_score or bool(self.always_high)

    @property
    def offer_call(self) -> bool:
        """Call the advocate now, with the patient: at high danger or when the clinician judges it urgent."""
        return self.high or self.clinician

    @property
    def shown(self) -> bool:
        return self.sign or self.offer_call

    def heading(self, lang: str) -> str:
        if self.by_score and self.check is not None:
            return _("High danger (%(tool)s %(cutoff)s)", tool=self.check.short_name, cutoff=self.check.rule.cutoff)
        if self.always_high:
            return _("High danger (%(items)s reported)",
                     items=", ".join(item_name(self.check, i, lang) for i in self.always_high))
        if self.clinician:
            return _("Urgent: your judgement")
        return _("Danger sign reported")


def danger_level(data: dict[str, Any]) -> DangerLevel:
    """The launch's danger level from its working state (``data``: screening, danger check, hand-off)."""
    screening = data.get("screening") or {}
    check = data.get("danger_check") or {}
    instruments: dict[str, Instrument] = current_app.extensions["screening"]["instruments"]
    inst = instruments.get(check.get("instrument") or "")
    answers = check.get("answers") or {}
    return DangerLevel(sign=bool(screening.get("danger")),
                       by_score=inst is not None and check.get("interpretation") == "positive",
                       always_high=inst.always_high_items(answers) if inst else (),
                       clinician=bool((data.get("handoff") or {}).get("clinician_urgent")), check=inst)


@dataclass(frozen=True)
class Call:
    """One number to call from the urgent box (directory facts only, no PHI)."""

    id: str
    name: str
    dial: str  # as shown: "1-617-732-5520 ext. 31808"
    tel: str | None  # as dialled: "tel:+16177325520,31808"
    state: str  # open | after_hours | always
    closure: str | None = None  # why the program is closed all day (a holiday)


@dataclass(frozen=True)
class UrgentBox:
    level: DangerLevel
    heading: str
    programs: list[Call]
    hotlines: list[Call]
    placed: bool
    security: str
    lang: str  # the patient's language (what is said to the patient)
    outcome: str | None = None  # how the warm hand-off's call ended, once recorded

    @property
    def advocate(self) -> Call | None:
        """Who to call with the patient: the site's program on the number that answers now, else a 24/7 line."""
        if not self.level.offer_call:
            return None
        return (self.programs or self.hotlines or [None])[0]

    @property
    def outcome_label(self) -> str:
        return _outcome_text(self.outcome)

    @property
    def outcome_final(self) -> bool:
        return self.outcome in handoff_codes.FINAL

    @property
    def outcome_choices(self) -> list[tuple[str, str]]:
        return [(code, _outcome_text(code)) for code in handoff_codes.OUTCOMES]


def _outcome_text(code: str | None) -> str:
    """``handoff_codes.label`` through the request's catalog (a lazy label looks the catalog up on each use)."""
    message = handoff_codes.MESSAGES.get(code or "")
    return _(message) if message else code or ""


def urgent_box(launch: Any, lang: str) -> UrgentBox | None:
    """What the urgent box shows for this launch now, or None when nothing calls for it."""
    level = danger_level(launch.data)
    if not level.shown:
        return None
    settings = current_settings()
    site_map = settings.site_map or None
    ranking = ranked(launch.id, launch.context, language=lang, now=clock(), site_map=site_map,
                     default_programs=default_programs(), limit=20)
    page_lang = g.get("locale") or "en"
    programs = [_call(c.service, c.phone, c.state, c.closure, page_lang) for c in ranking.call_now
                if c.state != "always"]
    hotlines = [_call(r.service, r.call, "always", None, page_lang) for r in ranking.results
                if r.service.kind == "hotline" and r.service.hours.always and r.service.scope != "local"
                and r.call is not None]
    security = settings.urgent_security_step
    return UrgentBox(level, level.heading(page_lang), programs, hotlines, ranking.placed,
                     security.get(page_lang) or security.get("en") or "", lang,
                     (launch.data.get("handoff") or {}).get("outcome"))


def _call(service: Any, phone: Any, state: str, closure: str | None, lang: str) -> Call:
    return Call(service.id, text_in(service.name, lang), phone.dial(), phone.tel(), state, closure)
