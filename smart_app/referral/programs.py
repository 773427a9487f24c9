"""Which programs a referral goes to: the visit's ranking and the default choice.

A referral always names a program. Until the clinician has chosen, the choice is the visit's own program (or, when
the launch does not say where the visit is, the deployment's default programs): the one the handout already falls
back to, without the 24/7 line (a hotline takes calls, not referrals). The consent page takes the same default when
it is reached before the programs page, and refuses a referral whose clinician cleared every program.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from config.current import current_settings
from referrals.ranking import Ranking
from smart_app.ranking.memo import clock, default_programs, ranked

BY_DEFAULT = "selected_by_default"  # the referral state's flag: the site's program was chosen for the clinician
ALWAYS_OPEN_LINE = "always"  # CallNow.state of the 24/7 line ranked after the visit's programs


def ranking_for(launch: Any, ref: dict[str, Any], language: str, now: datetime | None = None) -> Ranking:
    """The visit's ranked programs for the referral state ``ref`` (safe ZIP and needs as asked)."""
    site_map = current_settings().site_map or None
    return ranked(launch.id, launch.context, safe_zip=ref.get("safe_zip"), needs=ref.get("needs") or [],
                  language=language, now=now or clock(), site_map=site_map, default_programs=default_programs())


def site_programs(ranking: Ranking) -> list[str]:
    """The visit's program(s), as the handout falls back to them, without the 24/7 line."""
    return [c.service.id for c in ranking.call_now if c.state != ALWAYS_OPEN_LINE]


def stored(ref: dict[str, Any], ranking: Ranking) -> dict[str, Any]:
    """``ref`` with the ranking's results and site; the clinician's choice kept (only programs still listed), or,
    when the clinician has not chosen yet, the site's program chosen."""
    out = dict(ref)
    out["results"] = [r.as_data() for r in ranking.results]
    out["site"] = ranking.site.id if ranking.site else None
    listed = {r["service_id"] for r in out["results"]}
    chosen = ref["selected"] if "selected" in ref else site_programs(ranking)
    if "selected" not in ref:
        out[BY_DEFAULT] = True  # the handout keeps its own fallback (with the 24/7 line) until the clinician chooses
    out["selected"] = [s for s in chosen or [] if s in listed]
    return out


def language_of(context: dict[str, Any], fallback: str) -> str:
    """The patient's language for ranking ('es' speakers get Spanish-speaking programs first)."""
    lang = (((context or {}).get("patient") or {}).get("language") or "").split("-")[0].lower()
    return lang or fallback
