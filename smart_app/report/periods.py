"""The program report's periods: a month, a calendar quarter, or the 12 months to the end of a month.

Months are UTC calendar months, as the counted events keep them (``YYYY-MM``). A period is offered only once it has
closed: every month in it ended before the clock's month began, so a number, once shown, does not grow while it is
read (and a half-month is not compared with whole ones). Inside the report months are plain integers (year * 12 +
month - 1), so periods are ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

MONTH, QUARTER, ROLLING = "month", "quarter", "rolling"
KINDS = (MONTH, QUARTER, ROLLING)
ROLLING_MONTHS = 12
QUARTER_MONTHS = 3
_MONTH_KEY = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER_KEY = re.compile(r"^(\d{4})-Q([1-4])$")


def month_number(key: str) -> int:
    year, month = key.split("-")
    return int(year) * 12 + int(month) - 1


def month_key(number: int) -> str:
    return f"{number // 12:04d}-{number % 12 + 1:02d}"


def current_month(now: datetime) -> int:
    """The month the clock is in: open, so never shown."""
    when = now.astimezone(UTC)
    return when.year * 12 + when.month - 1


@dataclass(frozen=True)
class Period:
    """One period a view shows: its kind, its key in URLs and CSV, and the months it adds up."""

    kind: str
    key: str
    first: int  # month number
    last: int   # month number, inclusive

    @property
    def months(self) -> range:
        return range(self.first, self.last + 1)

    def holds(self, month: int) -> bool:
        return self.first <= month <= self.last

    @cached_property
    def id(self) -> str:
        """Unique among all periods (a month and the 12 months to it share a key). Kept: suppression reads it
        for every cell."""
        return f"{self.kind}:{self.key}"

    @property
    def label(self) -> str:
        if self.kind == QUARTER:
            return self.key.replace("-Q", " Q")
        if self.kind == ROLLING:
            return f"{month_key(self.first)} to {month_key(self.last)}"
        return self.key


def month_period(number: int) -> Period:
    return Period(MONTH, month_key(number), number, number)


def quarter_period(number: int) -> Period:
    """The calendar quarter holding month ``number``."""
    first = number - number % QUARTER_MONTHS
    return Period(QUARTER, f"{first // 12:04d}-Q{first % 12 // QUARTER_MONTHS + 1}", first, first + QUARTER_MONTHS - 1)


def rolling_period(last: int) -> Period:
    return Period(ROLLING, month_key(last), last - ROLLING_MONTHS + 1, last)


def parse(kind: str, key: str) -> Period | None:
    """The period a URL names (``month`` 2026-11, ``quarter`` 2026-Q3, ``rolling`` 2026-11 = the 12 months to
    November 2026), or None when it is not one. Switching views keeps the place: a month asked for as a quarter is
    the quarter holding it, a quarter asked for as a month (or 12 months) is its last month."""
    quarter = _QUARTER_KEY.match(key or "")
    if quarter:
        first = int(quarter[1]) * 12 + (int(quarter[2]) - 1) * QUARTER_MONTHS
        number = first + QUARTER_MONTHS - 1
    elif _MONTH_KEY.match(key or ""):
        number = month_number(key)
    else:
        return None
    makers = {MONTH: month_period, QUARTER: quarter_period, ROLLING: rolling_period}
    return makers[kind](number) if kind in makers else None


def closed(period: Period, now: datetime) -> bool:
    return period.last < current_month(now)


def latest(kind: str, now: datetime) -> Period:
    """The most recent closed period of a kind (the view a program manager opens first)."""
    last = current_month(now) - 1
    if kind == QUARTER:
        quarter = quarter_period(last)
        return quarter if quarter.last == last else quarter_period(quarter.first - 1)
    return rolling_period(last) if kind == ROLLING else month_period(last)


def offered(first_month: int, now: datetime) -> list[Period]:
    """Every period the report offers from the first month with data to the last closed month: each month, each
    closed quarter touching them, each 12-month window ending in them. Suppression is decided over all of them at
    once, so no two of them can be set against each other."""
    last = current_month(now) - 1
    if first_month > last:
        return []
    months = range(first_month, last + 1)
    quarters = {quarter_period(m) for m in months}
    return ([month_period(m) for m in months] + sorted((q for q in quarters if q.last <= last), key=lambda q: q.first)
            + [rolling_period(m) for m in months])
