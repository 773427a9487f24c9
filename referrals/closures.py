"""Days a program is closed although its weekly hours say open: public holidays and its own closures.

Holidays come from the ``holidays`` package (offline, no network): US federal holidays plus the
state's (Massachusetts: Patriots' Day), for the directory's calendar (``holidays: {country, subdiv}``
in the directory file). The package lists the day itself; federal offices close on the Friday before
a Saturday holiday and the Monday after a Sunday one (5 U.S.C. 6103(b); Executive Order 11582), so
those observed days are added here. A program's own closed days (the day after Thanksgiving,
Christmas Eve...) are in its ``closures`` list in the directory file. 24/7 lines never close.

The default calendar (US, MA) for 2020-2045 is kept as a small table computed from the package
(``referrals/data/holidays.json``; ``python -m referrals.closures`` rebuilds it and
``tests/referrals/test_clinic_facts.py`` fails if the two ever disagree): the package's calendars load
every country it knows, in each worker, to answer for one (figures in
``docs/decisions/0005-directory-memory-measures.md``).
Any other calendar or year still asks the package.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

from referrals.model import Service

TABLE = Path(__file__).with_name("data") / "holidays.json"
TABLE_CALENDARS = (("US", "MA"),)
TABLE_YEARS = range(2020, 2046)


@lru_cache(maxsize=64)
def _calendar(country: str, subdiv: str | None, year: int) -> dict[date, str]:
    if (country, subdiv) in TABLE_CALENDARS and year in TABLE_YEARS:
        return {date.fromisoformat(d): n for d, n in _table()[f"{country}/{subdiv}"][str(year)].items()}
    return package_calendar(country, subdiv, year)


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, dict[str, str]]]:
    return json.loads(TABLE.read_text(encoding="utf-8"))


def package_calendar(country: str, subdiv: str | None, year: int) -> dict[date, str]:
    """``year``'s public holidays and observed days, from the ``holidays`` package."""
    import holidays  # only for a calendar or year the table does not hold (see the module docstring)

    days: dict[date, str] = {}
    for y in (year - 1, year, year + 1):  # a Jan 1 on Saturday is observed on Dec 31 of the year before
        for day, name in holidays.country_holidays(country, subdiv=subdiv, years=y).items():
            days.setdefault(day, name)
            if day.weekday() == 5:
                days.setdefault(day - timedelta(days=1), f"{name} (observed)")
            elif day.weekday() == 6:
                days.setdefault(day + timedelta(days=1), f"{name} (observed)")
    return {d: n for d, n in days.items() if d.year == year}


def build_table() -> str:
    """The table's text, from the installed ``holidays`` package."""
    table = {f"{country}/{subdiv}": {str(year): {d.isoformat(): n for d, n in sorted(
        package_calendar(country, subdiv, year).items())} for year in TABLE_YEARS}
        for country, subdiv in TABLE_CALENDARS}
    return json.dumps(table, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


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


if __name__ == "__main__":  # rebuild the table from the installed holidays package
    TABLE.write_text(build_table(), encoding="utf-8")
    print(f"wrote {TABLE} ({TABLE.stat().st_size:,} bytes)")
