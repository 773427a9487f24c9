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

Because a month's decisions read only the counts closed by then, a decision is kept (``Replay``: the cells hidden
and the witnesses chosen as each month closed) and, for new counts over the same sites, teams and periods, replayed
only from the first month whose counts differ: the months before it decide as they did.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

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

    def under(self, measure: Measure, leaves: Iterable[Leaf] | None = None) -> dict[Row, list[Leaf]]:
        """Each row with the leaves it adds up (of ``leaves``, by default every leaf), in the order of the leaves."""
        out: dict[Row, list[Leaf]] = {row: [] for row in self.rows(measure)}
        for leaf in self.leaves(measure) if leaves is None else leaves:
            for row in rows_holding(leaf, measure.by_team):
                out[row].append(leaf)
        return out


def holds(row: Row, leaf: Leaf) -> bool:
    return row == ALL or (row[1] == leaf[0] and (row[0] == "site" or row[2] == leaf[1]))


def rows_holding(leaf: Leaf, by_team: bool) -> tuple[Row, ...]:
    """The rows that add up ``leaf``: all sites, its site and, for a measure counted per team, its team."""
    return (ALL, ("site", leaf[0]), ("team", *leaf)) if by_team else (ALL, ("site", leaf[0]))


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

    def __init__(self, grid: Grid, counts: Counts, derived: tuple[Derived, ...],
                 base: tuple[Cells, set[tuple[str, Leaf]]] | None = None):
        """``base``: the cells of earlier counts over the same grid and the (measure, leaf) whose counts differ
        from them; only those leaves' sums and the rows above them are worked out again."""
        self.grid, self.counts, self.derived = grid, counts, derived
        self.measures = {m.name: m for m in grid.measures}
        self.period_of = {p.id: p for p in grid.periods}
        # The months shown one by one; a month before them is known to be empty, so no witness may move it.
        self.months = sorted(p.first for p in grid.periods if p.kind == MONTH)
        self.last_month = self.months[-1] if self.months else -1
        self.leaf_sums: dict[str, dict[Leaf, dict[str, int]]] = {}
        self.values = self._values() if base is None else self._values_from(*base)
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
        self.version: dict[tuple[str, Row], int] = defaultdict(int)  # bumped as a row's cells are hidden
        self.site_version: dict[tuple[str, str], int] = defaultdict(int)  # the same, for a site's rows
        self.site_log: dict[str, list[str]] = defaultdict(list)  # each such change, by measure
        self.log: list[Cell] | None = None  # where cells newly hidden are noted (the month being closed's)

    def hide(self, cells: Iterable[Cell]) -> None:
        for cell in cells:
            if cell not in self.hidden:
                if self.log is not None:
                    self.log.append(cell)
                self.hidden.add(cell)
                self.hidden_periods[(cell[0], cell[1])].add(cell[2])
                self.version[(cell[0], cell[1])] += 1
                if cell[1] != ALL:
                    self.site_version[(cell[0], cell[1][1])] += 1
                    self.site_log[cell[0]].append(cell[1][1])

    def _values(self) -> dict[Cell, int]:
        values: dict[Cell, int] = {}
        for measure in self.grid.measures:
            per_leaf = self.counts.get(measure.name, {})
            sums = {leaf: self._period_sums(per_leaf.get(leaf, {})) for leaf in self.grid.leaves(measure)}
            self.leaf_sums[measure.name] = sums
            for row, leaves in self.grid.under(measure).items():
                for p in self.grid.periods:
                    values[(measure.name, row, p.id)] = sum(sums[leaf][p.id] for leaf in leaves)
        return values

    def _values_from(self, base: Cells, changed: set[tuple[str, Leaf]]) -> dict[Cell, int]:
        """The values of ``base`` moved by the leaves whose counts changed (integers: exactly the sums anew)."""
        values = dict(base.values)
        self.leaf_sums = {name: dict(sums) for name, sums in base.leaf_sums.items()}
        for name, leaf in changed:
            sums = self.leaf_sums.get(name)
            if sums is None or leaf not in sums:
                continue  # not a leaf of the grid: never added up
            new = self._period_sums(self.counts.get(name, {}).get(leaf, {}))
            old = sums[leaf]
            moved = {pid: n - old[pid] for pid, n in new.items() if n != old[pid]}
            for row in rows_holding(leaf, self.measures[name].by_team):
                for pid, delta in moved.items():
                    values[(name, row, pid)] += delta
            sums[leaf] = new
        return values

    def repeated_rows(self, measure: Measure, seen: Callable[[Leaf], bool]) -> frozenset[Row]:
        """Rows adding up the same leaves, among those ``seen``, as a broader row (a site's only team, the only
        site): hidden with it, and not worth anything more when a witness is priced."""
        found: set[frozenset[Leaf]] = set()
        repeats = set()
        under = self.grid.under(measure, [leaf for leaf in self.grid.leaves(measure) if seen(leaf)])
        for row, seen_leaves in under.items():  # broadest first
            leaves = frozenset(seen_leaves)
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

    def targets(self, since: int = -1) -> Iterator[tuple[tuple[str, ...], Row, str]]:
        """Every sensitive count (of a period closing in ``since`` or later) as (measures a witness may move, row,
        period): by the month its period closed, months first, teams first."""
        order = {"month": 0, "quarter": 1, "rolling": 2}
        # The rows of each measure and each derived count, in the order they are read: the same for every period.
        rows_of = [(m.name, sorted(self.grid.rows(m), key=len, reverse=True)) for m in self.grid.measures]
        derived_rows = [(d, sorted(set.intersection(*(set(self.grid.rows(self.measures[m])) for m in d.measures)),
                                   key=len, reverse=True)) for d in self.derived]
        values = self.values
        for p in sorted(self.grid.periods, key=lambda p: (p.last, order[p.kind], p.first)):
            if p.last < since:
                continue
            pid = p.id
            for name, rows in rows_of:
                for row in rows:
                    if sensitive(values[(name, row, pid)]):
                        yield (name,), row, pid
            for d, rows in derived_rows:
                for row in rows:
                    gap = values[(d.total, row, pid)] - sum(values[(m, row, pid)] for m in d.parts)
                    if sensitive(gap):
                        yield d.measures, row, pid


Signs = tuple[tuple[Leaf, int], ...]
MonthChange = tuple[tuple[int, int], ...]


class Prices:
    """What a witness would newly hide, row by row (kept until the row's hidden cells or the month being closed
    change), and the cheapest leaf to move down beside a leaf moved up."""

    def __init__(self, suppressor: Suppressor):
        self.s = suppressor
        self._site_heaps: dict[tuple[str, MonthChange, tuple[int, int] | None], tuple[list, int]] = {}
        self._leaf_index = {by_team: {leaf: i for i, leaf in enumerate(suppressor.grid.leaves(Measure("", by_team)))}
                            for by_team in (False, True)}
        self._site_leaves: dict[bool, dict[str, list[Leaf]]] = {by_team: defaultdict(list) for by_team in (False, True)}
        for by_team, index in self._leaf_index.items():
            for leaf in index:
                self._site_leaves[by_team][leaf[0]].append(leaf)
        self._row_costs: dict[tuple[str, Row, MonthChange, tuple[int, int] | None], tuple[int, int | None]] = {}

    def clear(self) -> None:
        """A month closes: prices read the month being closed."""
        self._row_costs.clear()
        self._site_heaps.clear()

    def best_downs(self, measure: Measure, row: Row, months: MonthChange, yearly: tuple[int, int] | None,
                    sites: set[str]) -> dict[tuple[str, bool], tuple[int, int, Leaf]]:
        """For each site of a leaf moved up, and whether the leaf moved down (outside the row) shares it: the
        cheapest such leaf (the price of its own rows, its place among the leaves, the leaf)."""
        out: dict[tuple[str, bool], tuple[int, int, Leaf]] = {}
        if row == ALL:
            return out  # nothing outside it
        for site in sites:
            inside_site = [b for b in self._site_leaves[measure.by_team][site] if not holds(row, b)]
            same = self.leaves_down(measure, inside_site, months, yearly, with_site=False)
            if same is not None:
                out[(site, True)] = same
            other = self.other_sites_down(measure, site, months, yearly)
            if other is not None:
                out[(site, False)] = other
        return out

    def leaves_down(self, measure: Measure, leaves: list[Leaf], months: MonthChange, yearly: tuple[int, int] | None,
                     with_site: bool) -> tuple[int, int, Leaf] | None:
        """The cheapest of these leaves (seen by now) to move down, with their site's row or without."""
        best: tuple[int, int, Leaf] | None = None
        for b in leaves:
            if not self.s._seen(b, measure.by_team):
                continue
            rows = (("site", b[0]),) if with_site else ()
            cost = self.rows_cost(measure, (*rows, *((("team", *b),) if measure.by_team else ())), months, yearly)
            if cost is not None and (best is None or cost < best[0]):
                best = cost, self._leaf_index[measure.by_team][b], b
        return best

    def other_sites_down(self, measure: Measure, excluded: str, months: MonthChange,
                          yearly: tuple[int, int] | None) -> tuple[int, int, Leaf] | None:
        """The cheapest leaf of another site to move down, with its site's row: each site's best kept in a heap
        and made anew once the site's hidden cells have changed."""
        key, log = (measure.name, months, yearly), self.s.cells.site_log[measure.name]
        if key not in self._site_heaps:
            heap = [self.site_entry(measure, site, months, yearly) for site in self.s.grid.teams]
            heapq.heapify(heap)
            self._site_heaps[key] = heap, len(log)
        heap, read = self._site_heaps[key]
        for site in dict.fromkeys(log[read:]):  # hiding lowers prices too: a changed site's entry is made anew
            heapq.heappush(heap, self.site_entry(measure, site, months, yearly))
        self._site_heaps[key] = heap, len(log)
        skipped, found = [], None
        while heap:
            entry = heap[0]
            if entry[4] != self.s.cells.site_version[(measure.name, entry[3])]:
                heapq.heappop(heap)  # outdated: its site's new entry is in the heap
            elif entry[3] == excluded:
                skipped.append(heapq.heappop(heap))
            else:
                found = None if entry[0] else (entry[1], entry[2], entry[5])
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return found

    def site_entry(self, measure: Measure, site: str, months: MonthChange,
                    yearly: tuple[int, int] | None) -> tuple[int, int, int, str, int, Leaf | None]:
        """(1 when no leaf of the site can move down, price, place, site, the site's version, leaf)."""
        version = self.s.cells.site_version[(measure.name, site)]
        best = self.leaves_down(measure, self._site_leaves[measure.by_team][site], months, yearly, with_site=True)
        return (1, 0, 0, site, version, None) if best is None else (0, best[0], best[1], site, version, best[2])

    def rows_cost(self, measure: Measure, rows: Iterable[Row], months: MonthChange,
                   yearly: tuple[int, int] | None) -> int | None:
        """What a witness moving these rows would newly hide; None when it would hide a number shown before."""
        cost = 0
        for r in rows:
            one = self.row_cost(measure, r, months, yearly)
            if one is None:
                return None
            cost += one
        return cost

    def row_cost(self, measure: Measure, r: Row, months: MonthChange, yearly: tuple[int, int] | None) -> int | None:
        """What the witness would newly hide in row ``r`` (each cell 1 + its count), now and, estimated from the
        month being closed, as later months close; None when it would hide a number shown before this month
        closed. Only counts closed by now are read, so the choice is the one made when the month closed, whatever
        came after. Kept until the row's hidden cells change or the month does."""
        name = measure.name
        key, version = (name, r, months, yearly), self.s.cells.version[(name, r)]
        kept = self._row_costs.get(key)
        if kept is not None and kept[0] == version:
            return kept[1]
        cost: int | None = 0
        if r not in self.s._repeats[measure.by_team]:  # else the same cells as a row already priced (hidden together)
            cost = self.new_cost(name, r, months, yearly)
        self._row_costs[key] = version, cost
        return cost

    def new_cost(self, name: str, r: Row, months: MonthChange, yearly: tuple[int, int] | None) -> int | None:
        cells, cost, hidden = self.s.cells, 0, self.s.cells.hidden_periods[(name, r)]
        for p in self.s._moved_now(months):
            if p in hidden:
                continue
            if self.s.last_of[p] < self.s.closed_to:
                return None  # shown in an earlier month's report: stays shown
            cost += 1 + cells.values[(name, r, p)]
        return cost + self.later(name, r, months, yearly)

    def later(self, name: str, row: Row, months: MonthChange, yearly: tuple[int, int] | None) -> int:
        """What the witness will hide in the row as the next 12 months close, each cell priced as if every month
        counted what this one did (nothing for a cell that small: it would be hidden anyway)."""
        k = self.s.closed_to
        per_month = self.s.cells.values.get((name, row, self.s._month_id), 0)

        def cell(months_in_it: int) -> int:
            value = per_month * months_in_it
            return 0 if value < THRESHOLD else 1 + value

        if yearly is not None:  # balanced in every 12-month window: a month, and with gap 3 a quarter, each year
            return 2 * cell(1) + (2 * cell(QUARTER_MONTHS) if yearly[1] == QUARTER_MONTHS else 0)
        t = months[0][0]
        windows = max(0, t + ROLLING_MONTHS - 1 - k)
        quarter = 1 if quarter_period(t).last > k else 0
        return windows * cell(ROLLING_MONTHS) + quarter * cell(QUARTER_MONTHS)


class Suppressor:
    """Decides what is hidden for one set of monthly counts over every period of the grid, month by month."""

    def __init__(self, grid: Grid, counts: Counts, derived: Iterable[Derived] = (), resume: Replay | None = None):
        """``resume``: the replay of earlier counts; kept up to the first month these differ in when the sites,
        teams and periods are the same."""
        self.grid = grid
        derived = tuple(derived)
        plain = _plain(counts)
        self.resume, self.start = None, -1
        if resume is not None and resume.grid == grid and resume.derived == derived:
            changed, first = _changed(resume.counts, plain)
            self.cells = Cells(grid, counts, derived, (resume.cells, changed))
            months = self.cells.months
            if months:
                # counts the same: the last month is decided again, which sets every witness as the last run did
                self.resume, self.start = resume, min(months[-1] if first is None else first, months[-1])
        else:
            self.cells = Cells(grid, counts, derived)
        self.plain = plain
        self.hidden_in: dict[int, list[Cell]] = {}  # the cells the replay hid as each month closed
        self.chosen: list[tuple[int, Witness]] = []  # each witness as it was chosen, and when
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
        self.prices = Prices(self)

    def run(self) -> Result:
        cells = self.cells
        cells.hide(cell for cell, value in cells.values.items() if sensitive(value))
        if self.resume is not None:
            self._restore(self.resume)
        by_close: dict[int, list[tuple[tuple[str, ...], Row, str]]] = defaultdict(list)
        for target in cells.targets(self.start):
            by_close[self.last_of[target[2]]].append(target)
        for month in cells.months:
            if month < self.start:
                continue
            cells.log = self.hidden_in[month] = []
            self.closed_to, self._month_id = month, f"{MONTH}:{month_key(month)}"
            kinds = {m.by_team: m for m in self.grid.measures}  # the rows and leaves differ by this alone
            self._repeats = {by_team: cells.repeated_rows(m, lambda leaf, by_team=by_team: self._seen(leaf, by_team))
                             for by_team, m in kinds.items()}
            self.prices.clear()
            self._carry(month)
            for measures, row, period in by_close.get(month, []):
                if self._protected(measures, row, period):
                    continue
                best = self._cheapest(measures, row, period)
                if best is None:  # nothing can move it (no leaf under the row): hide the row's cells outright
                    cells.hide((m, row, period) for m in measures)
                    continue
                witness = best[1]
                self.chosen.append((month, replace(witness)))
                self._add(witness)
                cells.hide((witness.measure, r, p) for r in witness.rows for p in witness.periods)
        cells.log = None
        return Result(cells.values, cells.hidden, [w for ws in self.witnesses.values() for w in ws])

    def replay(self) -> Replay:
        """What this run decided, month by month, to resume from (after ``run``)."""
        return Replay(self.grid, self.cells.derived, self.plain, self.cells, self.hidden_in, self.chosen)

    def _add(self, witness: Witness) -> None:
        self.witnesses[witness.measure].append(witness)
        for r in witness.rows:
            self._covering[(witness.measure, r)].append(witness)

    def _restore(self, resume: Replay) -> None:
        """The months before ``start`` as the earlier replay closed them: their counts are these counts, so it
        hid the same cells and chose the same witnesses. Each witness is taken as chosen: the next month's carry
        moves it on (a yearly pair to its next month) and hides what it moves, as the earlier replay did."""
        for month, hidden in sorted(resume.hidden_in.items()):
            if month < self.start:
                self.cells.hide(hidden)
                self.hidden_in[month] = hidden
        for month, witness in resume.chosen:
            if month < self.start:
                self.chosen.append((month, witness))
                self._add(replace(witness))

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
        """The cheapest witness, the first in the order of ``_candidates`` among equals. A witness's price is a sum
        over the rows it moves, and with a leaf moved down (``b``) those are a's rows and b's rows apart from the
        ones they share, so the best b is found once per month change, not once per moved-up leaf."""
        best: tuple[tuple[int, ...], Witness] | None = None
        target = self.cells.period_of[period]
        for n, (measure, busy) in enumerate(self._candidates(measures, row, period)):
            sites = {a[0] for a in busy}
            found: dict[tuple[MonthChange, tuple[int, int] | None], dict] = {}
            for i, a in enumerate(busy):
                for j, (months, yearly) in enumerate(self._month_changes(measure.name, a, target)):
                    if (months, yearly) not in found:
                        found[(months, yearly)] = self.prices.best_downs(measure, row, months, yearly, sites)
                    for key, signs in self._ups(measure, a, months, yearly, found[(months, yearly)]):
                        rank = (key[0], n, i, key[1], j)
                        if best is None or rank < best[0]:
                            best = rank, Witness(measure.name, signs, months, self._rows_of(measure, signs),
                                                 self._moved_now(months), yearly)
        return None if best is None else (best[0][0], best[1])

    def _ups(self, measure: Measure, a: Leaf, months: MonthChange, yearly: tuple[int, int] | None,
             downs: dict[tuple[str, bool], tuple[int, int, Leaf]]) -> Iterator[tuple[tuple[int, int], Signs]]:
        """Each way to move leaf ``a`` up with its price and place (0 alone, else 1 + the place of the leaf moved
        down): alone, or with the best leaf of its site, or of another site, moved down."""
        team = (("team", *a),) if measure.by_team else ()
        alone = self.prices.rows_cost(measure, (ALL, ("site", a[0]), *team), months, yearly)
        if alone is not None:
            yield (alone, 0), ((a, 1),)
        for same, rows in ((True, team), (False, (("site", a[0]), *team))):
            down = downs.get((a[0], same))
            own = self.prices.rows_cost(measure, rows, months, yearly) if down is not None else None
            if down is not None and own is not None:
                yield (own + down[0], 1 + down[1]), ((a, 1), (down[2], -1))

    def _protected(self, measures: tuple[str, ...], row: Row, period: str) -> bool:
        return any(period in w.periods for m in measures for w in self._covering[(m, row)])

    def _candidates(self, measures: tuple[str, ...], row: Row, period: str) -> Iterator[tuple[Measure, list[Leaf]]]:
        """Per measure: the leaves under the row one may move up (with, where it pays, one outside it moved down:
        a leaf with nothing counted yet had no row in the report then, so it cannot have been hidden)."""
        cells = self.cells
        for name in measures:
            measure = cells.measures[name]
            leaves = self.grid.leaves(measure)
            inside = [leaf for leaf in leaves if holds(row, leaf) and self._seen(leaf, measure.by_team)]
            busy = [leaf for leaf in inside if cells.leaf_sums[name][leaf][period]] or inside
            yield measure, busy

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
            change: dict[Row, int] = defaultdict(int)
            for leaf, sign in signs:
                for row in rows_holding(leaf, measure.by_team):
                    change[row] += sign
            self._rows_moved[key] = frozenset(r for r, n in change.items() if n)
        return self._rows_moved[key]


@dataclass(frozen=True)
class Replay:
    """A decision as it was made month by month: its grid and counts (zeros left out), its cells' values, the cells
    hidden as each month closed and the witnesses as chosen (never changed after: a run works on copies)."""

    grid: Grid
    derived: tuple[Derived, ...]
    counts: dict[str, dict[Leaf, dict[int, int]]]
    cells: Cells
    hidden_in: dict[int, list[Cell]]
    chosen: list[tuple[int, Witness]]


def _plain(counts: Counts) -> dict[str, dict[Leaf, dict[int, int]]]:
    return {name: {leaf: {m: n for m, n in by_month.items() if n} for leaf, by_month in per_leaf.items()}
            for name, per_leaf in counts.items()}


def _changed(old: dict[str, dict[Leaf, dict[int, int]]],
             new: dict[str, dict[Leaf, dict[int, int]]]) -> tuple[set[tuple[str, Leaf]], int | None]:
    """The (measure, leaf) whose counts differ, and the first month any does (None: the same counts)."""
    changed: set[tuple[str, Leaf]] = set()
    first: int | None = None
    for name in old.keys() | new.keys():
        before, after = old.get(name, {}), new.get(name, {})
        for leaf in before.keys() | after.keys():
            a, b = before.get(leaf, {}), after.get(leaf, {})
            if a != b:
                changed.add((name, leaf))
                month = min(m for m in a.keys() | b.keys() if a.get(m) != b.get(m))
                first = month if first is None else min(first, month)
    return changed, first


def suppress(grid: Grid, counts: Counts, derived: Iterable[Derived] = ()) -> Result:
    return Suppressor(grid, counts, derived).run()


def suppress_from(grid: Grid, counts: Counts, derived: Iterable[Derived], resume: Replay | None
                  ) -> tuple[Result, Replay]:
    """``suppress``, resumed from an earlier replay where it can be (the same result), and this run's replay."""
    suppressor = Suppressor(grid, counts, derived, resume)
    return suppressor.run(), suppressor.replay()
