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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from smart_app.report.periods import MONTH, QUARTER, QUARTER_MONTHS, ROLLING_MONTHS, Period

THRESHOLD = 11
LATEST_WEIGHT = 4  # how much more a cell of the latest period of its kind costs to hide

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


@dataclass(frozen=True)
class Witness:
    """A change of one measure's monthly counts: ``leaves`` times ``months`` (each +1 or -1). It moves exactly the
    cells of ``rows`` x ``periods``, which are all hidden."""

    measure: str
    leaves: tuple[tuple[Leaf, int], ...]
    months: tuple[tuple[int, int], ...]
    rows: frozenset[Row]
    periods: frozenset[str]


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


class Suppressor:
    """Decides what is hidden for one set of monthly counts over every period of the grid."""

    def __init__(self, grid: Grid, counts: Counts, derived: Iterable[Derived] = ()):
        self.grid = grid
        self.counts = counts
        self.derived = tuple(derived)
        self.measures = {m.name: m for m in grid.measures}
        self.by_month: dict[int, list[str]] = defaultdict(list)
        for p in grid.periods:
            for month in p.months:
                self.by_month[month].append(p.id)
        self.period_of = {p.id: p for p in grid.periods}
        # The months shown one by one; a month before them is known to be empty, so no witness may move it.
        self.months = sorted(p.first for p in grid.periods if p.kind == MONTH)
        self.last_month = self.months[-1] if self.months else -1
        self._leaf_sums: dict[str, dict[Leaf, dict[str, int]]] = {}
        # The latest month, quarter and 12 months are what a program manager opens first: hiding there costs more.
        latest = {p.kind: p for p in sorted(grid.periods, key=lambda p: p.last)}
        self._weight = {p.id: LATEST_WEIGHT for p in latest.values()}
        # Rows adding up the same leaves as a broader row (a site's only team, the only site): hidden with it, and
        # not worth anything more when a witness is priced.
        self._repeats = {m.by_team: self._repeated_rows(m) for m in grid.measures}
        self.values = self._values()
        self.hidden: set[Cell] = set()
        self._hidden_periods: dict[tuple[str, Row], set[str]] = defaultdict(set)  # the same, by measure and row
        self.witnesses: dict[str, list[Witness]] = defaultdict(list)
        self._moved: dict[tuple[tuple[int, int], ...], frozenset[str]] = {}
        self._rows_moved: dict[tuple[bool, tuple[tuple[Leaf, int], ...]], frozenset[Row]] = {}

    # -- values -------------------------------------------------------------------------------------------------
    def _values(self) -> dict[Cell, int]:
        values: dict[Cell, int] = {}
        for measure in self.grid.measures:
            per_leaf = self.counts.get(measure.name, {})
            sums = {leaf: self._period_sums(per_leaf.get(leaf, {})) for leaf in self.grid.leaves(measure)}
            self._leaf_sums[measure.name] = sums
            for row in self.grid.rows(measure):
                leaves = [leaf for leaf in sums if holds(row, leaf)]
                for p in self.grid.periods:
                    values[(measure.name, row, p.id)] = sum(sums[leaf][p.id] for leaf in leaves)
        return values

    def _repeated_rows(self, measure: Measure) -> frozenset[Row]:
        seen: set[frozenset[Leaf]] = set()
        repeats = set()
        for row in self.grid.rows(measure):  # broadest first
            leaves = frozenset(leaf for leaf in self.grid.leaves(measure) if holds(row, leaf))
            if leaves in seen:
                repeats.add(row)
            seen.add(leaves)
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
        """Every sensitive count as (measures a witness may move, row, period), months first, teams first."""
        order = {"month": 0, "quarter": 1, "rolling": 2}
        periods = sorted(self.grid.periods, key=lambda p: (order[p.kind], p.first))
        for p in periods:
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

    # -- the rule -----------------------------------------------------------------------------------------------
    def run(self) -> Result:
        self._hide(cell for cell, value in self.values.items() if sensitive(value))
        for measures, row, period in list(self.targets()):
            if self._protected(measures, row, period):
                continue
            best = self._cheapest(measures, row, period)
            if best is None:  # nothing can move it (no leaf under the row): hide the row's cells outright
                self._hide((m, row, period) for m in measures)
                continue
            witness = best[1]
            self.witnesses[witness.measure].append(witness)
            self._hide((witness.measure, r, p) for r in witness.rows for p in witness.periods)
        return Result(self.values, self.hidden, [w for ws in self.witnesses.values() for w in ws])

    def _hide(self, cells: Iterable[Cell]) -> None:
        for cell in cells:
            self.hidden.add(cell)
            self._hidden_periods[(cell[0], cell[1])].add(cell[2])

    def _cheapest(self, measures: tuple[str, ...], row: Row, period: str) -> tuple[int, Witness] | None:
        best: tuple[int, Witness] | None = None
        for measure, signs, months in self._candidates(measures, row, period):
            cost = self._price(measure, signs, months, best[0] if best else None)
            if cost is not None and (best is None or cost < best[0]):
                best = cost, self._witness(measure, signs, months)
                if cost == 0:
                    break  # hides nothing more: cannot be beaten
        return best

    def _protected(self, measures: tuple[str, ...], row: Row, period: str) -> bool:
        return any(row in w.rows and period in w.periods for m in measures for w in self.witnesses[m])

    def _candidates(self, measures: tuple[str, ...], row: Row,
                    period: str) -> Iterator[tuple[Measure, tuple[tuple[Leaf, int], ...], tuple[tuple[int, int], ...]]]:
        target = self.period_of[period]
        for name in measures:
            measure = self.measures[name]
            leaves = self.grid.leaves(measure)
            inside = [leaf for leaf in leaves if holds(row, leaf)]
            busy = [leaf for leaf in inside if self._count(name, leaf, target)] or inside
            outside = [leaf for leaf in leaves if not holds(row, leaf)]
            for a in busy:
                for b in [None, *outside]:
                    signs = ((a, 1),) if b is None else ((a, 1), (b, -1))
                    for months in self._month_changes(name, a, target):
                        yield measure, signs, months

    def _count(self, measure: str, leaf: Leaf, period: Period) -> int:
        return self._leaf_sums[measure][leaf][period.id]

    def _month_changes(self, measure: str, leaf: Leaf, target: Period) -> Iterator[tuple[tuple[int, int], ...]]:
        """Month changes that move the target period: one of its months (+1); or a yearly pair, +1 in month u and
        -1 in month u + gap, repeated every 12 months to the last, which every 12-month window holding both sees
        as no change (gap 1 inside a quarter leaves the quarters unchanged too; gap 3 pairs a quarter with the
        next)."""
        counts = self.counts.get(measure, {}).get(leaf, {})
        months = [m for m in target.months if self.months[0] <= m <= self.last_month]
        for month in [m for m in months if counts.get(m)] or months:
            yield ((month, 1),)
        for start, gap in self._yearly_starts(target):
            if start >= self.months[0]:
                vector = self._yearly(start, gap)
                if target.id in self._periods_moved(vector):
                    yield vector

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

    def _yearly(self, start: int, gap: int) -> tuple[tuple[int, int], ...]:
        pairs: list[tuple[int, int]] = []
        for month in range(start, self.last_month + 1, ROLLING_MONTHS):
            pairs.append((month, 1))
            if month + gap <= self.last_month:
                pairs.append((month + gap, -1))
        return tuple(pairs)

    def _periods_moved(self, months: tuple[tuple[int, int], ...]) -> frozenset[str]:
        if months not in self._moved:
            change: dict[str, int] = defaultdict(int)
            for month, sign in months:
                for key in self.by_month.get(month, ()):
                    change[key] += sign
            self._moved[months] = frozenset(k for k, v in change.items() if v)
        return self._moved[months]

    def _rows_of(self, measure: Measure, signs: tuple[tuple[Leaf, int], ...]) -> frozenset[Row]:
        key = (measure.by_team, signs)
        if key not in self._rows_moved:
            self._rows_moved[key] = frozenset(r for r in self.grid.rows(measure)
                                              if sum(s for leaf, s in signs if holds(r, leaf)))
        return self._rows_moved[key]

    def _price(self, measure: Measure, signs: tuple[tuple[Leaf, int], ...], months: tuple[tuple[int, int], ...],
               bound: int | None) -> int | None:
        """What the witness would newly hide (each cell 1 + its count); None as soon as it passes ``bound``."""
        periods = self._periods_moved(months)
        values, name, cost, weight = self.values, measure.name, 0, self._weight
        for r in self._rows_of(measure, signs):
            if r in self._repeats[measure.by_team]:
                continue  # the same cells as a row already priced
            hidden = self._hidden_periods[(name, r)]
            for p in periods:
                if p not in hidden:
                    cost += (1 + values[(name, r, p)]) * weight.get(p, 1)
            if bound is not None and cost >= bound:
                return None
        return cost

    def _witness(self, measure: Measure, signs: tuple[tuple[Leaf, int], ...],
                 months: tuple[tuple[int, int], ...]) -> Witness:
        return Witness(measure.name, signs, months, self._rows_of(measure, signs), self._periods_moved(months))


def suppress(grid: Grid, counts: Counts, derived: Iterable[Derived] = ()) -> Result:
    return Suppressor(grid, counts, derived).run()
