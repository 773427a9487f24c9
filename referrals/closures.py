"""Days a program is closed although its weekly hours say open: public holidays and its own closures.

Holidays come from the ``holidays`` package (offline, no network): US federal holidays plus the
state's (Massachusetts: Patriots' Day), for the directory's calendar (``holidays: {country, subdiv}``
in the directory file). The package lists the day itself; federal offices close on the Friday before
a Saturday holiday and the Monday after a Sunday one (5 U.S.C. 6103(b); Executive Order 11582), so
those observed days are added here. A program's own closed days (the day after Thanksgiving,
Christmas Eve...) are in its ``closures`` list in the directory file. 24/7 lines never close.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

import holidays

from referrals.model import Service


@lru_cache(maxsize=64)
def _calendar(country: str, subdiv: str | None, year: int) -> dict[date, str]:
    days: dict[date, str] = {}
    for y in (year - 1, year, year + 1):  # a Jan 1 on Saturday is observed on Dec 31 of the year before
        for day, name in holidays.country_holidays(country, subdiv=subdiv, years=y).items():
            days.setdefault(day, name)
            if day.weekday() == 5:
                days.setdefault(day - timedelta(days=1), f"{name} (observed)")
            elif day.weekday() == 6:
                days.setdefault(day + timedelta(days=1), f"{name} (observed)")
    return {d: n for d, n in days.items() if d.year == year}


def holiday_name(day: date, calendar: tuple[str, str | None] = ("US", "MA")) -> str | None:
    """The public holiday on ``day`` (observed days included), or None."""
    return _calendar(calendar[0], calendar[1], day.year).get(day)


def closure(service: Service, day: date, calendar: tuple[str, str | None] = ("US", "MA")) -> str | None:
    """Why ``service`` is closed all of ``day`` (its own closure note, or the holiday's name), or None."""
    if service.hours.always:
        return None
    own = service.closures.get(day.isoformat())
    if own is not None:
        return own or "closed"
    if service.observes_holidays:
        return holiday_name(day, calendar)
    return None
