"""Alerts that reach someone: open referrals no team or coverage was found for and that nobody has taken yet
(unrouted: ``unrouted_untaken``) and urgent referrals not contacted by their due time (the queue's ``overdue``
condition), counted per EHR and route.

Three places say it, each from one grouped SQL count over the open referrals (``IS_OPEN_STORED``: the partial
index of the open referrals, ``ix_referral_open_route``, holds every column these counts read, so they scan it
instead of the table; docs/decisions/0012-queue-at-volume.md):

- the queue page (``queue_banners``): every social worker and program manager of the EHR sees how many urgent
  referrals of *their EHR* are overdue, how many of them are in their own queue (a link to that filtered view) and
  which teams hold the others; never a count from another EHR;
- ``/readyz``: the ``referral_alerts`` check reports the counts per EHR and route and makes the status
  ``degraded``, with 200 even under tuning.readyz_strict (docs/decisions/0007-readyz-degraded-alerts.md);
- ``/metrics``: the gauge ``ipv_referrals_open{ehr, route_kind, route_team, state}``, read at scrape time.

No PHI: the labels and the readiness detail are EHR ids and team ids as the deployment file names them, route
kinds and counts. A value the deployment file does not name (an ``iss`` tied to no EHR, a team since removed)
reads as ``other``, so the label values are bounded by the deployment file, whatever the database holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import ColumnElement, Select, String, and_, func, literal, select, union_all
from sqlalchemy.orm import Session

from config.current import settings_of
from config.ehrs import ehrs_of
from smart_app.ops.health import check
from smart_app.ops.i18n import gettext as _
from smart_app.ops.observability import add_scrape_collector
from smart_app.store.models import ReferralRecord
from smart_app.worklist.queue import IS_CLOSED, IS_OPEN_STORED, IS_URGENT, Clock, clock_now, overdue
from smart_app.worklist.routing import COVERAGE, FALLBACK, ROUTE_KINDS, UNROUTED, Routing, routing_of
from smart_app.worklist.scope import Scope, of_ehr, scoped_query, unrouted_query, unrouted_untaken

OTHER = "other"  # a value the deployment file does not name
NONE = "none"    # no value stored (no team; a referral made before routing)
STATES = ("open", "unrouted", "overdue_urgent")
GAUGE = "ipv_referrals_open"


# -- the counts -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteCount:
    """Open referrals of one EHR and route (label values, see ``Labels``): all, unrouted and taken by nobody,
    overdue urgent."""

    ehr: str
    route_kind: str
    route_team: str
    open: int
    unrouted: int
    overdue_urgent: int

    def value(self, state: str) -> int:
        return {"open": self.open, "unrouted": self.unrouted, "overdue_urgent": self.overdue_urgent}[state]


@dataclass(frozen=True)
class Labels:
    """The label values the deployment file allows: its EHR ids and team ids (anything else reads as ``other``)."""

    ehrs: tuple[str, ...]
    routing: Routing

    @classmethod
    def of(cls, app: Flask) -> Labels:
        settings = settings_of(app)
        # Without an ehrs block each allow-listed iss is its own EHR.
        ehrs = [e.id for e in ehrs_of(settings)]
        return cls(ehrs=tuple(dict.fromkeys(ehrs)), routing=routing_of(settings))

    def ehr(self, value: str | None) -> str:
        return NONE if value is None else value if value in self.ehrs else OTHER

    def kind(self, value: str | None) -> str:
        return value if value in ROUTE_KINDS else NONE

    def team(self, value: str | None) -> str:
        return NONE if value is None else value if value in {t.id for t in self.routing.teams} else OTHER

    def baseline(self) -> list[tuple[str, str, str]]:
        """The routes every configured EHR has, reported at 0 when nothing is open on them (so an alert on a
        series resolves to 0 rather than vanishing): its unrouted queue and the teams serving it."""
        out = []
        for ehr in self.ehrs:
            out.append((ehr, UNROUTED, NONE))
            out += [(ehr, FALLBACK if t.fallback else COVERAGE, t.id) for t in self.routing.teams if t.serves(ehr)]
        return out


def overdue_urgent(clock: Clock) -> ColumnElement[bool]:
    """Urgent and past the time it should have been contacted by: the queue's own ``overdue``."""
    return and_(IS_URGENT, overdue(clock))


def route_counts(db: Session, clock: Clock, labels: Labels) -> list[RouteCount]:
    """Open referrals per EHR and route, with the unrouted and the overdue urgent among them: one grouped query."""
    rows = db.execute(select(ReferralRecord.ehr, ReferralRecord.route_kind, ReferralRecord.route_team,
                             func.count(), func.count().filter(unrouted_untaken()),
                             func.count().filter(overdue_urgent(clock)))
                      .where(IS_OPEN_STORED)
                      .group_by(ReferralRecord.ehr, ReferralRecord.route_kind, ReferralRecord.route_team)).all()
    merged: dict[tuple[str, str, str], list[int]] = {key: [0, 0, 0] for key in labels.baseline()}
    for ehr, kind, team, *counts in rows:
        tally = merged.setdefault((labels.ehr(ehr), labels.kind(kind), labels.team(team)), [0, 0, 0])
        for i, n in enumerate(counts):
            tally[i] += int(n)
    return [RouteCount(ehr=ehr, route_kind=kind, route_team=team, open=n, unrouted=untaken, overdue_urgent=late)
            for (ehr, kind, team), (n, untaken, late) in sorted(merged.items())]


def _counts_of(app: Flask) -> list[RouteCount]:
    with app.extensions["db_sessionmaker"]() as db:
        return route_counts(db, clock_now(settings_of(app)), Labels.of(app))


# -- /readyz ----------------------------------------------------------------------------------------------------
@check("referral_alerts", critical=False, strict=False)
def _readiness(app: Flask) -> tuple[bool, Any]:
    """Degraded while a referral is unrouted or an urgent one is overdue: counts per EHR and route, no PHI."""
    counts = _counts_of(app)
    alerting = [c for c in counts if c.unrouted or c.overdue_urgent]
    detail = {"unrouted": sum(c.unrouted for c in counts), "overdue_urgent": sum(c.overdue_urgent for c in counts),
              "routes": [{"ehr": c.ehr, "route_kind": c.route_kind, "route_team": c.route_team,
                          "unrouted": c.unrouted, "overdue_urgent": c.overdue_urgent} for c in alerting]}
    return not alerting, detail


# -- /metrics ---------------------------------------------------------------------------------------------------
class ReferralRouteCollector:
    """``ipv_referrals_open``: open referrals per EHR, route and state, read from the database per scrape."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = _counts_of(self.app)
        except Exception:  # database down: /readyz says so; metrics stay scrapeable (alert on absent())
            return
        gauge = GaugeMetricFamily(GAUGE, "Open referrals per EHR and route; state: open (all), unrouted (no team "
                                  "or coverage, nobody has taken it), overdue_urgent (urgent, not contacted in time)",
                                  labels=["ehr", "route_kind", "route_team", "state"])
        for c in counts:
            for state in STATES:
                gauge.add_metric([c.ehr, c.route_kind, c.route_team, state], c.value(state))
        yield gauge


# -- the queue page ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OverdueNotice:
    """Overdue urgent referrals of the user's EHR: ``mine`` in the user's queue, the rest by who holds them."""

    total: int
    mine: int
    elsewhere: list[tuple[str, int]] = field(default_factory=list)


def _holder(kind: str | None, team: str | None, routing: Routing) -> str:
    """Who holds a route's referrals, as the queue names them (team names come from the deployment file)."""
    named = next((t.name for t in routing.teams if t.id == team), None) if team else None
    if named:
        return named
    if kind == UNROUTED:
        return _("the unrouted queue")
    if team:
        return _("a team no longer in this app's settings")
    return _("the social workers who cover the site")


@dataclass(frozen=True)
class QueueBanners:
    """What the queue page says above its referrals: the overdue urgent referrals of the user's EHR, and its open
    unrouted referrals (``unrouted``) and those of them nobody has taken yet (``untaken``)."""

    overdue: OverdueNotice
    unrouted: int
    untaken: int


OVERDUE, UNROUTED_OPEN = "overdue", "unrouted"  # the banners statement's row kinds


def queue_banners(db: Session, scope: Scope, clock: Clock, deployment: Any,
                  keysets: list[str] | None = None) -> QueueBanners:
    """The overdue notice and the unrouted count in one statement, never from another EHR: a
    ``UNION ALL`` of the two grouped reads, each planned as on its own (one round trip fewer per page)."""
    unrouted = (unrouted_query(scope).where(~IS_CLOSED)
                .with_only_columns(literal(UNROUTED_OPEN), literal(None, String), literal(None, String), func.count(),
                                   func.count().filter(ReferralRecord.assignee.is_(None))))
    rows = db.execute(union_all(_overdue_query(scope, clock, keysets), unrouted)).all()
    every, untaken = next(((int(n or 0), int(m or 0)) for kind, _k, _t, n, m in rows if kind == UNROUTED_OPEN), (0, 0))
    return QueueBanners(overdue=_notice([r[1:] for r in rows if r[0] == OVERDUE], deployment), unrouted=every,
                        untaken=untaken)


def _overdue_query(scope: Scope, clock: Clock, keysets: list[str] | None) -> Select[Any]:
    """The overdue urgent referrals of the user's EHR, never another's, per route. ``keysets``: the user's covered
    site key sets (PostgreSQL, ``scope.keysets_of``): "in your queue" is then a test on the row."""
    # Read on the overdue urgent only (ix_referral_open_urgent): without key sets, one probe of the site keys each.
    mine: ColumnElement[bool] = scoped_query(scope, per_row=keysets is None, keysets=keysets).whereclause
    return (select(literal(OVERDUE), ReferralRecord.route_kind, ReferralRecord.route_team, func.count(),
                   func.count().filter(mine))
            .where(of_ehr(scope), IS_OPEN_STORED, overdue_urgent(clock))
            .group_by(ReferralRecord.route_kind, ReferralRecord.route_team))


def _notice(rows: list[Any], deployment: Any) -> OverdueNotice:
    """The notice from the overdue rows (route kind, team, overdue, of them in the user's queue)."""
    routing = routing_of(deployment)
    elsewhere: dict[str, int] = {}
    for kind, team, n, in_scope in rows:
        if n - in_scope:
            holder = _holder(kind, team, routing)
            elsewhere[holder] = elsewhere.get(holder, 0) + int(n - in_scope)
    return OverdueNotice(total=sum(int(r[2]) for r in rows), mine=sum(int(r[3]) for r in rows),
                         elsewhere=sorted(elsewhere.items()))


def init_app(app: Flask) -> None:
    add_scrape_collector(app, ReferralRouteCollector(app))
