"""Small-cell suppression across every number the program report offers (docs/decisions/0010-report-suppression.md).

A cell is one count: a measure (screens, referrals, hand-offs offered ...), a row (all sites, a site, a site's team)
and a period (a month, a quarter, 12 months). Its value is a sum of monthly counts of the finest rows (the leaves:
a site for screens, a site's team for referrals). A count is **sensitive** when it is 1 to 10 (under the CMS cell
size of 11), whether it is a cell or a count the report implies (``Derived``: a total minus its part, such as
hand-offs offered but not completed, or referrals not contacted in time).

The rule: every sensitive cell is hidden; then every sensitive count gets a **witness**: a change of the monthly
counts (one leaf up and, where it pays, another down; one month, or a pair of months of a quarter repeated each
year) under which that count changes and every cell the change touches is hidden. Two sets of monthly counts then
agree on every number shown and differ in the sensitive one, so no sum or difference of shown numbers, in any
view or across views, gives it back. Cells hidden for a witness are chosen to hide as little as possible. A hidden
cell reads the same whatever the reason. Zero is shown: it identifies no one.

Month by month: the decision is replayed in the order the months closed. When a month closes, the witnesses already
chosen are carried into the periods it adds (a yearly pair grows by its next month), and the new periods' sensitive
counts get witnesses that may hide only cells of those new periods or cells already hidden. So, while the counts of
closed months do not change, a number shown once stays shown and a hidden one stays hidden: copies of the report
kept from earlier months add nothing to the latest one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from smart_app.report.periods import (
    MONTH,
    QUARTER,
    QUARTER_MONTHS,
    ROLLING_MONTHS,
    Period,
    month_key,
    quarter_period,
)

THRESHOLD = 11

Leaf = tuple[str, str]   # (site, team); team "" for measures counted per site only
Row = tuple[str, ...]    # ("all",), ("site", site) or ("team", site, team)
Cell = tuple[str, Row, str]  # (measure, row, period id)
ALL: Row = ("all",)


def sensitive(value: int) -> bool:
    return 0 < value < THRESHOLD


@dataclass(frozen=True)
class Measure:
    name: str
    by_team: bool  # counted per site and team (referrals), else per site only (screens)


@dataclass(frozen=True)
class Derived:
    """A count the report implies without showing it: ``total`` minus its ``parts`` in the same row and period
    (hand-offs offered minus completed; referrals minus every closing outcome = still open)."""

    total: str
    parts: tuple[str, ...]

    @property
    def measures(self) -> tuple[str, ...]:
        return (self.total, *self.parts)


@dataclass
class Witness:
    """A change of one measure's monthly counts: ``leaves`` times ``months`` (each +1 or -1). It moves exactly the
    cells of ``rows`` x ``periods``, which are all hidden. A yearly pair (``yearly`` = first month, gap) grows by
    its next month as months close."""

    measure: str
    leaves: tuple[tuple[Leaf, int], ...]
    months: tuple[tuple[int, int], ...]
    rows: frozenset[Row]
    periods: frozenset[str]
    yearly: tuple[int, int] | None = None


@dataclass
class Grid:
    """The rows, leaves and periods every view shares. Every row is shown in every period (a row missing from a
    period would say it is zero there)."""

    measures: tuple[Measure, ...]
    teams: dict[str, tuple[str, ...]]  # site -> its teams (sorted)
    periods: tuple[Period, ...]

    def leaves(self, measure: Measure) -> list[Leaf]:
        if measure.by_team:
            return [(s, t) for s in sorted(self.teams) for t in self.teams[s]]
        return [(s, "") for s in sorted(self.teams)]

    def rows(self, measure: Measure) -> list[Row]:
        out: list[Row] = [ALL]
        for site in sorted(self.teams):
            out.append(("site", site))
            if measure.by_team:
                out += [("team", site, t) for t in self.teams[site]]
        return out


def holds(row: Row, leaf: Leaf) -> bool:
    return row == ALL or (row[1] == leaf[0] and (row[0] == "site" or row[2] == leaf[1]))


@dataclass
class Result:
    values: dict[Cell, int]
    hidden: set[Cell]
    witnesses: list[Witness] = field(default_factory=list)

    def shown(self, measure: str, row: Row, period: str) -> int | None:
        cell = (measure, row, period)
        return None if cell in self.hidden else self.values.get(cell, 0)


Counts = dict[str, dict[Leaf, dict[int, int]]]  # measure -> leaf -> month number -> count


class Cells:
    """Every cell's value over the grid, and which are hidden."""

    def __init__(self, grid: Grid, counts: Counts, derived: tuple[Derived, ...]):
        self.grid, self.counts, self.derived = grid, counts, derived
        self.measures = {m.name: m for m in grid.measures}
        self.period_of = {p.id: p for p in grid.periods}
        # The months shown one by one; a month before them is known to be empty, so no witness may move it.
        self.months = sorted(p.first for p in grid.periods if p.kind == MONTH)
        self.last_month = self.months[-1] if self.months else -1
        self.leaf_sums: dict[str, dict[Leaf, dict[str, int]]] = {}
        self.values = self._values()
        # The first month each site, and each site's team, had anything counted: its rows appear from then on.
        self.first_seen: dict[tuple[str, ...], int] = {}
        for per_leaf in counts.values():
            for (site, team), by_month in per_leaf.items():
                months = [m for m, n in by_month.items() if n]
                for key in ((site,), (site, team)) if team else ((site,),):
                    if months:
                        self.first_seen[key] = min(self.first_seen.get(key, months[0]), *months)
        self.hidden: set[Cell] = set()
        self.hidden_periods: dict[tuple[str, Row], set[str]] = defaultdict(set)  # the same, by measure and row

    def hide(self, cells: Iterable[Cell]) -> None:
        for cell in cells:
            self.hidden.add(cell)
            self.hidden_periods[(cell[0], cell[1])].add(cell[2])

    def _values(self) -> dict[Cell, int]:
        values: dict[Cell, int] = {}
        for measure in self.grid.measures:
            per_leaf = self.counts.get(measure.name, {})
            sums = {leaf: self._period_sums(per_leaf.get(leaf, {})) for leaf in self.grid.leaves(measure)}
            self.leaf_sums[measure.name] = sums
            for row in self.grid.rows(measure):
                leaves = [leaf for leaf in sums if holds(row, leaf)]
                for p in self.grid.periods:
                    values[(measure.name, row, p.id)] = sum(sums[leaf][p.id] for leaf in leaves)
        return values

    def repeated_rows(self, measure: Measure, seen: Callable[[Leaf], bool]) -> frozenset[Row]:
        """Rows adding up the same leaves, among those ``seen``, as a broader row (a site's only team, the only
        site): hidden with it, and not worth anything more when a witness is priced."""
        found: set[frozenset[Leaf]] = set()
        repeats = set()
        for row in self.grid.rows(measure):  # broadest first
            leaves = frozenset(leaf for leaf in self.grid.leaves(measure) if holds(row, leaf) and seen(leaf))
            if leaves in found:
                repeats.add(row)
            found.add(leaves)
        return frozenset(repeats)

    def _period_sums(self, by_month: dict[int, int]) -> dict[str, int]:
        """A leaf's count in every period, from running totals over the months."""
        if not self.grid.periods:
            return {}
        first = min(p.first for p in self.grid.periods)
        running, total = {}, 0
        for month in range(first - 1, self.last_month + 1):
            total += by_month.get(month, 0) if month >= first else 0
            running[month] = total
        return {p.id: running[min(p.last, self.last_month)] - running[p.first - 1] for p in self.grid.periods}

    def targets(self) -> Iterator[tuple[tuple[str, ...], Row, str]]:
        """Every sensitive count as (measures a witness may move, row, period): by the month its period closed,
        months first, teams first."""
        order = {"month": 0, "quarter": 1, "rolling": 2}
        for p in sorted(self.grid.periods, key=lambda p: (p.last, order[p.kind], p.first)):
            for measure in self.grid.measures:
                for row in sorted(self.grid.rows(measure), key=len, reverse=True):
                    if sensitive(self.values[(measure.name, row, p.id)]):
                        yield (measure.name,), row, p.id
            for d in self.derived:
                rows = set.intersection(*(set(self.grid.rows(self.measures[m])) for m in d.measures))
                for row in sorted(rows, key=len, reverse=True):
                    gap = self.values[(d.total, row, p.id)] - sum(self.values[(m, row, p.id)] for m in d.parts)
                    if sensitive(gap):
                        yield d.measures, row, p.id


Signs = tuple[tuple[Leaf, int], ...]
MonthChange = tuple[tuple[int, int], ...]


class Suppressor:
    """Decides what is hidden for one set of monthly counts over every period of the grid, month by month."""

    def __init__(self, grid: Grid, counts: Counts, derived: Iterable[Derived] = ()):
        self.grid = grid
        self.cells = Cells(grid, counts, tuple(derived))
        self.by_month: dict[int, list[str]] = defaultdict(list)
        for p in grid.periods:
            for month in p.months:
                self.by_month[month].append(p.id)
        self.last_of = {p.id: p.last for p in grid.periods}
        self.witnesses: dict[str, list[Witness]] = defaultdict(list)
        self._covering: dict[tuple[str, Row], list[Witness]] = defaultdict(list)  # the same, by measure and row
        self.closed_to = -1  # the month being closed in the replay
        self._month_id = ""
        self._repeats: dict[bool, frozenset[Row]] = {}
        self._moved: dict[MonthChange, frozenset[str]] = {}
        self._moved_by_now: dict[tuple[MonthChange, int], frozenset[str]] = {}
        self._rows_moved: dict[tuple[bool, Signs], frozenset[Row]] = {}

    def run(self) -> Result:
        cells = self.cells
        cells.hide(cell for cell, value in cells.values.items() if sensitive(value))
        by_close: dict[int, list[tuple[tuple[str, ...], Row, str]]] = defaultdict(list)
        for target in cells.targets():
            by_close[self.last_of[target[2]]].append(target)
        for month in cells.months:
            self.closed_to, self._month_id = month, f"{MONTH}:{month_key(month)}"
            self._repeats = {m.by_team: cells.repeated_rows(m, lambda leaf, m=m: self._seen(leaf, m.by_team))
                             for m in self.grid.measures}
            self._carry(month)
            for measures, row, period in by_close.get(month, []):
                if self._protected(measures, row, period):
                    continue
                best = self._cheapest(measures, row, period)
                if best is None:  # nothing can move it (no leaf under the row): hide the row's cells outright
                    cells.hide((m, row, period) for m in measures)
                    continue
                witness = best[1]
                self.witnesses[witness.measure].append(witness)
                for r in witness.rows:
                    self._covering[(witness.measure, r)].append(witness)
                cells.hide((witness.measure, r, p) for r in witness.rows for p in witness.periods)
        return Result(cells.values, cells.hidden, [w for ws in self.witnesses.values() for w in ws])

    def _carry(self, month: int) -> None:
        """The month closes: each witness moves the periods it adds too (a yearly pair first takes its next month),
        and those cells are hidden."""
        for witnesses in self.witnesses.values():
            for w in witnesses:
                if w.yearly is not None:
                    w.months = self._yearly(*w.yearly)
                moved = self._moved_now(w.months)
                new = moved - w.periods
                w.periods = moved
                self.cells.hide((w.measure, r, p) for r in w.rows for p in new)

    def _cheapest(self, measures: tuple[str, ...], row: Row, period: str) -> tuple[int, Witness] | None:
        best: tuple[int, Witness] | None = None
        for measure, signs, months, yearly in self._candidates(measures, row, period):
            cost = self._price(measure, signs, months, yearly, best[0] if best else None)
            if cost is not None and (best is None or cost < best[0]):
                best = cost, Witness(measure.name, signs, months, self._rows_of(measure, signs),
                                     self._moved_now(months), yearly)
                if cost == 0:
                    break  # hides nothing more: cannot be beaten
        return best

    def _protected(self, measures: tuple[str, ...], row: Row, period: str) -> bool:
        return any(period in w.periods for m in measures for w in self._covering[(m, row)])

    def _candidates(self, measures: tuple[str, ...], row: Row,
                    period: str) -> Iterator[tuple[Measure, Signs, MonthChange, tuple[int, int] | None]]:
        cells = self.cells
        target = cells.period_of[period]
        for name in measures:
            measure = cells.measures[name]
            leaves = self.grid.leaves(measure)
            inside = [leaf for leaf in leaves if holds(row, leaf) and self._seen(leaf, measure.by_team)]
            busy = [leaf for leaf in inside if cells.leaf_sums[name][leaf][period]] or inside
            # A leaf with nothing counted yet had no row in the report then: it cannot have been hidden.
            outside = [leaf for leaf in leaves if not holds(row, leaf) and self._seen(leaf, measure.by_team)]
            for a in busy:
                for b in [None, *outside]:
                    signs = ((a, 1),) if b is None else ((a, 1), (b, -1))
                    for months, yearly in self._month_changes(name, a, target):
                        yield measure, signs, months, yearly

    def _seen(self, leaf: Leaf, by_team: bool) -> bool:
        """Did the report have the leaf's row by the month being closed (a count of any measure by then)?"""
        return self.cells.first_seen.get(leaf if by_team else (leaf[0],), self.closed_to + 1) <= self.closed_to

    def _month_changes(self, measure: str, leaf: Leaf, target: Period
                       ) -> Iterator[tuple[MonthChange, tuple[int, int] | None]]:
        """Month changes that move the target period: one of its months (+1); or a yearly pair, +1 in month u and
        -1 in month u + gap, repeated every 12 months from the first year of data to the last closed month, which
        every 12-month window holding both sees as no change (gap 1 inside a quarter leaves the quarters unchanged
        too; gap 3 pairs a quarter with the next). Begun in the first year, a pair moves only a 12-month window of
        the first year, where counts are partial and small."""
        counts = self.cells.counts.get(measure, {}).get(leaf, {})
        first = self.cells.months[0]
        months = [m for m in target.months if first <= m <= self.closed_to]
        for month in [m for m in months if counts.get(m)] or months:
            yield ((month, 1),), None
        for start, gap in self._yearly_starts(target):
            for begin in dict.fromkeys((first + (start - first) % ROLLING_MONTHS, start)):
                if begin >= first:
                    vector = self._yearly(begin, gap)
                    if target.id in self._moved_now(vector):
                        yield vector, (begin, gap)

    @staticmethod
    def _yearly_starts(target: Period) -> list[tuple[int, int]]:
        """(first month, gap) of the yearly pairs worth trying: pairs holding a month of the target, the pair before
        it first (the last closed month's pair then moves an older 12-month window, not the latest)."""
        if target.kind == MONTH:
            t = target.first
            inside = t if t % QUARTER_MONTHS < QUARTER_MONTHS - 1 else t - 1
            return list(dict.fromkeys([(t - 1, 1), (inside, 1), (t, QUARTER_MONTHS),
                                       (t - QUARTER_MONTHS, QUARTER_MONTHS)]))
        if target.kind == QUARTER:
            return [(m, QUARTER_MONTHS) for m in target.months] + [(m - QUARTER_MONTHS, QUARTER_MONTHS)
                                                                    for m in target.months]
        return [(target.last, 1)] + [(target.last - k, QUARTER_MONTHS) for k in range(QUARTER_MONTHS)]

    def _yearly(self, start: int, gap: int, until: int | None = None) -> MonthChange:
        """The pair from ``start`` on, to the month being closed (or ``until``)."""
        last = self.closed_to if until is None else until
        pairs: list[tuple[int, int]] = []
        for month in range(start, last + 1, ROLLING_MONTHS):
            pairs.append((month, 1))
            if month + gap <= last:
                pairs.append((month + gap, -1))
        return tuple(pairs)

    def _moved_all(self, months: MonthChange) -> frozenset[str]:
        """Every period whose count the month change moves."""
        if months not in self._moved:
            change: dict[str, int] = defaultdict(int)
            for month, sign in months:
                for pid in self.by_month.get(month, ()):
                    change[pid] += sign
            self._moved[months] = frozenset(k for k, v in change.items() if v)
        return self._moved[months]

    def _moved_now(self, months: MonthChange) -> frozenset[str]:
        """The periods closed so far whose count the month change moves."""
        key = (months, self.closed_to)
        if key not in self._moved_by_now:
            self._moved_by_now[key] = frozenset(p for p in self._moved_all(months) if self.last_of[p] <= self.closed_to)
        return self._moved_by_now[key]

    def _rows_of(self, measure: Measure, signs: Signs) -> frozenset[Row]:
        key = (measure.by_team, signs)
        if key not in self._rows_moved:
            self._rows_moved[key] = frozenset(r for r in self.grid.rows(measure)
                                              if sum(s for leaf, s in signs if holds(r, leaf)))
        return self._rows_moved[key]

    def _price(self, measure: Measure, signs: Signs, months: MonthChange, yearly: tuple[int, int] | None,
               bound: int | None) -> int | None:
        """What the witness would newly hide (each cell 1 + its count), now and, estimated from the month being
        closed, as later months close; None when it would hide a number shown before this month closed, or as soon
        as it passes ``bound``. Only counts closed by now are read, so the choice is the one made when the month
        closed, whatever came after."""
        cells, name, cost, moved = self.cells, measure.name, 0, self._moved_now(months)
        for r in self._rows_of(measure, signs):
            if r in self._repeats[measure.by_team]:
                continue  # the same cells as a row already priced (both are hidden together)
            hidden = cells.hidden_periods[(name, r)]
            for p in moved:
                if p in hidden:
                    continue
                if self.last_of[p] < self.closed_to:
                    return None  # shown in an earlier month's report: stays shown
                cost += 1 + cells.values[(name, r, p)]
            cost += self._later(name, r, months, yearly)
            if bound is not None and cost >= bound:
                return None
        return cost

    def _later(self, name: str, row: Row, months: MonthChange, yearly: tuple[int, int] | None) -> int:
        """What the witness will hide in the row as the next 12 months close, each cell priced as if every month
        counted what this one did (nothing for a cell that small: it would be hidden anyway)."""
        k = self.closed_to
        per_month = self.cells.values.get((name, row, self._month_id), 0)

        def cell(months_in_it: int) -> int:
            value = per_month * months_in_it
            return 0 if value < THRESHOLD else 1 + value

        if yearly is not None:  # balanced in every 12-month window: a month, and with gap 3 a quarter, each year
            return 2 * cell(1) + (2 * cell(QUARTER_MONTHS) if yearly[1] == QUARTER_MONTHS else 0)
        t = months[0][0]
        windows = max(0, t + ROLLING_MONTHS - 1 - k)
        quarter = 1 if quarter_period(t).last > k else 0
        return windows * cell(ROLLING_MONTHS) + quarter * cell(QUARTER_MONTHS)


def suppress(grid: Grid, counts: Counts, derived: Iterable[Derived] = ()) -> Result:
    return Suppressor(grid, counts, derived).run()
