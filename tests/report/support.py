"""An attacker for the program report's suppression: every number shown, in every view, as a linear equation over
the monthly counts, solved exactly (fractions). A hidden count is recovered when its own sum is a combination of the
shown sums: subtraction of one view from another, a total minus its shown parts, or any longer chain.

It knows only what a reader knows: the rows and columns of each view, which months a period adds up, that a month
before the first one shown is empty, and that a count implied by two columns (offered minus completed) is their
difference. It does not use the report's witnesses."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from smart_app.report import measures as ms
from smart_app.report import periods as pd

THRESHOLD = 11
SITE_MEASURES = tuple(m.name for m in ms.MEASURES if not m.by_team)
TEAM_MEASURES = tuple(m.name for m in ms.MEASURES if m.by_team)
DIFFERENCES = tuple((d.total, d.parts) for d in ms.DERIVED)

Atom = tuple[str, str, str, int]  # measure, site, team ("" for per-site measures), month number
Sum = dict[Atom, Fraction]


class Span:
    """The linear span of the shown sums, kept in echelon form."""

    def __init__(self) -> None:
        self.basis: list[tuple[Atom, Sum]] = []

    def reduce(self, row: Sum) -> Sum:
        row = dict(row)
        for pivot, b in self.basis:
            c = row.get(pivot)
            if c:
                for k, v in b.items():
                    n = row.get(k, 0) - c * v
                    if n:
                        row[k] = n
                    else:
                        row.pop(k, None)
        return row

    def add(self, row: Sum) -> None:
        r = self.reduce(row)
        if r:
            pivot = next(iter(r))
            self.basis.append((pivot, {k: v / r[pivot] for k, v in r.items()}))

    def determines(self, row: Sum) -> bool:
        return not self.reduce(row)


@dataclass
class Published:
    """What a reader has: for each (measure, row, period id) the shown number or None (suppressed)."""

    cells: dict[tuple[str, tuple[str, ...], str], int | None] = field(default_factory=dict)
    periods: dict[str, pd.Period] = field(default_factory=dict)
    teams: dict[str, set[str]] = field(default_factory=dict)

    def add_csv(self, text: str) -> None:
        for rec in csv.DictReader(io.StringIO(text)):
            period = pd.parse(rec["view"], rec["period"])
            assert period is not None
            self.periods[period.id] = period
            row = ("all",) if rec["level"] == "all" else ("site", rec["site"]) if rec["level"] == "site" else (
                "team", rec["site"], rec["team"])
            if rec["site"]:
                self.teams.setdefault(rec["site"], set())
            if rec["level"] == "team":
                self.teams[rec["site"]].add(rec["team"])
            for measure in SITE_MEASURES + TEAM_MEASURES:
                value = rec.get(measure, "")
                if value != "":
                    self.cells[(measure, row, period.id)] = None if value == "suppressed" else int(value)


def atoms(measure: str, row: tuple[str, ...], period: pd.Period, teams: dict[str, Iterable[str]],
          months: set[int]) -> Sum:
    """The monthly counts a cell adds up (months before the first shown one are known to be empty)."""
    out: Sum = {}
    for site in sorted(teams):
        if row != ("all",) and row[1] != site:
            continue
        for team in (sorted(teams[site]) if measure in TEAM_MEASURES else [""]):
            if row[0] == "team" and row[2] != team:
                continue
            for month in period.months:
                if month in months:
                    out[(measure, site, team, month)] = Fraction(1)
    return out


def recovered(published: Published, truth: dict[tuple[str, tuple[str, ...], str], int]) -> list[tuple]:
    """Every count of 1 to 10 (a cell, or a difference the report implies) that the shown numbers determine; also
    any shown number that is itself 1 to 10 or differs from the truth. Empty when the report is safe."""
    months = {p.first for p in published.periods.values() if p.kind == pd.MONTH}
    spans: dict[str, Span] = {m: Span() for m in SITE_MEASURES + TEAM_MEASURES}
    bad: list[tuple] = []
    for (measure, row, pid), value in published.cells.items():
        if value is not None:
            if value != truth[(measure, row, pid)] or 0 < value < THRESHOLD:
                bad.append(("shown", measure, row, pid, value))
            spans[measure].add(atoms(measure, row, published.periods[pid], published.teams, months))

    def determined(measure: str, row: tuple[str, ...], pid: str) -> bool:
        return spans[measure].determines(atoms(measure, row, published.periods[pid], published.teams, months))

    for (measure, row, pid), value in truth.items():
        if 0 < value < THRESHOLD and determined(measure, row, pid):
            bad.append(("recovered", measure, row, pid, value))
    for total, parts in DIFFERENCES:
        for (measure, row, pid), value in truth.items():
            if measure != total or any((part, row, pid) not in truth for part in parts):
                continue
            gap = value - sum(truth[(part, row, pid)] for part in parts)
            # Each measure's counts are separate unknowns, so the difference is known only if each cell in it is.
            if 0 < gap < THRESHOLD and all(determined(m, row, pid) for m in (total, *parts)):
                bad.append(("difference", total, parts, row, pid, gap))
    return bad
