"""The program report's tables: one period of one view (a month, a quarter, 12 months), per site and, for
referrals, per team, with rates, the median time to first contact and every suppressed cell hidden.

Suppression is decided once over every period the report offers (smart_app/report/suppress.py), so a month, its
quarter and the 12-month windows around it cannot be set against each other. A rate is shown only when both of its
counts are; the median time to first contact only when the row's referrals are shown and at least 11 of them were
contacted.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

from config.deployment import Site
from smart_app.report import measures as ms
from smart_app.report import memo
from smart_app.report import periods as pd
from smart_app.report.events import UNSPECIFIED
from smart_app.report.suppress import ALL, THRESHOLD, Grid, Replay, Result, Row, suppress_from
from smart_app.store import closing

ALL_SITES = "All sites"
COLUMNS: tuple[tuple[str, str], ...] = (
    (ms.SCREENS, "Screens completed"), (ms.POSITIVES, "Positive"), (ms.REFERRALS, "Consented referrals"),
    (ms.HANDOFF_OFFERED, "Warm hand-offs offered"), (ms.HANDOFF_COMPLETED, "Warm hand-offs completed"),
    (ms.CONTACTED_IN_TIME, "Contacted within the due time"),
    *((name, f"Closed: {closing.english(code)}") for code, name in ms.CLOSED.items()),
    (ms.CARDS_SHOWN, "Check-in cards shown"), (ms.CARDS_ACCEPTED, "Cards accepted"),
    (ms.SELF_POSITIVES, "Positive self-screens (tablet)"), (ms.SELF_RESPONDED, "With a response recorded"),
    (ms.CHECKINS, "Check-ins started"), (ms.EDUCATION_OFFERED, "Universal education offered"),
)
# (key, numerator, denominator, label)
RATES: tuple[tuple[str, str, str, str], ...] = (
    ("positive_rate", ms.POSITIVES, ms.SCREENS, "Positive rate"),
    ("referral_rate", ms.REFERRALS, ms.POSITIVES, "Referral rate (of positives)"),
    ("handoff_rate", ms.HANDOFF_COMPLETED, ms.HANDOFF_OFFERED, "Hand-off completion rate"),
    ("in_time_share", ms.CONTACTED_IN_TIME, ms.REFERRALS, "Share contacted in time"),
    ("response_share", ms.SELF_RESPONDED, ms.SELF_POSITIVES, "Share with a response recorded"),
    ("education_share", ms.EDUCATION_OFFERED, ms.CHECKINS, "Share offered universal education"),
)
# The program's goals for two shares, shown beside them: a clinician response to at least 90% of positive
# self-screens (in Rhodes et al., Arch Intern Med 2006, only 48% of positive computer prompts led to a discussion),
# universal education offered at 95% of check-ins (every patient, Miller et al., Contraception 2016).
GOALS: dict[str, float] = {"response_share": 0.90, "education_share": 0.95}



@dataclass(frozen=True)
class Section:
    """One table of the page: a few columns, so each fits the screen; per site only, or per site and team."""

    key: str
    title: str
    measures: tuple[str, ...]
    rates: tuple[str, ...] = ()
    median: bool = False
    teams: bool = True


SECTIONS = (
    Section("screening", "Screening", (ms.SCREENS, ms.POSITIVES), ("positive_rate",), teams=False),
    Section("referrals", "Referrals and warm hand-offs", (ms.REFERRALS, ms.HANDOFF_OFFERED, ms.HANDOFF_COMPLETED),
            ("referral_rate", "handoff_rate")),
    Section("contact", "First contact", (ms.CONTACTED_IN_TIME,), ("in_time_share",), median=True),
    Section("closing", "Closing outcomes", tuple(ms.CLOSED.values())),
    Section("cards", "Check-in cards", (ms.CARDS_SHOWN, ms.CARDS_ACCEPTED), teams=False),
    Section("followup", "Response to positive self-screens (goal 90%)", (ms.SELF_POSITIVES, ms.SELF_RESPONDED),
            ("response_share",), teams=False),
    Section("education", "Universal education (goal 95%)", (ms.CHECKINS, ms.EDUCATION_OFFERED),
            ("education_share",), teams=False),
)
TEAM_NAMES = {ms.COVERAGE_TEAM: "Covering social workers", ms.UNROUTED_TEAM: "Unrouted queue",
              ms.NO_ROUTE: "Route not recorded"}
VIEW_NAMES = {pd.MONTH: "Month", pd.QUARTER: "Quarter", pd.ROLLING: "12 months"}
LEGEND_ITEM_WIDTH = 200
_CACHE_SIZE = 8


@dataclass
class Decisions:
    """Suppression decisions this app made: each result by the counts it was decided on, and the last decision per
    set of sites, teams and periods to resume from. Kept per app (its database), never shared between apps."""

    results: dict[str, Result] = field(default_factory=dict)
    replays: dict[str, Replay] = field(default_factory=dict)


def decisions(app: Flask) -> Decisions:
    return app.extensions.setdefault("report_decisions", Decisions())


def forget_decisions(app: Flask) -> None:
    """As a new process starts: nothing decided in memory (the report's kept rows in the database stay)."""
    app.extensions.pop("report_decisions", None)


@dataclass
class Line:
    """One row of a view: its label, the shown counts (None = suppressed; absent = not counted at this level),
    rates (None = not shown) and the median hours to first contact (None = not shown)."""

    row: Row
    label: str
    cells: dict[str, int | None]
    rates: dict[str, float | None]
    median_hours: float | None

    @property
    def level(self) -> str:
        return self.row[0]


@dataclass
class View:
    period: pd.Period
    lines: list[Line]
    offered: dict[str, list[pd.Period]]  # kind -> closed periods with data, newest first

    @property
    def empty(self) -> bool:
        return not self.lines


@dataclass(frozen=True)
class Names:
    """Display names: sites from the deployment (``report.site_names``) or the referrals' site names; teams from
    the deployment's ``routing.teams``."""

    sites: dict[str, str]
    teams: dict[str, str]

    @classmethod
    def of(cls, deployment: Site, site_names: dict[str, str]) -> Names:
        teams = {t.id: t.name for t in deployment.routing.teams}
        return cls({**site_names, **deployment.report.site_names}, teams)

    def site(self, key: str) -> str:
        return self.sites.get(key) or ("Site not recorded" if key == UNSPECIFIED else key)

    def team(self, key: str) -> str:
        return TEAM_NAMES.get(key) or self.teams.get(key) or key


def _suppressed(grid: Grid, collected: ms.Collected) -> Result:
    """Suppression for these counts, kept for the next request while they do not change (closed months change
    only when a referral is worked). When they have changed, the last decision over the same sites, teams and
    periods is replayed from the first month that changed (smart_app/report/suppress.py ``Replay``)."""
    digest = hashlib.sha256(repr((sorted((m, sorted((leaf, sorted(by.items())) for leaf, by in v.items()))
                                          for m, v in collected.counts.items()),
                                  sorted(grid.teams.items()), [p.id for p in grid.periods])).encode())
    key = digest.hexdigest()
    made = decisions(current_app)
    if key not in made.results:
        grid_key = hashlib.sha256(repr((sorted(grid.teams.items()), [p.id for p in grid.periods])).encode()).hexdigest()
        result, replay = suppress_from(grid, collected.counts, ms.DERIVED, made.replays.pop(grid_key, None))
        for kept in (made.results, made.replays):
            if len(kept) >= _CACHE_SIZE:
                kept.pop(next(iter(kept)))
        made.results[key], made.replays[grid_key] = result, replay
    return made.results[key]


@dataclass
class Shown:
    """One period's numbers as shown, before any name: the periods offered, the referrals' site names, and per row
    its cells (None = suppressed) and median hours to first contact (None = not shown). What a kept report holds
    (smart_app/report/memo.py)."""

    offered: list[pd.Period]
    site_names: dict[str, str]
    rows: list[tuple[Row, dict[str, int | None], float | None]]

    def to_json(self) -> dict[str, Any]:
        return {"offered": [[p.kind, p.key, p.first, p.last] for p in self.offered], "site_names": self.site_names,
                "rows": [[list(row), cells, median] for row, cells, median in self.rows]}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Shown:
        return cls([pd.Period(*p) for p in body["offered"]], body["site_names"],
                   [(tuple(row), cells, median) for row, cells, median in body["rows"]])


def build(db: Session, period: pd.Period, now: datetime, due: ms.DueRule, deployment: Site,
          ehr: ms.EhrFilter | None = None) -> View:
    """The view of a closed period (the caller refuses an open one): of one EHR, or with none the deployment's.
    Kept while the months it shows do not change (PostgreSQL, smart_app/report/memo.py), else counted."""
    before = pd.current_month(now)
    kept = memo.active(db)
    key = memo.key_of(ehr, due, before, period) if kept else ""
    body = memo.read(db, key, before) if kept else None
    if body is not None:
        shown = Shown.from_json(body)
    else:
        taken = memo.snapshot(db) if kept else None  # before the counts are read
        shown = count(db, period, before, due, ehr)
        if taken is not None:
            memo.write(db, key, taken, shown.to_json())
    by_kind = {k: sorted((p for p in shown.offered if p.kind == k), key=lambda p: p.first, reverse=True)
               for k in pd.KINDS}
    names = Names.of(deployment, shown.site_names)
    lines = [Line(row, _label(row, names), cells, _rates(cells), median) for row, cells, median in shown.rows]
    return View(period, lines, by_kind)


def count(db: Session, period: pd.Period, before_month: int, due: ms.DueRule, ehr: ms.EhrFilter | None) -> Shown:
    """Count every closed month, decide suppression over every period offered, and read out ``period``'s rows."""
    collected = ms.collect(db, due, before_month, ehr)
    first = collected.first_month
    offered = pd.offered(first, _month_start(before_month)) if first is not None else []
    if period not in offered:
        return Shown(offered, collected.site_names, [])  # before the first month with data: nothing to count
    grid = Grid(ms.MEASURES, {s: tuple(sorted(t)) for s, t in collected.teams.items()}, tuple(offered))
    result = _suppressed(grid, collected)
    medians = ms.contact_medians(db, collected, due, period.months, ehr)
    return Shown(offered, collected.site_names, [_cells(grid, result, medians, period, row) for row in _rows(grid)])


def _month_start(month: int) -> datetime:
    return datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC)


def _rows(grid: Grid) -> list[Row]:
    """All sites first, then each site followed by its teams."""
    rows: list[Row] = [ALL]
    for site in sorted(grid.teams):
        rows.append(("site", site))
        rows += [("team", site, t) for t in grid.teams[site]]
    return rows


def _cells(grid: Grid, result: Result, medians: dict[Row, tuple[int, float]], period: pd.Period,
           row: Row) -> tuple[Row, dict[str, int | None], float | None]:
    cells = {m.name: result.shown(m.name, row, period.id) for m in grid.measures if row in grid.rows(m)}
    return row, cells, _median(medians.get(row), cells.get(ms.REFERRALS))


def _rates(cells: dict[str, int | None]) -> dict[str, float | None]:
    rates: dict[str, float | None] = {}
    for key, num, den, _label in RATES:
        n, d = cells.get(num), cells.get(den)
        rates[key] = None if n is None or d is None or d == 0 else n / d
    return rates


def _label(row: Row, names: Names) -> str:
    return ALL_SITES if row == ALL else names.site(row[1]) if row[0] == "site" else names.team(row[2])


def _median(contacted: tuple[int, float] | None, referrals: int | None) -> float | None:
    """The row's median hours to first contact, shown with its referrals and once at least 11 were contacted."""
    if referrals is None or contacted is None:
        return None
    n, median = contacted
    return median if n >= THRESHOLD else None


# ---------------------------------------------------------------------------- output


def percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.0f}%"


def hours_text(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def csv_text(view: View) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["view", "period", "level", "site", "team", *[k for k, _ in COLUMNS], *[k for k, *_ in RATES],
                "median_hours_to_first_contact"])
    for line in view.lines:
        site = "" if line.row == ALL else line.row[1]
        team = line.row[2] if line.level == "team" else ""
        values = ["" if k not in line.cells else "suppressed" if line.cells[k] is None else str(line.cells[k])
                  for k, _ in COLUMNS]
        rates = ["" if line.rates[k] is None else f"{line.rates[k]:.3f}" for k, *_ in RATES]
        w.writerow([view.period.kind, view.period.key, line.level, site, team, *values, *rates,
                    "" if line.median_hours is None else f"{line.median_hours:.1f}"])
    return out.getvalue()


def chart(view: View, measures: tuple[str, ...] = (ms.SCREENS, ms.POSITIVES, ms.REFERRALS, ms.HANDOFF_OFFERED,
                                                     ms.HANDOFF_COMPLETED)) -> dict[str, Any]:
    """Bar chart data for the template: per site, one bar per measure; hidden cells drawn as a hatched stub."""
    lines = [line for line in view.lines if line.level == "site"]
    peak = max([line.cells.get(m) or 0 for line in lines for m in measures] + [THRESHOLD])
    bar_w, gap, group_gap, height, top = 18, 4, 28, 180, 20
    groups, x = [], 60
    for line in lines:
        bars = []
        for i, m in enumerate(measures):
            v = line.cells.get(m)
            h = 12 if v is None else round(height * v / peak)
            bars.append({"x": x + i * (bar_w + gap), "y": top + height - h, "h": h, "w": bar_w, "measure": m,
                         "value": v, "series": i})
        groups.append({"label": line.label, "x": x, "width": len(measures) * (bar_w + gap), "bars": bars})
        x += len(measures) * (bar_w + gap) + group_gap
    ticks = [{"value": round(peak * t / 4), "y": top + height - round(height * t / 4)} for t in range(5)]
    labels = dict(COLUMNS)
    width = max(x + 20, 480)
    per_row = max(1, (width - 60) // LEGEND_ITEM_WIDTH)
    legend = [{"series": i, "label": labels[m], "x": 60 + i % per_row * LEGEND_ITEM_WIDTH,
               "y": top + height + 30 + i // per_row * 18} for i, m in enumerate(measures)]
    return {"width": width, "height": top + height + 50 + (len(measures) + per_row - 1) // per_row * 18,
            "base": top + height, "groups": groups, "ticks": ticks, "legend": legend, "labels": labels}
