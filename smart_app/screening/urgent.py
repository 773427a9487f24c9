"""The urgent box (high danger): who to call now, in order, for this visit at this hour.

1. The site's advocacy program on the number that answers now: its main line in hours, its advocate-on-call
   pager after hours, at weekends and on holidays (the referral ranking's "Call now", so both pages agree).
2. The hospital's own security step, when the deployment sets one (``urgent_security_step``).
3. A prompt to assess strangulation injury when strangulation was reported (Messing 2017: "a protocol for
   immediate referral and examination for further injury from a strangulation").
4. The 24/7 hotlines.
911 is patient-facing advice ("if you are in immediate danger, call 911"), said to the patient in their language.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g

from referrals.model import text_in
from smart_app.ranking.memo import clock, default_programs, deployment_extra, ranked


def urgent_info(context: dict[str, Any], lang: str) -> dict[str, Any]:
    """What the urgent box shows for this launch now (directory facts only, no PHI)."""
    site_map = getattr(current_app.config.get("DEPLOYMENT"), "site_map", None) or None
    ranking = ranked(g.launch.id, context, language=lang, now=clock(), site_map=site_map,
                     default_programs=default_programs(), limit=20)
    page_lang = g.get("locale") or "en"
    programs = [_call(c.service, c.phone, c.state, c.closure, page_lang) for c in ranking.call_now
                if c.state != "always"]
    hotlines = [_call(r.service, r.call, "always", None, page_lang) for r in ranking.results
                if r.service.kind == "hotline" and r.service.hours.always and r.service.scope != "local"
                and r.call is not None]
    security = deployment_extra().get("urgent_security_step") or {}
    if isinstance(security, str):
        security = {"en": security}
    return {"programs": programs, "hotlines": hotlines, "placed": ranking.placed,
            "security": security.get(page_lang) or security.get("en") or "", "lang": lang}


def _call(service: Any, phone: Any, state: str, closure: str | None, lang: str) -> dict[str, Any]:
    return {"id": service.id, "name": text_in(service.name, lang), "number": phone.number, "dial": phone.dial(),
            "tel": phone.tel(), "state": state, "closure": closure}
