"""The program report: per site and month, counts from the de-identified event table, with small
cells suppressed so no one can be singled out.

Suppression (the CMS cell-size suppression policy: no cell under 11, CMS "Cell Size Suppression
Policy", ResDAC; the same threshold as the HHS/CMS data use agreements):
- primary: a count from 1 to 10 is not shown;
- complementary: a suppressed cell must not be recoverable from a total. In every additive group
  (the sites of a month sum to "All sites"; a site's instruments, and its languages, sum to the site's
  row), if exactly one cell of the group (total included) is hidden, the smallest other non-zero cell
  of the group is hidden too. Groups share cells, so this repeats until nothing changes.
A hidden cell looks the same whatever the reason ("suppressed"), so a reader cannot tell a primary
cell (1-10) from a complementary one (any size). Zero is shown: it identifies no one.

Cards have no instrument or language, so they appear only in the site rows.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from smart_app.store.models import ReportEvent

THRESHOLD = 11
ALL = "All sites"
MEASURES: tuple[tuple[str, str], ...] = (
    ("offered", "Screens offered"), ("completed", "Completed"), ("declined", "Declined"),
    ("positive", "Positive"), ("urgent", "Urgent"), ("referral", "Referrals made"),
    ("contacted_24h", "Contacted within 24 h"), ("contacted_72h", "Contacted within 72 h"),
    ("handoff_offered", "Call to an advocate offered"), ("handoff_completed", "Spoke with an advocate at the visit"),
    ("card_shown", "Check-in cards shown"), ("card_accepted", "Cards accepted"),
)
JOURNEY = tuple(k for k, _ in MEASURES if not k.startswith("card_"))
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
INSTRUMENT_NAMES = {"hits": "HITS", "hark": "HARK", "pvs": "PVS", "wast-short": "WAST short", "e-hits": "E-HITS",
                    "": "(not recorded)"}
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "pt": "Portuguese", "": "(not recorded)"}


@dataclass
class Row:
    """One line of a table: label, raw counts (kept server-side) and what may be shown."""

    site: str
    by: str  # site | instrument | language
    value: str
    counts: dict[str, int]
    hidden: set[str] = field(default_factory=set)

    def shown(self, measure: str) -> int | None:
        return None if measure in self.hidden else self.counts.get(measure, 0)

    @property
    def label(self) -> str:
        if self.by == "instrument":
            return INSTRUMENT_NAMES.get(self.value, self.value)
        if self.by == "language":
            return LANGUAGE_NAMES.get(self.value, self.value)
        return self.value


@dataclass
class Report:
    month: str
    sites: list[Row]  # each site, then "All sites"
    breakdown: dict[str, dict[str, list[Row]]]  # site -> {"instrument": rows, "language": rows}

    def rows(self) -> list[Row]:
        out = list(self.sites)
        for site in sorted(self.breakdown):
            out += self.breakdown[site]["instrument"] + self.breakdown[site]["language"]
        return out


def raw_counts(db: Session, month: str) -> dict[tuple[str, str, str, str], int]:
    """{(site, kind, instrument, language): n} for the month."""
    q = (select(ReportEvent.site, ReportEvent.kind, ReportEvent.instrument, ReportEvent.language, func.count())
         .where(ReportEvent.month == month)
         .group_by(ReportEvent.site, ReportEvent.kind, ReportEvent.instrument, ReportEvent.language))
    return {(s, k, i, lang): n for s, k, i, lang, n in db.execute(q)}


def build(counts: dict[tuple[str, str, str, str], int], month: str) -> Report:
    per_site: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    per: dict[str, dict[tuple[str, str], dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for (site, kind, inst, lang), n in counts.items():
        per_site[site][kind] += n
        if kind in JOURNEY:
            per[site][("instrument", inst)][kind] += n
            per[site][("language", lang)][kind] += n
    sites = [Row(s, "site", s, dict(per_site[s])) for s in sorted(per_site)]
    total: dict[str, int] = defaultdict(int)
    for row in sites:
        for k, n in row.counts.items():
            total[k] += n
    sites.append(Row(ALL, "site", ALL, dict(total)))
    breakdown = {}
    for s in sorted(per):
        groups: dict[str, list[Row]] = {"instrument": [], "language": []}
        for (by, value), c in sorted(per[s].items()):
            groups[by].append(Row(s, by, value, dict(c)))
        breakdown[s] = groups
    report = Report(month, sites, breakdown)
    suppress(report)
    return report


def _groups(report: Report) -> list[tuple[list[Row], Row, tuple[str, ...]]]:
    """(member rows, total row, measures) for every additive relation shown."""
    site_rows = {r.site: r for r in report.sites if r.site != ALL}
    groups = [(list(site_rows.values()), report.sites[-1], tuple(k for k, _ in MEASURES))]
    for site, by in report.breakdown.items():
        for key in ("instrument", "language"):
            if by[key]:
                groups.append((by[key], site_rows[site], JOURNEY))
    return groups


def suppress(report: Report) -> None:
    """Primary then complementary suppression, in place (see the module docstring)."""
    for row in report.rows():
        row.hidden = {k for k, _ in MEASURES if 0 < row.counts.get(k, 0) < THRESHOLD}
    groups = _groups(report)
    changed = True
    while changed:
        changed = False
        for members, total, measures in groups:
            for m in measures:
                cells = members + [total]
                hidden = [r for r in cells if m in r.hidden]
                if len(hidden) != 1:
                    continue
                candidates = [r for r in cells if m not in r.hidden and r.counts.get(m, 0) > 0]
                if not candidates:
                    continue  # every other cell is a shown zero: the hidden one equals the total, also hidden
                min(candidates, key=lambda r: (r.counts.get(m, 0), r is total, r.value)).hidden.add(m)
                changed = True


# ---------------------------------------------------------------------------- output


def csv_text(report: Report) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["month", "site", "breakdown", "group", *[k for k, _ in MEASURES]])
    for row in report.rows():
        measures = [k for k, _ in MEASURES]
        values = []
        for k in measures:
            if row.by != "site" and k not in JOURNEY:
                values.append("")
            else:
                v = row.shown(k)
                values.append("suppressed" if v is None else str(v))
        w.writerow([report.month, row.site, row.by, row.value if row.by != "site" else "", *values])
    return out.getvalue()


def valid_month(value: str | None) -> bool:
    return bool(value and MONTH.match(value))


def chart_svg(report: Report, measures: tuple[str, ...] = ("offered", "completed", "positive", "referral",
                                                          "contacted_72h")) -> dict[str, Any]:
    """Bar chart data for the template: per site, one bar per measure; hidden cells drawn as a hatched stub."""
    rows = [r for r in report.sites if r.site != ALL]
    peak = max([r.counts.get(m, 0) for r in rows for m in measures if m not in r.hidden] + [THRESHOLD])
    bar_w, gap, group_gap, height, top = 18, 4, 28, 180, 20
    groups = []
    x = 60
    for r in rows:
        bars = []
        for i, m in enumerate(measures):
            v = r.shown(m)
            h = 0 if v is None else round(height * v / peak)
            bars.append({"x": x + i * (bar_w + gap), "y": top + height - (h if v is not None else 12),
                         "h": h if v is not None else 12, "w": bar_w, "measure": m, "value": v, "series": i})
        groups.append({"label": r.label, "x": x, "width": len(measures) * (bar_w + gap), "bars": bars})
        x += len(measures) * (bar_w + gap) + group_gap
    ticks = [{"value": round(peak * t / 4), "y": top + height - round(height * t / 4)} for t in range(5)]
    labels = dict(MEASURES)
    return {"width": max(x + 20, 320), "height": top + height + 60, "base": top + height, "groups": groups,
            "ticks": ticks, "legend": [{"series": i, "label": labels[m]} for i, m in enumerate(measures)],
            "measures": measures}
