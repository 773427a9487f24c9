"""When a referral is due: a time from its urgency, counted in the hours of the program that works it.

The deployment says how long each urgency may wait for a first contact (``worklist.due``; defaults shown)::

    worklist:
      due:
        urgent: 1 business hour     # "<n> [business] hour(s)" or "<n> [business] day(s)"
        routine: 2 business days

Business time is counted in the program's opening hours, skipping the days it is closed: public holidays of the
directory's calendar (referrals/closures.py) and the program's own closed days. The program is the route's team's
(``routing.teams[].program``: a directory service id), else the directory program of the referral's site (as the
urgent box finds it), else none: then business time is counted around the clock (24x7), as it is for a program
whose hours are 24/7 or not known (never later than the clock says).

A business hour is 60 open minutes. N business days end at the same point of the Nth open day after the one the
referral arrived in (a referral received at 10:00 on Monday is due at 10:00 on Wednesday); one received outside
the hours counts from the next opening, and is due when the Nth open day closes (received on Friday night: due
when Tuesday closes). Plain hours and days ("4 hours") are counted on the clock.

``due_at`` is stored on the referral when it is made. A referral without one (made before due times, or made
routine and judged urgent later: smart_app/screening/handoff.py drops the routine due time) is due its urgency's
time after it was made, counted around the clock: the queue compares that in SQL
(smart_app/worklist/queue.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from config.current import settings_of
from config.deployment import Site
from referrals.closures import closure
from referrals.model import DAYS
from referrals.store import store_for
from referrals.visit import Visit

log = logging.getLogger("ipv.worklist")

URGENT, ROUTINE = "urgent", "routine"
DEFAULT_DUE = {URGENT: "1 business hour", ROUTINE: "2 business days"}
HOUR, DAY = "hour", "day"
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s+(business\s+)?(hour|hours|day|days)\s*$", re.IGNORECASE)
SEARCH_DAYS = 400  # a program closed longer than this is treated as open around the clock
MINUTE = timedelta(minutes=1)


class DueConfigError(ValueError):
    """The deployment's ``worklist.due`` cannot be read (the message names the setting)."""


@dataclass(frozen=True)
class Span:
    """How long a referral may wait: ``amount`` hours or days, in business time or on the clock."""

    amount: float
    unit: str  # hour | day
    business: bool

    @property
    def around_the_clock(self) -> timedelta:
        """The span counted on the clock (what a referral without a stored due time is given)."""
        return timedelta(hours=self.amount) if self.unit == HOUR else timedelta(days=self.amount)


def parse_span(setting: str, text: Any) -> Span:
    m = _SPAN.match(str(text or ""))
    if not m or float(m.group(1)) <= 0:
        raise DueConfigError(f"{setting}: {text!r} is not a time like '1 business hour' or '2 business days'")
    unit = HOUR if m.group(3).lower().startswith("hour") else DAY
    amount = float(m.group(1))
    if unit == DAY and m.group(2) and amount != int(amount):
        raise DueConfigError(f"{setting}: business days are whole days ({text!r})")
    return Span(amount=amount, unit=unit, business=bool(m.group(2)))


@dataclass(frozen=True)
class DueRule:
    urgent: Span
    routine: Span

    def span(self, urgent: bool) -> Span:
        return self.urgent if urgent else self.routine


def due_rule(settings: Site) -> DueRule:
    """The rule from the deployment's ``worklist.due``; raises DueConfigError on a value it cannot read."""
    due = settings.worklist.due
    return DueRule(urgent=parse_span("worklist.due.urgent", due.urgent or DEFAULT_DUE[URGENT]),
                   routine=parse_span("worklist.due.routine", due.routine or DEFAULT_DUE[ROUTINE]))


# -- the program's hours ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgramHours:
    """Opening hours as business time counts them: weekly (day, opens, closes) in minutes of local time (closes at
    or before opens: past midnight), the time zone, and which dates are closed all day. ``weekly`` empty: 24x7."""

    name: str = ""
    weekly: tuple[tuple[str, int, int], ...] = ()
    tz: str = "America/New_York"
    closed_on: Callable[[date], str | None] = field(default=lambda _day: None, compare=False)

    @property
    def always(self) -> bool:
        return not self.weekly

    def spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """The open spans (UTC) that start on ``day`` (local), none when it is closed all day."""
        if self.closed_on(day):
            return []
        zone = ZoneInfo(self.tz)
        weekday = DAYS[day.weekday()]
        out = []
        for days_of, opens, closes in self.weekly:
            if weekday != days_of:
                continue
            start = _local(day, opens, zone)
            length = (closes - opens) % (24 * 60) or 24 * 60
            end = _local(day + timedelta(days=(opens + length) // (24 * 60)), (opens + length) % (24 * 60), zone)
            out.append((start, end))
        return sorted(out)


AROUND_THE_CLOCK = ProgramHours(name="24x7")


def _local(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=zone).astimezone(UTC)


def program_hours(service: Any, tz: str, calendar: tuple[str, str | None]) -> ProgramHours:
    """A directory service's hours (referrals/model.py Service), closed on its holidays and own closures; 24x7
    when its hours are 24/7 or not known."""
    from_closures = _closures_of(service, calendar)
    hours = getattr(service, "hours", None)
    if hours is None or hours.always or not hours.known or not hours.weekly:
        return ProgramHours(name=getattr(service, "id", "") or "", tz=tz)
    weekly = tuple((d, iv.opens, iv.closes) for iv in hours.weekly for d in iv.days)
    return ProgramHours(name=service.id, weekly=weekly, tz=tz, closed_on=from_closures)


def _closures_of(service: Any, calendar: tuple[str, str | None]) -> Callable[[date], str | None]:
    return lambda day: closure(service, day, calendar)


def referral_program(index: Any, team_program: str | None, context: dict[str, Any],
                     site_map: dict[str, str] | None) -> ProgramHours:
    """The hours a referral's due time is counted in: its route team's program, else its site's directory program
    (``index``: the directory's DirectoryIndex), else around the clock."""
    service = index.directory.by_id().get(team_program) if team_program else None
    if service is None:
        _site, service, _on_site = index.match_site(Visit.from_context(context or {}), site_map or None)
    if service is None:
        return AROUND_THE_CLOCK
    return program_hours(service, index.timezone, index.directory.holidays)


def due_for_referral(app: Any, created: datetime, urgent: bool, team_program: str | None,
                     context: dict[str, Any]) -> datetime:
    """A new referral's due time. The directory unavailable (it never stops a consented referral): around the
    clock, which is never later than the program's hours would make it."""
    settings = settings_of(app)
    rule = due_rule(settings)
    try:
        index = store_for(app).index
        site_map = settings.site_map
        program = referral_program(index, team_program, context, site_map)
    except Exception as exc:  # noqa: BLE001 - a referral is stored whatever the directory does
        log.warning("due time counted around the clock: directory unavailable (%s)", type(exc).__name__)
        program = AROUND_THE_CLOCK
    return due_at(created, rule.span(urgent), program)


# -- the due time -------------------------------------------------------------------------------------------------
def due_at(created: datetime, span: Span, program: ProgramHours = AROUND_THE_CLOCK) -> datetime:
    """When a referral made at ``created`` is due, ``span`` later in ``program``'s hours."""
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    if not span.business or program.always:
        return created + span.around_the_clock
    if span.unit == HOUR:
        return _add_open_minutes(created, span.amount * 60, program) or created + span.around_the_clock
    return _add_open_days(created, int(span.amount), program) or created + span.around_the_clock


def _open_spans_from(moment: datetime, program: ProgramHours) -> Iterator[tuple[date, datetime, datetime]]:
    """Every open span (its local start day, start, end) that ends after ``moment``, in order."""
    first = moment.astimezone(ZoneInfo(program.tz)).date() - timedelta(days=1)  # a span from the night before
    for offset in range(SEARCH_DAYS):
        day = first + timedelta(days=offset)
        for start, end in program.spans(day):
            if end > moment:
                yield day, max(start, moment), end


def _add_open_minutes(moment: datetime, minutes: float, program: ProgramHours) -> datetime | None:
    left = timedelta(minutes=minutes)
    for _day, start, end in _open_spans_from(moment, program):
        if end - start >= left:
            return start + left
        left -= end - start
    return None


def _add_open_days(moment: datetime, days: int, program: ProgramHours) -> datetime | None:
    """N business days: the same point of the Nth open day after the one the referral arrived in (open minutes
    from its opening), or the close of the Nth open day counting the first when it arrived before any opening."""
    spans = _open_spans_from(moment, program)
    arrival = next(spans, None)
    if arrival is None:
        return None
    first_day = arrival[0]
    elapsed = _open_before(first_day, moment, program)
    wanted = days if elapsed > timedelta(0) else days - 1
    day, found = first_day, 0
    for offset in range(1, SEARCH_DAYS):
        if found == wanted:
            break
        day = first_day + timedelta(days=offset)
        if program.spans(day):
            found += 1
    else:
        return None
    spans_of_day = program.spans(day)
    if elapsed <= timedelta(0):
        return spans_of_day[-1][1]
    for start, end in spans_of_day:
        if end - start >= elapsed:
            return start + elapsed
        elapsed -= end - start
    return spans_of_day[-1][1]


def _open_before(day: date, moment: datetime, program: ProgramHours) -> timedelta:
    """Open time of ``day`` before ``moment``."""
    return sum((min(end, moment) - start for start, end in program.spans(day) if start < moment), timedelta(0))
