"""Opening hours: parse, and answer "open now?" in the directory's time zone (America/New_York)."""

from __future__ import annotations

import re
from datetime import datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel.dates import format_time

from referrals.model import DAYS, Hours, Interval

_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::\d{2})?$")
_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
WEEK = 7 * 24 * 60


def parse_time(value: object) -> int:
    """'08:30' -> 510 minutes. '24:00' is allowed as end of day. Raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"time must be a string like 08:30, got {type(value).__name__}")
    m = _TIME.match(value.strip())
    if not m:
        raise ValueError(f"time {value!r} is not HH:MM")
    h, mi = int(m.group(1)), int(m.group(2))
    if h > 24 or mi > 59 or (h == 24 and mi):
        raise ValueError(f"time {value!r} is out of range")
    return h * 60 + mi


def strip_offset(value: str) -> str:
    """HSDS times may carry a UTC offset ('09:00-05:00'); we read them as local wall-clock
    times, which is what every Boston-area publisher means."""
    return _OFFSET.sub("", value.strip())


def parse_days(value: object) -> tuple[str, ...]:
    """['MO','TU'] or 'MO,TU' or 'MO-FR' -> ('MO','TU',...)."""
    parts: list[str] = []
    if isinstance(value, str):
        parts = [p.strip().upper() for p in value.split(",") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = [str(p).strip().upper() for p in value]
    else:
        raise ValueError("days must be a list like [MO, TU] or a string 'MO-FR'")
    out: list[str] = []
    for part in parts:
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in DAYS or b not in DAYS:
                raise ValueError(f"unknown day range {part!r}")
            i, j = DAYS.index(a), DAYS.index(b)
            out.extend(DAYS[i:j + 1] if i <= j else DAYS[i:] + DAYS[:j + 1])
        elif part in DAYS:
            out.append(part)
        else:
            raise ValueError(f"unknown day {part!r} (use MO TU WE TH FR SA SU)")
    if not out:
        raise ValueError("no days given")
    return tuple(dict.fromkeys(out))


def week_ranges(hours: Hours) -> list[tuple[int, int]]:
    """Minute-of-week ranges [start, end) for fast "open now" checks."""
    return list(_ranges(tuple(hours.weekly)))


@lru_cache(maxsize=4096)
def _ranges(weekly: tuple[Interval, ...]) -> tuple[tuple[int, int], ...]:
    # Most services share a handful of schedules (Mon-Fri 9-5...): compute each once.
    ranges: list[tuple[int, int]] = []
    for iv in weekly:
        length = (iv.closes - iv.opens) % (24 * 60) or 24 * 60
        for day in iv.days:
            start = DAYS.index(day) * 24 * 60 + iv.opens
            end = start + length
            if end <= WEEK:
                ranges.append((start, end))
            else:  # wraps from Sunday night into Monday
                ranges.append((start, WEEK))
                ranges.append((0, end - WEEK))
    return tuple(ranges)


def minute_of_week(now: datetime, tz: str) -> int:
    local = now.astimezone(ZoneInfo(tz))
    return local.weekday() * 24 * 60 + local.hour * 60 + local.minute


def is_open(hours: Hours, now: datetime, tz: str = "America/New_York") -> bool | None:
    """True/False, or None when the hours are not known."""
    if hours.always:
        return True
    if not hours.known:
        return None
    mow = minute_of_week(now, tz)
    return any(a <= mow < b for a, b in week_ranges(hours))


def fmt_minutes(minutes: int, lang: str = "en") -> str:
    h, m = divmod(minutes % (24 * 60), 60)
    if lang != "en":  # the locale's own short time (CLDR via Babel): es "8:30", pt "08:30", ar "8:30 ص"
        return format_time(time(h, m), "short", locale=lang.replace("-", "_"))
    suffix = "am" if h < 12 else "pm"
    h12 = h % 12 or 12
    return f"{h12}:{m:02d}{suffix}" if m else f"{h12}{suffix}"


def interval(days: tuple[str, ...], opens: int, closes: int) -> Interval:
    return Interval(days=days, opens=opens, closes=closes)
